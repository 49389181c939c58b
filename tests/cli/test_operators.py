"""Custom stacks and operators through the CLI, against a real local Airflow-like HTTP server."""
import pytest

from tests.conftest import free_port, run_cli
from tests.cli import repos
from tests.cli.test_workflows import apply, runs, workflow_doc
from tests.fakes.airflow import FakeAirflow

TOKEN = "airflow-tok-1234567"


def operator_doc(url: str) -> str:
    return f"""
version: v1
type: operator
name: airflow
operator:
  base_url: {url}
  auth: {{bearer: {{secret: airflow-token}}}}
  poll_interval: 50ms
  create: {{method: POST, path: "/dags/{{{{ spec.dag_id }}}}/dagRuns", body: {{conf: "{{{{ spec.conf }}}}"}}, run_id: dag_run_id}}
  status: {{method: GET, path: "/dags/{{{{ spec.dag_id }}}}/dagRuns/{{{{ run_id }}}}", state: state}}
  cancel: {{method: PATCH, path: "/dags/{{{{ spec.dag_id }}}}/dagRuns/{{{{ run_id }}}}", body: {{state: failed}}}}
  states: {{queued: pending, running: running, success: succeeded, failed: failed}}
  schema: {{type: object, required: [dag_id], properties: {{dag_id: {{type: string}}, conf: {{type: object, default: {{}}}}}}}}
---
version: v1
type: secret
name: airflow-token
secret:
  from: {{env: AIRFLOW_TOKEN}}
"""


def job(dag_id: str, timeout: str = "") -> str:
    t = f"      timeout: {timeout}\n" if timeout else ""
    return f"""    - name: external
      operator: airflow
{t}      spec: {{dag_id: {dag_id}, conf: {{day: "2026-11-25"}}}}
"""


@pytest.mark.parametrize("dag_id,timeout,ok,pattern", [
    ("ok", "", True, None),
    ("fails", "", False, r"failed"),
    ("error500", "", False, r"500"),
    ("slow", "2s", False, r"(?i)timed out"),
])
def test_operator_runs_on_the_external_engine(git_repo, state_dir, dag_id, timeout, ok, pattern):
    import re

    with FakeAirflow(token=TOKEN, polls=2) as airflow:
        git_repo.commit(repos.basic(**{"ops.yaml": operator_doc(airflow.url),
                                       "workflows/ext.yaml": workflow_doc(job(dag_id, timeout), name="ext")}))
        r = apply(git_repo, state_dir, env={"AIRFLOW_TOKEN": TOKEN})
        assert (r.code == 0) == ok, r
        (run,) = runs(state_dir, "ext")
        (j,) = run["jobs"]
        assert j["status"] == ("succeeded" if ok else "failed")
        if pattern:
            assert re.search(pattern, j["message"]), j
        creates = airflow.requests_with("POST", f"/dags/{dag_id}/dagRuns")
        assert creates and creates[0].body == {"conf": {"day": "2026-11-25"}}
        assert all(rq.headers.get("Authorization") == f"Bearer {TOKEN}" for rq in airflow.requests)
        if dag_id == "ok":
            assert j["external_id"]
        if dag_id == "slow":
            assert airflow.requests_with("PATCH"), "the slow run was not cancelled"
    logs = run_cli("logs", "ext", "-w", "payments", "--state-dir", state_dir)
    assert TOKEN not in logs.out


def test_operator_endpoint_that_is_down(git_repo, state_dir):
    port = free_port()
    git_repo.commit(repos.basic(**{"ops.yaml": operator_doc(f"http://127.0.0.1:{port}/api/v1"),
                                   "workflows/ext.yaml": workflow_doc(job("ok"), name="ext")}))
    r = apply(git_repo, state_dir, env={"AIRFLOW_TOKEN": TOKEN})
    assert r.code == 1
    (run,) = runs(state_dir, "ext")
    assert "cannot reach" in run["jobs"][0]["message"] and str(port) in run["jobs"][0]["message"]


def test_custom_stack_runs_its_command_template(git_repo, state_dir):
    stack = """
version: v1
type: stack
name: greet
stack:
  command: ["sh", "-c", "echo hello {{ spec.who }} > greeting-{{ spec.who }}.txt"]
  schema:
    type: object
    required: [who]
    properties: {who: {type: string}, times: {type: integer, default: 1}}
"""
    dag = """    - name: hi
      stack: greet
      spec: {who: payments}
"""
    git_repo.commit(repos.basic(**{"stack.yaml": stack, "workflows/greet.yaml": workflow_doc(dag, name="greet")}))
    r = apply(git_repo, state_dir)
    assert r.code == 0, r
    assert (state_dir / "runs" / "payments" / "greeting-payments.txt").read_text() == "hello payments\n"
    # a job spec its custom stack's schema rejects is a validate error, before anything runs
    git_repo.commit({"workflows/greet.yaml": workflow_doc(dag.replace("{who: payments}", "{who: 7}"), name="greet")})
    r = run_cli("validate", "--repo", git_repo.path)
    assert r.code == 1 and "7 is not of type 'string'" in r.out


def test_merge_without_keys_and_foreign_workspace_outputs_are_validate_errors(git_repo):
    merge = workflow_doc("""    - name: m
      stack: sql
      spec:
        inputs: [{name: raw, dataset: "depot://raw/transactions"}]
        steps: [{name: s, sql: "SELECT * FROM raw"}]
        outputs: [{from: s, dataset: "lake://payments/merged", mode: merge}]
""", name="merge")
    foreign = workflow_doc("""    - name: f
      stack: sql
      spec:
        inputs: [{name: raw, dataset: "depot://raw/transactions"}]
        steps: [{name: s, sql: "SELECT * FROM raw"}]
        outputs: [{from: s, dataset: "lake://other/t"}]
""", name="foreign")
    git_repo.commit(repos.basic(**{"workflows/merge.yaml": merge, "workflows/foreign.yaml": foreign,
                                   "ws-other.yaml": "version: v1\ntype: workspace\nname: other\n"}))
    r = run_cli("validate", "--repo", git_repo.path)
    assert r.code == 1
    assert "merge output needs keys" in r.out
    assert "may only write into its own workspace" in r.out
