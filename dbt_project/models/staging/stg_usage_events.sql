-- CloudEvents, one row per (source, id): each raw partition is deduplicated on its own, and
-- an event re-sent in a later partition (kept there, late) counts as first delivered.
select
    source || '|' || id as event_key,
    id as event_id, source as event_source, type as event_type,
    event_time, subject as tenant_id, meter, quantity,
    partition_key
from {{ source('raw', 'usage_events') }}
-- The same order as FinOps (finops/usage.py): arrival day, then the event's UTC day and content.
qualify row_number() over (
    partition by source, id
    order by regexp_extract(_source_file, 'dt=([0-9]+-[0-9]+-[0-9]+)', 1), cast(timezone('UTC', event_time) as date),
             subject, meter, quantity) = 1
