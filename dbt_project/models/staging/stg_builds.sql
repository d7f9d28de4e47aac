select build_id, service, version, commit_sha, created_at
from {{ source('raw', 'builds') }}
