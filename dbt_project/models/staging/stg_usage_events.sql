-- CloudEvents, one row per (source, id): each raw partition is deduplicated on its own, and
-- an event re-sent in a later partition (kept there, late) counts as first delivered.
select
    source || '|' || id as event_key,
    id as event_id, source as event_source, type as event_type,
    event_time, subject as tenant_id, meter, quantity,
    partition_key
from {{ source('raw', 'usage_events') }}
qualify row_number() over (partition by source, id order by _source_file, _source_row) = 1
