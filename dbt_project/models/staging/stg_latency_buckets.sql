-- Cumulative Prometheus buckets; le = +Inf is kept as 'Infinity'.
select ts, service, cohort, build_id, le, "count" as cumulative_count, partition_key
from {{ source('raw', 'latency_buckets') }}
