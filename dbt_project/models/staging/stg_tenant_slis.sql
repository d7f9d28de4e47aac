select
    hour, tenant_id, requests, errors, latency_p95_ms,
    case when requests > 0 then errors::double / requests end as error_ratio,
    partition_key
from {{ source('raw', 'tenant_slis') }}
