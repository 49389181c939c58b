"""Service level objectives of data products, and a product's health.

Three kinds (SPEC.md section 1, `dataproduct.slos`):
- `freshness`: the age of an output dataset's last write against `max_age`; the write time is
  the catalog's `updated_at` of the dataset (set when a job writes a lake table, when a depot is
  introspected) or, for a dataset the catalog lost, the newest lineage edge into it (edges are
  recorded by successful jobs only).
- `quality`: the pass rate of the quality checks recorded for the dataset over `window`
  (default: every check so far) against `min_pass_rate`.
- `availability`: the share of the service's health probes that answered 200 over the last
  24 hours (or `window`) against `min`. The daemon probes; nobody else does.
No data at all is a breach ("no data yet"): an objective nobody can show is met is not met.

A product is `Failed` when its own record or one of its members is Failed or Blocked, else
`Degraded` when an SLO is breached, else `Healthy`.

The judgement is pure (`evaluate_slo`, `product_health` take plain values and `now`, so the
tests can move the clock); `evaluate_products` gathers those values from an open StateStore
(read-only is enough) and `record_evaluation` writes a result through `store.products`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Iterable, Mapping

from reconciler.core.ids import make_id
from reconciler.core.record import BLOCKED, FAILED
from reconciler.core.resources import format_duration, parse_duration

HEALTHY, DEGRADED, FAILED_STATE = "Healthy", "Degraded", "Failed"
STATES = (HEALTHY, DEGRADED, FAILED_STATE)
KINDS = ("freshness", "quality", "availability")
AVAILABILITY_WINDOW = 24 * 3600.0
NO_DATA = "no data yet"


# ---------------------------------------------------------------------------- values

@dataclass(frozen=True)
class SloResult:
    product: str
    slo: str
    kind: str
    subject: str  # the dataset address or the service id the objective is about
    value: float | None  # seconds of age, or a fraction; None without data
    target: float  # max_age in seconds, or the minimum fraction
    ok: bool
    detail: str
    at: datetime

    @property
    def value_text(self) -> str:
        return _show(self.kind, self.value)

    @property
    def target_text(self) -> str:
        if self.kind == "freshness":
            return "<= " + format_duration(self.target)
        return ">= " + _show(self.kind, self.target)

    def row(self) -> dict:
        """The slo_results row."""
        return {"product": self.product, "slo": self.slo, "kind": self.kind, "value": self.value,
                "target": self.target, "ok": self.ok, "detail": self.detail, "at": self.at}

    def to_json(self) -> dict:
        return {"name": self.slo, "kind": self.kind, "subject": self.subject, "value": self.value,
                "target": self.target, "ok": self.ok, "detail": self.detail, "value_text": self.value_text,
                "target_text": self.target_text, "at": iso(self.at)}


@dataclass
class ProductStatus:
    name: str
    state: str
    detail: str
    slos: list[SloResult] = field(default_factory=list)
    at: datetime | None = None

    def to_json(self) -> dict:
        return {"name": self.name, "state": self.state, "detail": self.detail,
                "slos": [s.to_json() for s in self.slos], "at": iso(self.at) if self.at else None}


@dataclass
class Facts:
    """What the evaluation needs to know, keyed by dataset address or service id."""

    last_writes: dict[str, datetime | None] = field(default_factory=dict)
    quality: dict[str, list[dict]] = field(default_factory=dict)  # rows with `at` and `passed`
    probes: dict[str, list[dict]] = field(default_factory=dict)  # rows with `at` and `ok`


def iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat(timespec="seconds")


def parse_time(value) -> datetime | None:
    """An aware UTC datetime from the store's ISO text (naive means UTC); None when absent or unreadable."""
    if value is None:
        return None
    if isinstance(value, datetime):
        moment = value
    else:
        try:
            moment = datetime.fromisoformat(str(value))
        except ValueError:
            return None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def humanize(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    parts = [(seconds // 86400, "d"), (seconds % 86400 // 3600, "h"), (seconds % 3600 // 60, "m"), (seconds % 60, "s")]
    return " ".join([f"{n}{unit}" for n, unit in parts if n][:2]) or "0s"


def _show(kind: str, value: float | None) -> str:
    if value is None:
        return "-"
    if kind == "freshness":
        return humanize(value)
    return f"{value * 100:.4g}%"


# ---------------------------------------------------------------------------- pure judgement

def slo_kind(slo: Mapping) -> str | None:
    return next((k for k in KINDS if slo.get(k) is not None), None)


def slo_subject(slo: Mapping) -> str:
    """The dataset address, or the service id (service:WS/NAME), an SLO is about."""
    kind = slo_kind(slo)
    body = (slo.get(kind) or {}) if kind else {}
    if kind == "availability":
        return service_id(body.get("service", ""))
    return body.get("dataset", "")


def service_id(service: str) -> str:
    """`WORKSPACE/NAME` or `NAME` (workspace public) as a resource id."""
    workspace, _, name = service.rpartition("/")
    return make_id("service", name, workspace or "public")


def _seconds(value, default: float | None) -> float | None:
    if value is None:
        return default
    return parse_duration(value)


def _within(rows: Iterable[dict], since: datetime | None) -> list[dict]:
    out = []
    for row in rows:
        at = parse_time(row.get("at"))
        if since is None or (at is not None and at >= since):
            out.append(row)
    return out


def evaluate_slo(product: str, slo: Mapping, facts: Facts, now: datetime) -> SloResult:
    """One objective judged at `now` from `facts`."""
    kind = slo_kind(slo)
    name = slo.get("name", "?")
    body = (slo.get(kind) or {}) if kind else {}
    subject = slo_subject(slo)

    def result(value, target, ok, detail):
        return SloResult(product, name, kind or "unknown", subject, value, target, ok, detail, now)

    if kind == "freshness":
        max_age = _seconds(body.get("max_age"), 0.0)
        written = facts.last_writes.get(subject)
        if written is None:
            return result(None, max_age, False, f"{NO_DATA}: {subject} has not been written")
        age = max((now - written).total_seconds(), 0.0)
        ok = age <= max_age
        return result(age, max_age, ok, f"{subject} last written {humanize(age)} ago "
                                        f"({'within' if ok else 'over'} {format_duration(max_age)})")
    if kind == "quality":
        target = float(body.get("min_pass_rate", 1.0))
        window = _seconds(body.get("window"), None)
        since = now - timedelta(seconds=window) if window else None
        rows = _within(facts.quality.get(subject, ()), since)
        span = f" in the last {format_duration(window)}" if window else ""
        if not rows:
            return result(None, target, False, f"{NO_DATA}: no quality checks recorded for {subject}{span}")
        passed = sum(1 for r in rows if r.get("passed"))
        rate = passed / len(rows)
        return result(rate, target, rate >= target, f"{passed} of {len(rows)} checks on {subject} passed{span}")
    if kind == "availability":
        target = float(body.get("min", 1.0))
        window = _seconds(body.get("window"), AVAILABILITY_WINDOW)
        rows = _within(facts.probes.get(subject, ()), now - timedelta(seconds=window))
        span = f" in the last {'24h' if window == AVAILABILITY_WINDOW else format_duration(window)}"
        if not rows:
            return result(None, target, False, f"{NO_DATA}: {subject} has not been probed{span} "
                                               "(the daemon probes its health route)")
        good = sum(1 for r in rows if r.get("ok"))
        share = good / len(rows)
        return result(share, target, share >= target, f"{good} of {len(rows)} probes of {subject} answered{span}")
    return result(None, 0.0, False, f"unknown objective kind in slo '{name}'")


def product_health(phases: Mapping[str, str], results: Iterable[SloResult]) -> tuple[str, str]:
    """(state, detail) from the phases of the product and its members (resource id -> phase) and its SLOs."""
    broken = sorted(rid for rid, phase in phases.items() if phase in (FAILED, BLOCKED))
    if broken:
        return FAILED_STATE, "; ".join(f"{rid} is {phases[rid]}" for rid in broken)
    breached = [r for r in results if not r.ok]
    if breached:
        return DEGRADED, "; ".join(f"slo '{r.slo}' breached: {r.detail}" for r in breached)
    return HEALTHY, "every member is applied and every SLO is met"


# ---------------------------------------------------------------------------- over a store

def product_specs(store, records: Mapping | None = None) -> dict[str, dict]:
    """name -> the product's section as registered (catalog), else as last applied (record), else empty:
    a product whose first apply failed has a record but no registration."""
    records = store.records() if records is None else records
    out: dict[str, dict] = {}
    for rec in records.values():
        if rec.type == "dataproduct":
            section = dict(((rec.spec or {}).get("dataproduct")) or {})
            if rec.spec:
                section.setdefault("description", rec.spec.get("description"))
                section.setdefault("tags", rec.spec.get("tags") or [])
            out[rec.name] = section | {"owner": (rec.spec or {}).get("owner"), "registered": False}
    for product in store.catalog.dataproducts():
        out[product["name"]] = dict(product["spec"]) | {"domain": product["domain"], "owner": product["owner"],
                                                         "registered": True, "updated_at": product["updated_at"]}
    return out


def member_phases(name: str, spec: Mapping, records: Mapping) -> dict[str, str]:
    """Resource id -> phase of the product itself and of each of its members (recorded ones only)."""
    pid = make_id("dataproduct", name)
    ids = {pid} | set(spec.get("members") or ()) | {rid for rid, r in records.items() if r.bundle == pid}
    return {rid: records[rid].phase for rid in sorted(ids) if rid in records}


def gather_facts(store, slos: Iterable[Mapping]) -> Facts:
    facts = Facts()
    edges = None
    for slo in slos:
        kind, subject = slo_kind(slo), slo_subject(slo)
        if kind == "freshness" and subject not in facts.last_writes:
            dataset = store.catalog.dataset(subject)
            written = parse_time(dataset.get("updated_at")) if dataset else None
            if written is None:
                edges = store.runs.lineage_edges() if edges is None else edges
                times = [parse_time(e["at"]) for e in edges if e["target"] == subject and e.get("at")]
                written = max((t for t in times if t), default=None)
            facts.last_writes[subject] = written
        elif kind == "quality" and subject not in facts.quality:
            facts.quality[subject] = store.runs.quality(dataset=subject, limit=100_000)
        elif kind == "availability" and subject not in facts.probes:
            facts.probes[subject] = store.products.service_checks(subject)
    return facts


def evaluate_product(name: str, spec: Mapping, records: Mapping, facts: Facts, now: datetime) -> ProductStatus:
    results = [evaluate_slo(name, slo, facts, now) for slo in spec.get("slos") or ()]
    state, detail = product_health(member_phases(name, spec, records), results)
    return ProductStatus(name, state, detail, results, now)


@dataclass
class Snapshot:
    """What an evaluation reads from the store, so that the store can be closed while the daemon
    probes services and the verdicts computed after (probe results added with `add_probes`)."""

    specs: dict[str, dict]
    records: Mapping
    facts: Facts

    @classmethod
    def read(cls, store) -> "Snapshot":
        if not store.products.names():
            return cls({}, {}, Facts())
        records = store.records()
        specs = product_specs(store, records)
        facts = gather_facts(store, [slo for spec in specs.values() for slo in spec.get("slos") or ()])
        return cls(specs, records, facts)

    def services(self) -> list[str]:
        """The service ids that some product's availability SLO names (what the daemon probes)."""
        return sorted({slo_subject(slo) for spec in self.specs.values() for slo in spec.get("slos") or ()
                       if slo_kind(slo) == "availability"})

    def add_probes(self, checks: Iterable[dict]) -> None:
        for check in checks:
            self.facts.probes.setdefault(check["service_id"], []).append(check)

    def evaluate(self, now: datetime, names: Iterable[str] | None = None) -> list[ProductStatus]:
        """Every data product (or those named) judged at `now`, sorted by name."""
        wanted = sorted(self.specs) if names is None else [n for n in names if n in self.specs]
        return [evaluate_product(n, self.specs[n], self.records, self.facts, now) for n in wanted]


def evaluate_products(store, now: datetime, names: Iterable[str] | None = None) -> list[ProductStatus]:
    """Every data product (or those named) judged at `now` from what `store` holds, sorted by name."""
    return Snapshot.read(store).evaluate(now, names)


def record_evaluation(store, statuses: list[ProductStatus], now: datetime) -> None:
    """Append the SLO results and replace each product's health (a writable store)."""
    store.products.record_evaluation(
        [r.row() for s in statuses for r in s.slos],
        [{"product": s.name, "state": s.state, "detail": s.detail, "at": s.at or now} for s in statuses], now)
