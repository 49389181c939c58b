"""The operator stack against a real local Airflow-like HTTP server (tests/fakes/airflow.py)."""
from __future__ import annotations

import socket
import time

import pytest

from reconciler.core.resources import normalise, validate_document
from reconciler.stacks.base import JobContext
from reconciler.stacks.operator import OperatorStack
from tests.fakes.airflow import FakeAirflow

TOKEN = "airflow-secret-token-42"


class Log(list):
    def __call__(self, line: str) -> None:
        self.append(line)


def operator_document(base_url: str, *, cancel: bool = True, poll_interval: str = "50ms") -> dict:
    """The SPEC's airflow operator, validated and normalised as the runner receives it."""
    section = {
        "base_url": base_url,
        "auth": {"bearer": {"secret": "airflow-token"}},
        "create": {"method": "POST", "path": "/dags/{{ spec.dag_id }}/dagRuns",
                   "body": {"conf": "{{ spec.conf }}", "note": "run {{ run }} of {{ workflow }}/{{ job }}"},
                   "run_id": "dag_run_id"},
        "status": {"method": "GET", "path": "/dags/{{ spec.dag_id }}/dagRuns/{{ run_id }}", "state": "state"},
        "states": {"queued": "pending", "running": "running", "success": "succeeded", "failed": "failed"},
        "poll_interval": poll_interval,
        "schema": {"type": "object", "required": ["dag_id"],
                   "properties": {"dag_id": {"type": "string"}, "conf": {"type": "object", "default": {}}}},
    }
    if cancel:
        section["cancel"] = {"method": "PATCH", "path": "/dags/{{ spec.dag_id }}/dagRuns/{{ run_id }}",
                             "body": {"state": "failed"}}
    model, problems = validate_document({"version": "v1", "type": "operator", "name": "airflow", "operator": section})
    assert not problems, problems
    return normalise(model)


def make_ctx(tmp_path, document: dict, spec: dict, *, timeout: float | None = 20.0) -> JobContext:
    return JobContext(
        workflow="nightly", workflow_id="workflow:payments/nightly", workspace="payments", job="trigger",
        stack="operator:airflow", spec=spec, run_id="run-0007", attempt=1, commit=None, state_dir=tmp_path,
        repo_dir=tmp_path, job_dir=tmp_path / "job", run_dir=tmp_path / "work", lake=None, depots={}, environ={},
        runtime_spec=document, runtime_secrets={"airflow-token": TOKEN}, log=Log(),
        deadline=None if timeout is None else time.monotonic() + timeout)


@pytest.fixture
def airflow():
    with FakeAirflow(token=TOKEN, polls=3) as server:
        yield server


def test_run_succeeds_and_sends_the_bearer_token(tmp_path, airflow):
    ctx = make_ctx(tmp_path, operator_document(airflow.url), {"dag_id": "ok", "conf": {"day": "2026-01-05", "n": 3}})
    result = OperatorStack().run(ctx)
    assert result.ok, result.message
    [create] = airflow.requests_with("POST")
    [run_id] = airflow.runs
    assert result.external_id == run_id
    assert result.message == f"operator 'airflow': run {run_id} succeeded"
    # a body value that is one expression keeps its JSON type; mixed text is rendered as text
    assert create.body == {"conf": {"day": "2026-01-05", "n": 3}, "note": "run run-0007 of nightly/trigger"}
    assert create.path == "/api/v1/dags/ok/dagRuns"
    assert all(r.headers["Authorization"] == f"Bearer {TOKEN}" for r in airflow.requests)
    assert airflow.runs[run_id].history == ["queued", "running", "success"]
    assert [r.path for r in airflow.requests_with("GET")] == [f"/api/v1/dags/ok/dagRuns/{run_id}"] * 3
    assert not airflow.requests_with("PATCH")
    assert TOKEN not in "\n".join(ctx.log) and TOKEN not in result.message
    assert f"operator 'airflow': run {run_id} is queued (pending)" in ctx.log


def test_schema_default_fills_the_body(tmp_path, airflow):
    ctx = make_ctx(tmp_path, operator_document(airflow.url), {"dag_id": "ok"})
    assert OperatorStack("airflow").run(ctx).ok
    assert airflow.requests_with("POST")[0].body["conf"] == {}


def test_failed_run_fails_the_job(tmp_path, airflow):
    ctx = make_ctx(tmp_path, operator_document(airflow.url), {"dag_id": "fails"})
    result = OperatorStack().run(ctx)
    assert not result.ok and result.retryable
    assert result.external_id is not None
    assert result.message == f"operator 'airflow': run {result.external_id} failed (external state 'failed')"


def test_unknown_external_state_is_logged_once_and_polling_goes_on(tmp_path, airflow):
    ctx = make_ctx(tmp_path, operator_document(airflow.url), {"dag_id": "retrying"})
    result = OperatorStack().run(ctx)
    assert result.ok, result.message
    unmapped = [line for line in ctx.log if "up_for_retry" in line]
    assert len(unmapped) == 1 and "`states` does not map" in unmapped[0]
    assert airflow.runs[result.external_id].history == ["up_for_retry", "up_for_retry", "success"]


def test_timeout_sends_cancel(tmp_path, airflow):
    ctx = make_ctx(tmp_path, operator_document(airflow.url), {"dag_id": "slow"}, timeout=0.4)
    result = OperatorStack().run(ctx)
    assert not result.ok
    assert result.message.startswith("operator 'airflow': timed out after ")
    assert result.message.endswith(f"cancel sent to run {result.external_id}")
    [patch] = airflow.requests_with("PATCH")
    assert patch.body == {"state": "failed"} and patch.path.endswith(result.external_id)
    assert airflow.runs[result.external_id].forced_state == "failed"


def test_cancel_event_stops_polling(tmp_path, airflow):
    ctx = make_ctx(tmp_path, operator_document(airflow.url), {"dag_id": "slow"}, timeout=None)
    lines = Log()

    def log(line):  # stop the run once the engine says it is running
        lines.append(line)
        if "is running" in line:
            ctx.cancel.set()

    ctx.log = log
    result = OperatorStack().run(ctx)
    assert not result.ok and not result.retryable
    assert result.message == f"operator 'airflow': cancelled; cancel sent to run {result.external_id}"


def test_timeout_without_a_cancel_call_says_the_run_may_go_on(tmp_path, airflow):
    ctx = make_ctx(tmp_path, operator_document(airflow.url, cancel=False), {"dag_id": "slow"}, timeout=0.3)
    result = OperatorStack().run(ctx)
    assert not result.ok and "may still be running" in result.message
    assert not airflow.requests_with("PATCH")


def test_server_error_is_retryable(tmp_path, airflow):
    ctx = make_ctx(tmp_path, operator_document(airflow.url), {"dag_id": "error500"})
    result = OperatorStack().run(ctx)
    assert not result.ok and result.retryable
    assert result.message.startswith("operator 'airflow': POST /dags/error500/dagRuns answered 500: ")
    assert "scheduler unavailable" in result.message


def test_client_error_is_not_retryable(tmp_path, airflow):
    ctx = make_ctx(tmp_path, operator_document(airflow.url), {"dag_id": "no-such-dag"})
    result = OperatorStack().run(ctx)
    assert not result.ok and not result.retryable
    assert result.message.startswith("operator 'airflow': POST /dags/no-such-dag/dagRuns answered 404: ")
    assert "DAG with dag_id: 'no-such-dag' not found" in result.message


def test_wrong_token_is_401_and_never_shown(tmp_path, airflow):
    ctx = make_ctx(tmp_path, operator_document(airflow.url), {"dag_id": "ok"})
    ctx.runtime_secrets = {"airflow-token": "wrong-token-value"}
    result = OperatorStack().run(ctx)
    assert not result.ok and not result.retryable
    assert "answered 401" in result.message and "check the operator's auth secret" in result.message
    assert "wrong-token-value" not in result.message + "\n".join(ctx.log)


def test_unreachable_engine_is_retryable(tmp_path):
    with socket.socket() as sock:  # a port that was free a moment ago and has no listener now
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    ctx = make_ctx(tmp_path, operator_document(f"http://127.0.0.1:{port}/api/v1"), {"dag_id": "ok"})
    result = OperatorStack().run(ctx)
    assert not result.ok and result.retryable
    assert result.message == f"operator 'airflow': cannot reach http://127.0.0.1:{port}: Connection refused"


def test_template_errors_fail_before_anything_is_created(tmp_path, airflow):
    document = operator_document(airflow.url)
    document["operator"]["status"]["path"] = "/dags/{{ spec.dag }}/dagRuns/{{ run_id }}"
    ctx = make_ctx(tmp_path, document, {"dag_id": "ok"})
    result = OperatorStack().run(ctx)
    assert not result.ok and not result.retryable
    assert result.message == ("operator 'airflow': cannot render status.path '/dags/{{ spec.dag }}/dagRuns/"
                              "{{ run_id }}': 'dict object' has no attribute 'dag'")
    assert airflow.requests == []


def test_missing_secret_value(tmp_path, airflow):
    ctx = make_ctx(tmp_path, operator_document(airflow.url), {"dag_id": "ok"})
    ctx.runtime_secrets = {}
    result = OperatorStack().run(ctx)
    assert not result.ok and not result.retryable
    assert "secret 'airflow-token' was not resolved" in result.message
    assert airflow.requests == []


def test_spec_is_checked_against_the_operator_schema(tmp_path, airflow):
    ctx = make_ctx(tmp_path, operator_document(airflow.url), {"conf": {}})
    result = OperatorStack().run(ctx)
    assert not result.ok and "'dag_id' is a required property" in result.message
    assert airflow.requests == []
