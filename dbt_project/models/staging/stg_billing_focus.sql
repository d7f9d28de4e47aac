-- FOCUS 1.2 rows, one per line item (a line re-delivered in a later file date counts as last
-- delivered: providers' month-to-date exports restate earlier days; FinOps does the same); Tags is a JSON object (an empty field is no tags), tenant and service tags
-- pulled out for attribution.
with latest_delivery as (
    select *, nullif(regexp_replace(Tags, '^\s+|\s+$', '', 'g'), '') as tags_json
    from {{ source('raw', 'billing_focus') }}
    qualify row_number() over (partition by x_LineItemId order by partition_key desc, _source_file, _source_row) = 1
)
select
    x_LineItemId as line_item_id,
    ChargePeriodStart as charge_period_start,
    ChargePeriodEnd as charge_period_end,
    BillingPeriodStart as billing_period_start,
    BillingPeriodEnd as billing_period_end,
    ChargeCategory as charge_category,
    ServiceCategory as service_category,
    ServiceName as service_name,
    ResourceId as resource_id,
    BillingCurrency as billing_currency,
    BilledCost as billed_cost,
    EffectiveCost as effective_cost,
    ListCost as list_cost,
    ContractedCost as contracted_cost,
    PricingQuantity as pricing_quantity,
    PricingUnit as pricing_unit,
    tags_json as tags,
    json_extract_string(tags_json, '$.tenant') as tag_tenant,
    json_extract_string(tags_json, '$.service') as tag_service,
    json_extract_string(tags_json, '$.pool') as tag_pool,
    partition_key
from latest_delivery
