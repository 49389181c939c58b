"""Prometheus metrics of one daemon, in a registry of its own (tests may run several daemons)."""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest


class Metrics:
    def __init__(self):
        self.registry = CollectorRegistry()
        self.reconciles = Counter("reconciler_reconciles", "Reconciles that ran, by result", ["result"],
                                  registry=self.registry)
        self.reconcile_seconds = Histogram("reconciler_reconcile_seconds", "Duration of a reconcile",
                                           registry=self.registry,
                                           buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300))
        self.resources = Gauge("reconciler_resources", "Recorded resources by phase", ["phase"], registry=self.registry)
        self.last_success = Gauge("reconciler_last_success_timestamp_seconds",
                                  "When the last reconcile without failures ended", registry=self.registry)
        self.held_prunes = Gauge("reconciler_held_prunes", "1 while a plan's deletes are held over max_prune",
                                 registry=self.registry)
        self.drifted = Gauge("reconciler_drifted_resources", "Resources whose observed state drifted",
                             registry=self.registry)
        self.dataproduct_health = Gauge("reconciler_dataproduct_health",
                                        "1 for a data product's current health state (Healthy, Degraded, Failed)",
                                        ["product", "state"], registry=self.registry)
        self.slo_ok = Gauge("reconciler_slo_ok", "1 while a data product's SLO is met, 0 while it is breached",
                            ["product", "slo"], registry=self.registry)
        self.slo_value = Gauge("reconciler_slo_value", "An SLO's measured value: age in seconds (freshness) or a "
                               "fraction (quality, availability); absent without data", ["product", "slo", "kind"],
                               registry=self.registry)
        self._product_labels: dict = {}  # gauge -> label tuples set by the last set_products
        self.webhooks = Counter("reconciler_webhook_deliveries", "Webhook deliveries by result", ["result"],
                                registry=self.registry)

    def set_products(self, statuses) -> None:
        """Set the data product gauges from one evaluation (ProductStatus values). A deleted product or SLO
        is removed instead of keeping its last value; the others are overwritten in place, so a scrape
        never sees them missing."""
        from reconciler.products.slo import STATES

        seen: dict = {self.dataproduct_health: set(), self.slo_ok: set(), self.slo_value: set()}

        def put(gauge, labels: tuple, value: float) -> None:
            gauge.labels(*labels).set(value)
            seen[gauge].add(labels)

        for status in statuses:
            for state in STATES:
                put(self.dataproduct_health, (status.name, state), 1 if status.state == state else 0)
            for r in status.slos:
                put(self.slo_ok, (status.name, r.slo), 1 if r.ok else 0)
                if r.value is not None:
                    put(self.slo_value, (status.name, r.slo, r.kind), r.value)
        for gauge, labels in seen.items():
            for stale in self._product_labels.get(gauge, set()) - labels:
                gauge.remove(*stale)
        self._product_labels = seen

    def render(self) -> bytes:
        return generate_latest(self.registry)
