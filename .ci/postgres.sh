#!/usr/bin/env bash
# Install (if needed) and start a local PostgreSQL for the control-store tests, and create
# the `ops` test role. Idempotent; needs root (CI and the dev container run as root).
set -euo pipefail
if ! command -v pg_ctlcluster >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq postgresql >/dev/null
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
