"""Service level objectives: specs, SLI sources, burn rates and budgets."""
