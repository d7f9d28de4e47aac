"""Summit ops platform: the domain core (plain Python, no Dagster imports)."""

__version__ = "0.1.0"
