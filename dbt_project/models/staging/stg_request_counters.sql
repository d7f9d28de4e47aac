select
    ts, service, cohort, build_id, requests, errors,
    case when requests > 0 then errors::double / requests end as error_ratio,
    partition_key
from {{ source('raw', 'request_counters') }}
