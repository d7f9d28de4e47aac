#!/usr/bin/env bash
# Install (if needed) PostgreSQL and Prometheus from Debian's packages, start PostgreSQL for
# the control-store tests and create the `ops` test role (the Prometheus tests start their
# own server). Idempotent; needs root (CI and the dev container run as root).
set -euo pipefail
need=()
command -v pg_ctlcluster >/dev/null 2>&1 || need+=(postgresql)
command -v promtool >/dev/null 2>&1 || need+=(prometheus)  # promtool checks the exported SLO rules
if [ ${#need[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need[@]}" >/dev/null
fi
ver=$(ls /usr/lib/postgresql | sort -V | tail -1)
if ! pg_lsclusters -h | grep -q "^$ver main"; then
  pg_createcluster "$ver" main >/dev/null
fi
pg_ctlcluster "$ver" main start 2>/dev/null || true
for _ in $(seq 1 30); do
  pg_isready -q -h 127.0.0.1 -p 5432 && break
  sleep 1
done
su postgres -c "psql -q -v ON_ERROR_STOP=1" <<'SQL'
DO $$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'ops') THEN
    CREATE ROLE ops LOGIN SUPERUSER PASSWORD 'ops';
  END IF;
END $$;
SQL
echo "postgres $ver ready on 127.0.0.1:5432 (role ops)"
