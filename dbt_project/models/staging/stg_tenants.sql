select tenant_id, name as tenant_name, tier, cohort, region, signup_date
from {{ source('raw', 'tenants') }}
