select tier, meter, unit, cast(unit_price as decimal(18, 9)) as unit_price, currency
from {{ source('raw', 'price_list') }}
