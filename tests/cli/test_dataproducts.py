"""`get dataproduct`, SLOs and health, ODCS/ODPS export, and the daemon's evaluation, through the real CLI
and a real daemon."""
import json
import os
import shutil
import signal
import subprocess
import sys

import pygit2
import pytest
import yaml

from tests.cli import repos
from tests.cli.test_daemon import http, status_file, wait_for
from tests.conftest import SAMPLE_ENV, SAMPLE_REPO, SHARED, GitRepo, free_port, run_cli

ODCS_SCHEMA = SHARED / "schemas" / "odcs" / "odcs-json-schema-v3.1.0.json"
ODPS_SCHEMA = SHARED / "schemas" / "odps" / "odps-json-schema-v1.0.0.json"


@pytest.fixture(scope="module")
def applied_sample(tmp_path_factory):
    """sample-repo committed and applied once for the read-only tests of this module."""
    tmp = tmp_path_factory.mktemp("sample")
    shutil.copytree(SAMPLE_REPO, tmp / "repo", ignore=shutil.ignore_patterns(".reconciler", "__pycache__"))
    repo = GitRepo(tmp / "repo")
    repo.commit(message="sample")
    state = tmp / "state"
    r = run_cli("apply", "--auto-approve", "--repo", repo.path, "--state-dir", state, env=SAMPLE_ENV)
    assert r.code == 0, r
    return state


def get_product(state, name="card-payments", *extra):
    r = run_cli("get", "dataproduct", name, "--state-dir", state, *extra)
    assert r.code == 0, r
    return r


def test_get_dataproduct_shows_ports_with_columns_resources_lineage_and_slos(applied_sample):
    p = get_product(applied_sample, "card-payments", "-o", "json").json
    assert (p["domain"], p["owner"], p["phase"]) == ("payments", "team-payments", "Ready")
    inputs = {port["name"]: port for port in p["inputs"]}
    assert set(inputs) == {"transactions", "merchants"}
    raw_columns = {c["name"]: c for c in inputs["transactions"]["columns"]}
    assert "pii" in raw_columns["card_number"]["tags"]
    clean = next(port for port in p["outputs"] if port["dataset"] == "lake://payments/transactions_clean")
    assert {"id": "BIGINT", "amount": "DECIMAL(12,2)"}.items() <= {c["name"]: c["type"] for c in clean["columns"]}.items()
    assert clean["row_count"] > 1000 and len(clean["checks"]) == 6
    assert {r["id"]: r["phase"] for r in p["resources"]} == {
        "workspace:payments": "Ready", "depot:raw-transactions": "Ready", "depot:merchants": "Ready",
        "secret:payments/reporting-token": "Ready", "workflow:payments/transactions-daily": "Ready",
        "service:payments/transactions-api": "Ready"}
    edges = {(e["source"], e["target"]) for e in p["lineage"]}
    assert ("depot://raw-transactions/transactions", "lake://payments/transactions_clean") in edges
    assert ("lake://payments/transactions_clean", "lake://payments/merchant_daily_totals") in edges
    slos = {s["name"]: s for s in p["slos"]}
    assert slos["fresh-daily"]["ok"] and 0 <= slos["fresh-daily"]["value"] < 600
    assert slos["fresh-daily"]["target"] == 26 * 3600
    assert (slos["checks-pass"]["value"], slos["checks-pass"]["ok"]) == (1.0, True)
    # only the daemon probes services: after a CLI apply the availability SLO has no data, so it is breached
    assert not slos["api-up"]["ok"] and slos["api-up"]["detail"].startswith("no data yet")
    assert p["health"] == "Degraded" and "api-up" in p["health_detail"]
    table = get_product(applied_sample).out
    for text in ("card-payments", "Input ports (2)", "Output ports (3)", "card_number", "DECIMAL(12,2)",
                 "workflow:payments/transactions-daily", "fresh-daily", "<= 26h", "100%", "BREACHED",
                 "depot://raw-transactions/transactions -> lake://payments/transactions_clean"):
        assert text in table, text
    assert yaml.load(get_product(applied_sample, "card-payments", "-o", "yaml").out,
                     Loader=yaml.CSafeLoader)["name"] == "card-payments"
    listed = run_cli("get", "dataproducts", "--state-dir", applied_sample, "-o", "json")
    assert [(x["name"], x["health"], x["slos_ok"], x["slos"]) for x in listed.json] == \
        [("card-payments", "Degraded", 3, 4)]


def test_unknown_data_product_is_a_clear_error(applied_sample):
    for name, hint in (("nope", "data products: card-payments"), ("card-paymnts", "did you mean 'card-payments'?")):
        r = run_cli("get", "dataproduct", name, "--state-dir", applied_sample)
        assert r.code == 1, r
        assert f"no data product named '{name}'" in r.err and hint in r.err and "Traceback" not in r.err
    r = run_cli("get", "dataproduct", "-o", "odcs", "--state-dir", applied_sample)
    assert r.code == 1 and "get dataproduct NAME -o odcs" in r.err
    r = run_cli("get", "workflow", "-o", "odps", "--state-dir", applied_sample)
    assert r.code == 1 and "exports a data product" in r.err


def _validator(path):
    jsonschema = pytest.importorskip("jsonschema")
    if not path.exists():
        pytest.skip(f"{path} is missing (the shared schema folder is not here)")
    return jsonschema.Draft201909Validator(json.loads(path.read_text()),
                                           format_checker=jsonschema.Draft201909Validator.FORMAT_CHECKER)


def _errors(validator, doc) -> list[str]:
    return [f"{list(e.absolute_path)}: {e.message[:200]}" for e in validator.iter_errors(doc)]


def test_odcs_export_validates_and_describes_the_output_ports(applied_sample):
    validator = _validator(ODCS_SCHEMA)
    r = get_product(applied_sample, "card-payments", "-o", "odcs")
    doc = yaml.load(r.out, Loader=yaml.CSafeLoader)  # YAML by default: the standard is YAML-native
    assert _errors(validator, doc) == []
    assert (doc["apiVersion"], doc["kind"], doc["domain"]) == ("v3.1.0", "DataContract", "payments")
    objects = {o["name"]: o for o in doc["schema"]}
    assert set(objects) == {"transactions-clean", "merchant-daily-totals", "fraud-scores"}
    props = {p["name"]: p for p in objects["transactions-clean"]["properties"]}
    assert (props["id"]["logicalType"], props["amount"]["logicalType"], props["ts"]["logicalType"]) == \
        ("integer", "number", "timestamp")
    assert props["id"]["unique"] and props["id"]["required"]
    assert {"metric": "invalidValues", "arguments": {"validValues": ["USD", "EUR", "GBP"]}}.items() <= \
        props["currency"]["quality"][0].items()
    assert any(q.get("metric") == "rowCount" and q["mustBeGreaterOrEqualTo"] == 1000
               for q in objects["transactions-clean"]["quality"])
    assert {s["id"]: s["property"] for s in doc["slaProperties"]} == {
        "fresh-daily": "latency", "totals-fresh-daily": "latency", "checks-pass": "errorRate", "api-up": "availability"}
    assert r.out == get_product(applied_sample, "card-payments", "-o", "odcs").out  # stable ids: same document
    # the validator is live: a wrong logical type is refused
    props["amount"]["logicalType"] = "decimal"
    assert _errors(validator, doc)


def test_odps_export_validates_and_points_its_output_ports_at_the_contract(applied_sample):
    validator = _validator(ODPS_SCHEMA)
    doc = yaml.load(get_product(applied_sample, "card-payments", "-o", "odps").out, Loader=yaml.CSafeLoader)
    assert _errors(validator, doc) == []
    contract = yaml.load(get_product(applied_sample, "card-payments", "-o", "odcs").out, Loader=yaml.CSafeLoader)
    assert (doc["apiVersion"], doc["kind"], doc["name"], doc["domain"]) == \
        ("v1.0.0", "DataProduct", "card-payments", "payments")
    assert [p["name"] for p in doc["inputPorts"]] == ["transactions", "merchants"]
    assert {p["contractId"] for p in doc["outputPorts"]} == {contract["id"]}
    clean = next(p for p in doc["outputPorts"] if p["name"] == "transactions-clean")
    assert {c["id"] for c in clean["inputContracts"]} == {p["contractId"] for p in doc["inputPorts"]}
    doc["outputPorts"][0]["unknown"] = 1
    assert _errors(validator, doc)


# ---- health from what really happened ---------------------------------------------------------

PRODUCT = """
version: v1
type: dataproduct
name: tx
owner: team-payments
dataproduct:
  domain: payments
  inputs: [{name: raw, dataset: "depot://raw/transactions"}]
  outputs: [{name: valid, dataset: "lake://payments/valid"}]
  slos:
    - {name: fresh, freshness: {dataset: "lake://payments/valid", max_age: 1h}}
    - {name: checks, quality: {dataset: "lake://payments/valid", min_pass_rate: 1}}
  resources:
    - {id: ws, file: workspace.yaml}
    - {id: raw, file: depots/raw.yaml}
    - {id: daily, file: workflows/daily.yaml}
"""


def small_product(**extra) -> dict:
    files = repos.basic(**{"product.yaml": PRODUCT})
    del files["policies/mask.yaml"]
    files.update(extra)
    return files


def test_a_product_is_healthy_then_degraded_by_a_table_never_written_then_failed_by_a_member(git_repo, state_dir):
    git_repo.commit(small_product())
    assert run_cli("apply", "--auto-approve", "--repo", git_repo.path, "--state-dir", state_dir).code == 0
    p = get_product(state_dir, "tx", "-o", "json").json
    assert p["health"] == "Healthy", p["health_detail"]
    assert [s["ok"] for s in p["slos"]] == [True, True]
    # an SLO on a table nothing has written (Reconciler only warns: it may be written elsewhere)
    never = PRODUCT.replace("  resources:", '    - {name: late, freshness: {dataset: "lake://payments/late", '
                                            'max_age: 1h}}\n  resources:')
    git_repo.commit({"product.yaml": never})
    r = run_cli("apply", "--auto-approve", "--repo", git_repo.path, "--state-dir", state_dir)
    assert r.code == 0 and "no workflow in this repository writes lake://payments/late" in r.err, r
    p = get_product(state_dir, "tx", "-o", "json").json
    late = next(s for s in p["slos"] if s["name"] == "late")
    assert (late["ok"], late["value"]) == (False, None) and late["detail"].startswith("no data yet")
    assert p["health"] == "Degraded" and "slo 'late' breached" in p["health_detail"]
    # a member that fails: the workflow's SQL names a column that does not exist
    git_repo.commit({"workflows/daily.yaml": repos.WORKFLOW.replace("WHERE amount > 0", "WHERE no_such_column > 0")})
    r = run_cli("apply", "--auto-approve", "--repo", git_repo.path, "--state-dir", state_dir)
    assert r.code == 1, r
    p = get_product(state_dir, "tx", "-o", "json").json
    phases = {x["id"]: x["phase"] for x in p["resources"]}
    assert phases["workflow:payments/daily"] == "Failed"  # the product itself may stay Ready: it did not change
    assert p["health"] == "Failed" and "workflow:payments/daily is Failed" in p["health_detail"]
    assert "health: Failed" in get_product(state_dir, "tx").out


# ---- the daemon --------------------------------------------------------------------------------

@pytest.mark.slow  # a daemon applying the whole sample repo: about 10 s, more on a busy machine
def test_daemon_evaluates_slos_probes_the_service_and_reports_health(tmp_path):
    work = GitRepo(tmp_path / "work")
    shutil.copytree(SAMPLE_REPO, work.path, dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns(".reconciler", "__pycache__"))
    work.commit(message="sample")
    bare_path = tmp_path / "remote.git"
    pygit2.clone_repository(str(work.path), str(bare_path), bare=True)
    bare = pygit2.Repository(str(bare_path))
    state, port = tmp_path / "state", free_port()
    env = {**os.environ, **SAMPLE_ENV}
    env.pop("RECONCILER_STATE_DIR", None)
    p = subprocess.Popen([sys.executable, "-m", "reconciler", "daemon", "--repo", f"file://{bare_path}",
                          "--state-dir", str(state), "--interval", "1s", "--listen", f"127.0.0.1:{port}"],
                         env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        status = wait_for(lambda: (t := status_file(bare, "STATUS.md")) and "## Data products" in t and t,
                          "STATUS.md with the Data products section")
        assert "| `card-payments` |" in status and "`fresh-daily` (freshness)" in status and "<= 26h" in status
        assert "`api-up` (availability)" in status
        from prometheus_client.parser import text_string_to_metric_families

        samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
                   for f in text_string_to_metric_families(http(port, "/metrics")[1].decode()) for s in f.samples}
        health = {dict(labels)["state"]: v for (name, labels), v in samples.items()
                  if name == "reconciler_dataproduct_health" and dict(labels)["product"] == "card-payments"}
        assert sorted(health.values()) == [0, 0, 1] and set(health) == {"Healthy", "Degraded", "Failed"}
        assert samples[("reconciler_slo_ok", (("product", "card-payments"), ("slo", "fresh-daily")))] == 1
        # the API shows the same product view and exports (503 while a reconcile holds the state: retried)
        view = json.loads(wait_for(lambda: (r := http(port, "/api/v1/dataproducts/card-payments"))[0] == 200 and r[1],
                                   "the data product from the API"))
        assert view["name"] == "card-payments" and {p["name"] for p in view["outputs"]} >= {"transactions-clean"}
        assert {s["name"] for s in view["slos"]} == {"fresh-daily", "totals-fresh-daily", "checks-pass", "api-up"}
        assert wait_for(lambda: http(port, "/api/v1/dataproducts/nope")[0] == 404,
                        "a 404 for an unknown product")
        listed = json.loads(wait_for(lambda: (r := http(port, "/api/v1/dataproducts"))[0] == 200 and r[1],
                                     "the list of data products"))
        assert [x["name"] for x in listed] == ["card-payments"]
        contract = json.loads(wait_for(lambda: (r := http(port, "/api/v1/dataproducts/card-payments/odcs"))[0] == 200
                                       and r[1], "the ODCS export from the API"))
        assert contract["kind"] == "DataContract"
        # what a consumer gets from the service's health route right now, without a token
        route_status = http(port, "/api/v1/services/payments/transactions-api/health")[0]
        p.send_signal(signal.SIGTERM)
        assert p.wait(60) == 0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(10)
    from reconciler.store.state import StateStore

    with StateStore.open(state, read_only=True) as store:
        checks = store.products.service_checks("service:payments/transactions-api")
        recorded = {r["slo"]: r for r in store.products.latest_results("card-payments")}
        health_row = store.products.health("card-payments")
    assert checks, "the daemon never probed the service named by the availability SLO"
    assert recorded["fresh-daily"]["ok"] and recorded["checks-pass"]["value"] == 1.0
    assert health_row and health_row[0]["state"] in ("Healthy", "Degraded")
    if route_status == 404:
        # PENDING the services helper's health route (reconciler/daemon/data_api.py): until it exists the
        # probe gets 404 and must record a failed check. Once the route answers, the branch below applies.
        assert all(c["status"] == 404 and not c["ok"] for c in checks)
        assert not recorded["api-up"]["ok"]
    else:
        # the probe is an HTTP GET of the real route: it records what the route answered, 200 means ok
        assert route_status == 200, f"the health route answered {route_status}"
        assert checks[-1]["status"] == 200 and checks[-1]["ok"]
        assert recorded["api-up"]["value"] > 0
