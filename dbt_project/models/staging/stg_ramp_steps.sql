select
    build_id || '#' || cast(step as varchar) as ramp_step_id,
    build_id, service, step, percent, started_at, ended_at,
    canary_fraction, early_fraction, general_fraction,
    partition_key
from {{ source('raw', 'ramp_steps') }}
