-- CloudEvents already deduplicated on (source, id) by the raw asset.
select
    source || '|' || id as event_key,
    id as event_id, source as event_source, type as event_type,
    event_time, subject as tenant_id, meter, quantity,
    partition_key
from {{ source('raw', 'usage_events') }}
