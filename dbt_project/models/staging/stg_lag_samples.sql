select sample_id, ts, pipeline, lag_seconds, partition_key
from {{ source('raw', 'lag_samples') }}
