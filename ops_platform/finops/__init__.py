"""FinOps: usage from metering, per-tenant cost attribution reconciled to the bill, scores."""
