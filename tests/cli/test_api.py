"""/api/v1 served by a real daemon's HTTP server over a state the real CLI applied."""
import json
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest

from reconciler.daemon.config import load_config
from reconciler.daemon.service import Daemon
from tests.cli import repos
from tests.conftest import GitRepo, free_port, run_cli

TOKEN = "api-token-for-tests-123"


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("api")
    repo = GitRepo(tmp / "repo")
    repo.commit(repos.basic())
    state = tmp / "state"
    r = run_cli("apply", "--auto-approve", "--repo", repo.path, "--state-dir", state)
    assert r.code == 0, r
    token_file = tmp / "api-token"
    token_file.write_text(TOKEN + "\n")
    port = free_port()
    config = load_config(None, {"repo": str(repo.path), "state_dir": str(state), "listen": f"127.0.0.1:{port}",
                                "api_token_file": str(token_file)})
    daemon = Daemon(config)
    server = daemon._start_http()  # the HTTP server only; the reconcile loop is not started
    deadline = time.monotonic() + 10
    while not server.server.started:
        assert time.monotonic() < deadline, "the HTTP server did not start"
        time.sleep(0.02)
    yield port, state
    server.stop()


def call(port: int, path: str, token: str | None = TOKEN, **params):
    url = f"http://127.0.0.1:{port}{path}"
    if params:
        url += "?" + urllib.parse.urlencode(params)
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.headers.get("content-type", ""), resp.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("content-type", ""), e.read().decode()


def get_json(port, path, expect=200, **params):
    status, ctype, body = call(port, path, **params)
    assert status == expect, body
    assert ctype.startswith("application/json")
    return json.loads(body)


def test_token_guards_the_api_only(api):
    port, _ = api
    for token in (None, "wrong-token", TOKEN[:-1]):
        status, _, body = call(port, "/api/v1/resources", token=token)
        assert status == 401
        assert "Bearer" in json.loads(body)["detail"] and TOKEN not in body
    assert call(port, "/api/v1/resources")[0] == 200
    assert call(port, "/healthz", token=None)[0] == 200
    assert call(port, "/metrics", token=None)[0] == 200


def test_resources_and_one_with_history(api):
    port, _ = api
    listed = get_json(port, "/api/v1/resources")
    assert {r["id"] for r in listed} == {"workspace:payments", "depot:raw", "workflow:payments/daily",
                                         "policy:mask-cards"}
    assert all(r["phase"] == "Ready" for r in listed)
    only = get_json(port, "/api/v1/resources", type="workflow", workspace="payments")
    assert [r["id"] for r in only] == ["workflow:payments/daily"]
    wf = get_json(port, "/api/v1/resources/workflow/daily", workspace="payments")
    assert wf["id"] == "workflow:payments/daily" and wf["health"] == "Healthy"
    assert [(h["action"], h["phase"]) for h in wf["history"]][0] == ("create", "Applying")
    assert wf["history"][-1]["phase"] == "Ready"
    depot = get_json(port, "/api/v1/resources/depot/raw")
    assert depot["spec"]["depot"]["kind"] == "file"


def test_unknown_things_are_404(api):
    port, _ = api
    assert "no depot named 'nope'" in get_json(port, "/api/v1/resources/depot/nope", 404)["detail"]
    assert "unknown resource type" in get_json(port, "/api/v1/resources/bogus/x", 404)["detail"]
    assert "no workflow 'nope'" in get_json(port, "/api/v1/runs/payments/nope", 404)["detail"]
    assert "no run 19990101" in get_json(port, "/api/v1/runs/payments/daily/19990101", 404)["detail"]
    assert get_json(port, "/api/v1/runs/payments/daily/19990101/logs", 404)["detail"]
    assert get_json(port, "/api/v1/catalog/dataset", 404, address="lake://payments/nope")["detail"]
    assert "no dataset" in get_json(port, "/api/v1/lineage", 404, dataset="lake://payments/nope")["detail"]


def test_runs_jobs_quality_and_logs(api):
    port, state = api
    runs = get_json(port, "/api/v1/runs/payments/daily")
    assert len(runs) == 1 and runs[0]["status"] == "succeeded" and runs[0]["trigger"] == "apply"
    assert {j["job"]: j["status"] for j in runs[0]["jobs"]} == {"clean": "succeeded", "checks": "succeeded"}
    run_id = runs[0]["run_id"]
    run = get_json(port, f"/api/v1/runs/payments/daily/{run_id}")
    assert run["run_id"] == run_id and len(run["jobs"]) == 2
    assert [(q["check_type"], q["passed"]) for q in run["quality"]] == [("row_count", True)]

    status, ctype, text = call(port, f"/api/v1/runs/payments/daily/{run_id}/logs")
    assert status == 200 and ctype.startswith("text/plain")
    assert "==> clean <==" in text and "==> checks <==" in text
    assert "output lake://payments/valid: 2 rows written" in text
    status, _, clean = call(port, f"/api/v1/runs/payments/daily/{run_id}/logs", job="clean")
    assert status == 200 and "==>" not in clean
    assert clean == (state / "runs" / "payments" / "daily" / run_id / "clean.log").read_text()
    status, _, body = call(port, f"/api/v1/runs/payments/daily/{run_id}/logs", job="nope")
    assert status == 404 and "no log for job 'nope'" in body


def test_catalog_dataset_and_lineage(api):
    port, _ = api
    cat = get_json(port, "/api/v1/catalog")
    addresses = {d["address"]: d for d in cat["datasets"]}
    assert set(addresses) == {"depot://raw/transactions", "lake://payments/valid"}
    assert [c["name"] for c in addresses["lake://payments/valid"]["columns"]] == ["id", "amount", "currency"]
    assert cat["dataproducts"] == []
    ds = get_json(port, "/api/v1/catalog/dataset", address="lake://payments/valid")
    assert ds["row_count"] == 2 and ds["last_run"]
    assert ds["profile"] == []  # the basic workflow has no profile job
    assert [q["passed"] for q in ds["quality"]] == [True]
    up = get_json(port, "/api/v1/lineage", dataset="lake://payments/valid", direction="upstream")
    assert [(e["source"], e["job"]) for e in up["upstream"]] == [("depot://raw/transactions", "clean")]
    assert up["downstream"] == []
    down = get_json(port, "/api/v1/lineage", dataset="depot://raw/transactions")
    assert [e["target"] for e in down["downstream"]] == ["lake://payments/valid"]
    assert get_json(port, "/api/v1/lineage", 422, dataset="depot://raw/transactions", direction="sideways")


def test_status_plans_and_openapi(api):
    port, _ = api
    status = get_json(port, "/api/v1/status")
    assert status["ready"] is False and status["commit"] is None  # the loop never ran here
    plans = get_json(port, "/api/v1/plans")
    assert plans == {"last_reconcile": None, "previews": {}}
    doc = get_json(port, "/openapi.json")
    paths = set(doc["paths"])
    assert {"/api/v1/resources", "/api/v1/resources/{type}/{name}", "/api/v1/runs/{workspace}/{workflow}",
            "/api/v1/runs/{workspace}/{workflow}/{run_id}", "/api/v1/runs/{workspace}/{workflow}/{run_id}/logs",
            "/api/v1/catalog", "/api/v1/catalog/dataset", "/api/v1/lineage", "/api/v1/plans",
            "/api/v1/status"} <= paths
    assert doc["paths"]["/api/v1/resources"]["get"]["summary"] == "List recorded resources"


def test_state_held_by_another_process_is_503(api):
    port, state = api
    holder = subprocess.Popen([sys.executable, "-c", "import duckdb, sys; c = duckdb.connect(sys.argv[1]); "
                               "print('held', flush=True); sys.stdin.read()", str(state / "state.duckdb")],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        status, _, body = call(port, "/api/v1/resources")
        assert status == 503 and "in use by another process" in json.loads(body)["detail"]
    finally:
        holder.stdin.close()
        holder.wait(timeout=10)
    assert call(port, "/api/v1/resources")[0] == 200
