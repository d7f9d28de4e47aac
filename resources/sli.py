"""Where the SLO assets read request counters and latency histograms from."""

import dagster as dg

from ops_platform.slo.prometheus import PrometheusSLISource


class SLISourceResource(dg.ConfigurableResource):
    """The warehouse's raw tables by default; a Prometheus HTTP API when `prometheus_url` is set."""

    prometheus_url: str | None = None

    def prometheus(self) -> PrometheusSLISource | None:
        return PrometheusSLISource(self.prometheus_url) if self.prometheus_url else None
