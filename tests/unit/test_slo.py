"""SLO judgement with a clock the test moves, product health, what the store records, the service
probe against a real HTTP server, ODCS type mapping, STATUS.md and the metrics of data products."""
import threading
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import duckdb
import pytest

from reconciler.products.export import logical_type
from reconciler.products.probe import health_url, probe_service
from reconciler.products.slo import (DEGRADED, FAILED_STATE, HEALTHY, NO_DATA, Facts, ProductStatus, evaluate_slo,
                                     product_health)
from reconciler.store.schema import MIGRATIONS, migrate, schema_version
from reconciler.store.state import StateStore
from tests.conftest import free_port

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)
FRESH = {"name": "fresh", "freshness": {"dataset": "lake://ws/t", "max_age": "26h"}}
QUALITY = {"name": "checks", "quality": {"dataset": "lake://ws/t", "min_pass_rate": 0.9, "window": "7d"}}
UP = {"name": "up", "availability": {"service": "ws/api", "min": 0.99}}


def at(hours: float) -> str:
    return (T0 + timedelta(hours=hours)).isoformat()


# ---- freshness -------------------------------------------------------------------------------

def test_freshness_is_met_until_max_age_then_breached():
    facts = Facts(last_writes={"lake://ws/t": T0})
    r = evaluate_slo("p", FRESH, facts, T0 + timedelta(hours=25))
    assert (r.ok, r.value, r.target, r.kind, r.subject) == (True, 25 * 3600, 26 * 3600, "freshness", "lake://ws/t")
    late = evaluate_slo("p", FRESH, facts, T0 + timedelta(hours=27))
    assert not late.ok and late.value == 27 * 3600
    assert "1d 3h ago" in late.detail and "over 26h" in late.detail
    assert (late.value_text, late.target_text) == ("1d 3h", "<= 26h")


def test_freshness_without_a_write_is_breached_with_no_data_yet():
    r = evaluate_slo("p", FRESH, Facts(last_writes={"lake://ws/t": None}), T0)
    assert not r.ok and r.value is None and r.detail.startswith(NO_DATA)
    assert evaluate_slo("p", FRESH, Facts(), T0).detail.startswith(NO_DATA)  # not even looked up


def test_a_write_in_the_future_counts_as_age_zero():
    r = evaluate_slo("p", FRESH, Facts(last_writes={"lake://ws/t": T0 + timedelta(minutes=5)}), T0)
    assert r.ok and r.value == 0


# ---- quality ---------------------------------------------------------------------------------

def test_quality_is_the_pass_rate_inside_the_window():
    rows = [{"at": at(-200), "passed": False}] * 5  # 8+ days old: outside the 7d window
    rows += [{"at": at(-1), "passed": True}] * 9 + [{"at": at(-2), "passed": False}]
    r = evaluate_slo("p", QUALITY, Facts(quality={"lake://ws/t": rows}), T0)
    assert r.ok and r.value == pytest.approx(0.9) and r.target == 0.9
    assert "9 of 10 checks" in r.detail and "1w" in r.detail
    worse = rows + [{"at": at(-3), "passed": False}]
    assert not evaluate_slo("p", QUALITY, Facts(quality={"lake://ws/t": worse}), T0).ok


def test_quality_without_a_window_counts_every_check_and_none_is_no_data():
    spec = {"name": "all", "quality": {"dataset": "lake://ws/t", "min_pass_rate": 0.5}}
    rows = [{"at": at(-5000), "passed": False}, {"at": at(-1), "passed": True}]
    r = evaluate_slo("p", spec, Facts(quality={"lake://ws/t": rows}), T0)
    assert r.ok and r.value == 0.5
    old_only = evaluate_slo("p", QUALITY, Facts(quality={"lake://ws/t": rows[:1]}), T0)
    assert not old_only.ok and old_only.detail.startswith(NO_DATA)


# ---- availability ----------------------------------------------------------------------------

def test_availability_is_the_share_of_good_probes_over_24h():
    probes = [{"at": at(-30), "ok": False}] * 50  # a day and more ago: ignored
    probes += [{"at": at(-h / 10), "ok": True} for h in range(99)] + [{"at": at(-1), "ok": False}]
    r = evaluate_slo("p", UP, Facts(probes={"service:ws/api": probes}), T0)
    assert r.subject == "service:ws/api" and r.value == pytest.approx(0.99) and r.ok
    assert "99 of 100 probes" in r.detail and "24h" in r.detail
    probes.append({"at": at(-0.5), "ok": False})
    assert not evaluate_slo("p", UP, Facts(probes={"service:ws/api": probes}), T0).ok


def test_availability_never_probed_is_breached():
    r = evaluate_slo("p", {"name": "up", "availability": {"service": "api", "min": 0.5}}, Facts(), T0)
    assert r.subject == "service:public/api" and not r.ok and r.detail.startswith(NO_DATA)


# ---- health ----------------------------------------------------------------------------------

def test_health_failed_beats_degraded_beats_healthy():
    good = evaluate_slo("p", FRESH, Facts(last_writes={"lake://ws/t": T0}), T0)
    bad = evaluate_slo("p", FRESH, Facts(), T0)
    ready = {"dataproduct:p": "Ready", "workflow:ws/daily": "Ready"}
    assert product_health(ready, [good])[0] == HEALTHY
    state, detail = product_health(ready, [good, bad])
    assert state == DEGRADED and "slo 'fresh' breached" in detail
    for phase in ("Failed", "Blocked"):
        state, detail = product_health(ready | {"workflow:ws/daily": phase}, [good])
        assert state == FAILED_STATE and f"workflow:ws/daily is {phase}" in detail
    assert product_health({"dataproduct:p": "Blocked"}, [])[0] == FAILED_STATE
    assert product_health(ready | {"depot:raw": "Pending"}, [])[0] == HEALTHY  # not applied yet is not failed


# ---- the store -------------------------------------------------------------------------------

def test_migration_3_adds_the_tables_to_a_version_2_state(tmp_path):
    conn = duckdb.connect(str(tmp_path / "old.duckdb"))
    migrate(conn, "old", MIGRATIONS[:2])
    assert schema_version(conn) == 2
    assert migrate(conn, "old", MIGRATIONS[:3]) == 2 and schema_version(conn) == 3
    tables = {r[0] for r in conn.execute("SELECT table_name FROM information_schema.tables").fetchall()}
    assert {"service_checks", "slo_results", "dataproduct_health"} <= tables
    conn.execute(MIGRATIONS[2])  # safe to replay


def test_store_keeps_results_latest_health_and_prunes_old_rows(tmp_path):
    now = datetime.now(timezone.utc)
    with StateStore.open(tmp_path) as store:
        serial = store.serial
        store.products.record_checks([
            {"service_id": "service:ws/api", "at": now - timedelta(days=40), "ok": True, "status": 200, "detail": ""},
            {"service_id": "service:ws/api", "at": now, "ok": False, "status": 404, "detail": "HTTP 404"}], now)
        checks = store.products.service_checks("service:ws/api")
        assert [(c["ok"], c["status"]) for c in checks] == [(False, 404)]  # 40 days old: pruned
        older = {"product": "p", "slo": "fresh", "kind": "freshness", "value": 10.0, "target": 60.0, "ok": True,
                 "detail": "d", "at": now - timedelta(minutes=1)}
        store.products.record_evaluation([older, older | {"slo": "up", "ok": False, "value": None}],
                                         [{"product": "p", "state": "Degraded", "detail": "x", "at": now},
                                          {"product": "gone", "state": "Healthy", "detail": "", "at": now}], now)
        store.products.record_evaluation([older | {"value": 70.0, "ok": False, "at": now}],
                                         [{"product": "p", "state": "Failed", "detail": "y", "at": now}], now)
        latest = {r["slo"]: r for r in store.products.latest_results("p")}
        assert (latest["fresh"]["value"], latest["fresh"]["ok"]) == (70.0, False)
        assert latest["up"]["value"] is None
        assert len(store.products.results("p", "fresh")) == 2
        assert [(h["product"], h["state"]) for h in store.products.health()] == [("p", "Failed")]  # 'gone' dropped
        assert store.serial == serial  # measurements never move the state serial
    with StateStore.open(tmp_path, read_only=True) as store:
        assert store.products.health("p")[0]["detail"] == "y"


# ---- the probe ---------------------------------------------------------------------------------

class _Health(BaseHTTPRequestHandler):
    answers: dict[str, int] = {}

    def do_GET(self):  # noqa: N802
        status = self.answers.get(self.path, 404)
        body = b'{"ok": true}' if status == 200 else b'{"ok": false, "detail": "lake busy"}'
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def health_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_probe_needs_a_200_from_the_health_route(health_server):
    _Health.answers = {"/api/v1/services/payments/transactions-api/health": 200,
                       "/api/v1/services/payments/broken/health": 503}
    assert health_url(health_server, "service:payments/transactions-api").endswith(
        "/api/v1/services/payments/transactions-api/health")
    up = probe_service(health_server, "service:payments/transactions-api", now=T0)
    assert (up["ok"], up["status"], up["at"], up["service_id"]) == (True, 200, T0, "service:payments/transactions-api")
    down = probe_service(health_server, "service:payments/broken")
    assert (down["ok"], down["status"]) == (False, 503) and "lake busy" in down["detail"]
    missing = probe_service(health_server, "service:public/nothing")
    assert (missing["ok"], missing["status"]) == (False, 404)


def test_probe_of_a_closed_port_is_a_failed_check():
    r = probe_service(f"http://127.0.0.1:{free_port()}", "service:ws/api", timeout=2)
    assert r["ok"] is False and r["status"] is None and "no answer" in r["detail"]


# ---- export, report, metrics -----------------------------------------------------------------

@pytest.mark.parametrize("physical, logical", [
    ("BIGINT", "integer"), ("INTEGER", "integer"), ("UBIGINT", "integer"), ("int4", "integer"),
    ("DECIMAL(12,2)", "number"), ("DOUBLE", "number"), ("double precision", "number"),
    ("VARCHAR", "string"), ("TEXT", "string"), ("UUID", "string"), ("BLOB", "string"),
    ("DATE", "date"), ("TIMESTAMP", "timestamp"), ("TIMESTAMP WITH TIME ZONE", "timestamp"),
    ("TIME", "time"), ("BOOLEAN", "boolean"), ("INTEGER[]", "array"), ("STRUCT(a INTEGER)", "object"),
    ("MAP(VARCHAR, INTEGER)", "object"), ("JSON", "object"), ("", None), (None, None)])
def test_duckdb_types_map_to_odcs_logical_types(physical, logical):
    assert logical_type(physical) == logical


def test_status_markdown_has_a_data_products_table():
    from reconciler.gitops.status import status_markdown

    good = evaluate_slo("card", FRESH, Facts(last_writes={"lake://ws/t": T0}), T0 + timedelta(hours=1))
    bad = evaluate_slo("card", UP, Facts(), T0)
    products = [ProductStatus("card", DEGRADED, "slo 'up' breached", [good, bad], T0).to_json()]
    text = status_markdown([], None, "abc", products=products)
    assert "## Data products (1)" in text
    assert "| `card` | Degraded | `fresh` (freshness) | 1h | <= 26h | yes |" in text
    assert "| `card` | Degraded | `up` (availability) | - | >= 99% | **breached** |" in text
    assert "Data products" not in status_markdown([], None, "abc")


def test_metrics_show_one_health_state_and_forget_deleted_products():
    from prometheus_client.parser import text_string_to_metric_families

    from reconciler.daemon.metrics import Metrics

    def samples(m):
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for f in text_string_to_metric_families(m.render().decode()) for s in f.samples
                if s.name.startswith(("reconciler_dataproduct", "reconciler_slo"))}

    good = evaluate_slo("card", FRESH, Facts(last_writes={"lake://ws/t": T0}), T0)
    metrics = Metrics()
    metrics.set_products([ProductStatus("card", HEALTHY, "", [good], T0), ProductStatus("old", FAILED_STATE, "", [], T0)])
    got = samples(metrics)
    assert got[("reconciler_dataproduct_health", (("product", "card"), ("state", "Healthy")))] == 1
    assert got[("reconciler_dataproduct_health", (("product", "card"), ("state", "Degraded")))] == 0
    assert got[("reconciler_slo_ok", (("product", "card"), ("slo", "fresh")))] == 1
    assert got[("reconciler_slo_value", (("kind", "freshness"), ("product", "card"), ("slo", "fresh")))] == 0
    metrics.set_products([ProductStatus("card", DEGRADED, "", [evaluate_slo("card", FRESH, Facts(), T0)], T0)])
    got = samples(metrics)
    assert not any(dict(labels).get("product") == "old" for _, labels in got)
    assert got[("reconciler_dataproduct_health", (("product", "card"), ("state", "Degraded")))] == 1
    assert got[("reconciler_slo_ok", (("product", "card"), ("slo", "fresh")))] == 0
    assert not any(name == "reconciler_slo_value" for name, _ in got)  # no data: no value
