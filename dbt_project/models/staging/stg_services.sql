select service, meter, unit, median_latency_s
from {{ source('raw', 'services') }}
