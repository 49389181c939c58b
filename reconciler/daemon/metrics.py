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
        self.webhooks = Counter("reconciler_webhook_deliveries", "Webhook deliveries by result", ["result"],
                                registry=self.registry)

    def render(self) -> bytes:
        return generate_latest(self.registry)
