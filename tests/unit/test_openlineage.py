"""OpenLineage events of workflow runs and jobs: sent to a file and to a real HTTP server, and checked
against the published OpenLineage JSON Schemas (the core RunEvent and each facet's own schema)."""
from __future__ import annotations

import json
import socket
import threading
import uuid
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from jsonschema import Draft202012Validator, FormatChecker
from referencing import Registry, Resource

from reconciler.core.diagnostics import UserError
from reconciler.lineage.openlineage import (
    JobInfo,
    LineageEmitter,
    OpenLineageConfig,
    RunInfo,
    config_from_dict,
    config_from_env,
    dataset_name,
    job_run_id,
    openlineage_run_id,
)
from reconciler.stacks.base import CheckResult, JobResult, TableWritten

SCHEMA_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "schemas" / "openlineage"
CORE_ID = "https://openlineage.io/spec/2-0-2/OpenLineage.json"
# facet key -> the file of its own schema (each schema's root has that key as its one property)
FACET_FILES = {
    "schema": "SchemaDatasetFacet.json",
    "columnLineage": "ColumnLineageDatasetFacet.json",
    "dataQualityAssertions": "DataQualityAssertionsDatasetFacet.json",
    "errorMessage": "ErrorMessageRunFacet.json",
    "sql": "SQLJobFacet.json",
    "parent": "ParentRunFacet.json",
    "documentation": "DocumentationDatasetFacet.json",
    "ownership": "OwnershipDatasetFacet.json",
    "jobType": "JobTypeJobFacet.json",
}

SOURCE = "depot://raw-transactions/transactions"
VALID = "lake://payments/valid"
SQL = "SELECT id, amount + fee AS amount FROM transactions"
T0 = "2026-01-01T00:00:00+00:00"


# ---------------------------------------------------------------------------- schema validation

def _format_checker() -> FormatChecker:
    # jsonschema checks "date-time" and "uri" only with optional packages that are not installed;
    # without these the two formats would pass unchecked.
    checker = FormatChecker()

    @checker.checks("date-time", raises=ValueError)
    def is_datetime(value):
        if not isinstance(value, str):
            return True
        return "T" in value.upper() and datetime.fromisoformat(value).tzinfo is not None

    @checker.checks("uri", raises=ValueError)
    def is_uri(value):
        if not isinstance(value, str):
            return True
        parts = urlsplit(value)
        return bool(parts.scheme) and bool(parts.netloc or parts.path)

    return checker


class OpenLineageSchemas:
    def __init__(self, folder: Path):
        schemas = [json.loads(p.read_text()) for p in sorted(folder.rglob("*.json"))]
        self.count = len(schemas)
        registry = Registry().with_resources([(s["$id"], Resource.from_contents(s)) for s in schemas])
        checker = _format_checker()
        self.run_event = Draft202012Validator({"$ref": f"{CORE_ID}#/$defs/RunEvent"}, registry=registry,
                                              format_checker=checker)
        self.facets = {}
        self.facet_ids = {}
        for key, file in FACET_FILES.items():
            schema = json.loads((folder / "facets" / file).read_text())
            self.facets[key] = Draft202012Validator(schema, registry=registry, format_checker=checker)
            self.facet_ids[key] = schema["$id"]

    def problems(self, event: dict) -> list[str]:
        """Every schema violation of `event`, as readable lines (empty when valid)."""
        found = [f"RunEvent {'/'.join(map(str, e.absolute_path))}: {e.message}"
                 for e in self.run_event.iter_errors(event)]
        for where, facets in facet_groups(event):
            for key, facet in facets.items():
                if key == "tags":
                    found += client_tags_problems(where, facet)
                    continue
                if key not in self.facets:
                    found.append(f"{where}.{key}: no stored schema for this facet")
                    continue
                found += [f"{where}.{key} {'/'.join(map(str, e.absolute_path))}: {e.message}"
                          for e in self.facets[key].iter_errors({key: facet})]
                if not facet.get("_schemaURL", "").startswith(self.facet_ids[key] + "#"):
                    found.append(f"{where}.{key}: _schemaURL {facet.get('_schemaURL')} is not {self.facet_ids[key]}")
        return found


def facet_groups(event: dict):
    yield "run.facets", event["run"].get("facets") or {}
    yield "job.facets", event["job"].get("facets") or {}
    for i, ds in enumerate(event.get("inputs") or []):
        yield f"inputs[{i}].facets", ds.get("facets") or {}
        yield f"inputs[{i}].inputFacets", ds.get("inputFacets") or {}
    for i, ds in enumerate(event.get("outputs") or []):
        yield f"outputs[{i}].facets", ds.get("facets") or {}
        yield f"outputs[{i}].outputFacets", ds.get("outputFacets") or {}


def client_tags_problems(where: str, facet: dict) -> list[str]:
    # openlineage-python adds a TagsRunFacet (its version) to every run; that facet's schema is
    # not among the stored files, so its documented shape is checked here by hand.
    if where != "run.facets":
        return [f"{where}.tags: unexpected"]
    tags = facet.get("tags")
    ok = (facet.get("_schemaURL", "").startswith("https://openlineage.io/spec/facets/1-0-0/TagsRunFacet.json#")
          and isinstance(tags, list) and tags
          and all(isinstance(t, dict) and isinstance(t.get("key"), str) and isinstance(t.get("value"), str)
                  for t in tags))
    return [] if ok else [f"{where}.tags: not a TagsRunFacet: {facet}"]


@pytest.fixture(scope="module")
def schemas() -> OpenLineageSchemas:
    if not (SCHEMA_DIR / "OpenLineage.json").is_file():
        pytest.skip(f"OpenLineage JSON Schemas not found at {SCHEMA_DIR} (offline copies in shared/schemas)")
    loaded = OpenLineageSchemas(SCHEMA_DIR)
    assert loaded.count == 1 + len(FACET_FILES)
    return loaded


def assert_valid(schemas: OpenLineageSchemas, events: list[dict]) -> None:
    assert events
    for event in events:
        problems = schemas.problems(event)
        assert not problems, f"{event['eventType']} {event['job']['name']}:\n" + "\n".join(problems)


# ---------------------------------------------------------------------------- the scenario

RUN = RunInfo(run_id="20260101T000000Z-daily-0001", workflow_id="workflow:payments/daily", workflow="daily",
              workspace="payments", commit="a" * 40, started_at=T0, ended_at="2026-01-01T00:05:00+00:00")


def sql_job() -> tuple[JobInfo, JobResult]:
    job = JobInfo(name="clean", stack="sql", run_id=job_run_id(RUN.run_id, "clean"),
                  started_at="2026-01-01T00:00:01+00:00", ended_at="2026-01-01T00:00:09+00:00",
                  inputs=[SOURCE], outputs=[VALID])
    result = JobResult(
        ok=True, rows_in=10, rows_out=8, inputs=[SOURCE],
        outputs=[TableWritten(VALID, [("id", "BIGINT"), ("amount", "DECIMAL(18,2)")], 8)],
        column_lineage={VALID: {"id": [(SOURCE, "id")], "amount": [(SOURCE, "amount"), (SOURCE, "fee")]}},
        sql=SQL)
    return job, result


def quality_job() -> tuple[JobInfo, JobResult]:
    job = JobInfo(name="check", stack="quality", run_id=str(uuid.uuid4()),
                  started_at="2026-01-01T00:00:10+00:00", ended_at="2026-01-01T00:00:11+00:00", inputs=[VALID])
    result = JobResult(ok=True, checks=[
        CheckResult(name="not_null(id)", check="not_null", dataset=VALID, severity="error", passed=True,
                    columns=["id"]),
        CheckResult(name="unique(id, amount)", check="unique", dataset=VALID, severity="warn", passed=False,
                    failing_rows=2, message="2 duplicate rows", columns=["id", "amount"]),
    ])
    return job, result


def failing_job() -> tuple[JobInfo, JobResult]:
    job = JobInfo(name="publish", stack="shell", run_id=job_run_id(RUN.run_id, "publish", attempt=1),
                  inputs=[VALID])
    return job, JobResult(ok=False, message="command exited with code 3", retryable=False)


def emit_scenario(emitter: LineageEmitter, run_ok: bool) -> None:
    emitter.run_started(RUN)
    for job, result in (sql_job(), quality_job(), failing_job()):
        emitter.job_started(RUN, job)
        emitter.job_finished(RUN, job, result)
    emitter.run_finished(RUN, ok=run_ok, error=None if run_ok else "job 'publish' failed")


def by_job(events: list[dict]) -> dict[str, list[dict]]:
    grouped: dict[str, list[dict]] = {}
    for e in events:
        grouped.setdefault(e["job"]["name"], []).append(e)
    return grouped


def check_scenario(events: list[dict], run_ok: bool) -> None:
    """What the scenario's events must say, whatever the transport."""
    assert len(events) == 8
    jobs = by_job(events)
    workflow_run_id = openlineage_run_id(RUN.run_id)
    assert workflow_run_id != RUN.run_id and uuid.UUID(workflow_run_id).version == 5

    # the workflow run: START first, COMPLETE or FAIL last, as a parent job named WS.WORKFLOW
    wf = jobs["payments.daily"]
    assert [e["eventType"] for e in wf] == ["START", "COMPLETE" if run_ok else "FAIL"]
    assert events[0] is wf[0] and events[-1] is wf[1]
    assert {e["run"]["runId"] for e in wf} == {workflow_run_id}
    assert wf[0]["eventTime"] == T0
    assert wf[0]["job"]["facets"]["jobType"] == {**wf[0]["job"]["facets"]["jobType"], "processingType": "BATCH",
                                                 "integration": "RECONCILER", "jobType": "WORKFLOW"}
    if run_ok:
        assert "errorMessage" not in wf[1]["run"]["facets"]
    else:
        assert wf[1]["run"]["facets"]["errorMessage"]["message"] == "job 'publish' failed"
        assert wf[1]["run"]["facets"]["errorMessage"]["programmingLanguage"] == "python"

    # every job run points at the workflow run; each job run has its own runId
    job_events = [e for e in events if e["job"]["name"] != "payments.daily"]
    for e in job_events:
        parent = e["run"]["facets"]["parent"]
        assert parent["run"]["runId"] == workflow_run_id
        assert parent["job"] == {"namespace": "reconciler", "name": "payments.daily", "facets": {}}
        assert parent["root"]["run"]["runId"] == workflow_run_id
        assert e["job"]["namespace"] == "reconciler"
        assert e["job"]["facets"]["jobType"]["jobType"] == "JOB"
    assert len({e["run"]["runId"] for e in job_events}) == 3

    # the sql job: schema and column lineage on its output, its SQL on the job
    clean = jobs["payments.daily.clean"]
    assert [e["eventType"] for e in clean] == ["START", "COMPLETE"]
    assert clean[0]["run"]["runId"] == clean[1]["run"]["runId"] == job_run_id(RUN.run_id, "clean")
    assert [(d["namespace"], d["name"]) for d in clean[0]["inputs"]] == [("depot://raw-transactions", "transactions")]
    assert [(d["namespace"], d["name"]) for d in clean[0]["outputs"]] == [("lake", "payments.valid")]
    done = clean[1]
    assert done["job"]["facets"]["sql"]["query"] == SQL
    assert done["job"]["facets"]["sql"]["dialect"] == "duckdb"
    assert "errorMessage" not in done["run"]["facets"]
    (out,) = done["outputs"]
    assert (out["namespace"], out["name"]) == ("lake", "payments.valid")
    assert out["facets"]["schema"]["fields"] == [
        {"name": "id", "type": "BIGINT", "ordinal_position": 1, "fields": []},
        {"name": "amount", "type": "DECIMAL(18,2)", "ordinal_position": 2, "fields": []}]
    lineage = out["facets"]["columnLineage"]["fields"]
    assert set(lineage) == {"id", "amount"}
    assert [(f["namespace"], f["name"], f["field"]) for f in lineage["amount"]["inputFields"]] == [
        ("depot://raw-transactions", "transactions", "amount"), ("depot://raw-transactions", "transactions", "fee")]

    # the quality job: its assertions are an input facet of the checked dataset
    check = jobs["payments.daily.check"]
    assert [e["eventType"] for e in check] == ["START", "COMPLETE"]
    (checked,) = check[1]["inputs"]
    assert (checked["namespace"], checked["name"]) == ("lake", "payments.valid")
    assertions = checked["inputFacets"]["dataQualityAssertions"]["assertions"]
    assert [(a["assertion"], a["success"], a.get("column"), a["severity"]) for a in assertions] == [
        ("not_null", True, "id", "error"), ("unique", False, None, "warn")]
    assert assertions[1]["params"] == {"columns": ["id", "amount"], "failing_rows": 2}
    assert "outputs" not in check[1] or check[1]["outputs"] == []
    assert "dataQualityAssertions" not in (checked.get("facets") or {})

    # the failing job: START, then FAIL with the stack's message
    publish = jobs["payments.daily.publish"]
    assert [e["eventType"] for e in publish] == ["START", "FAIL"]
    error = publish[1]["run"]["facets"]["errorMessage"]
    assert error["message"] == "command exited with code 3" and error["programmingLanguage"] == "python"


# ---------------------------------------------------------------------------- a real HTTP endpoint

class LineageServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), LineageHandler)
        self.requests: list[dict] = []
        self.status = 201
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class LineageHandler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        with self.server.lock:
            self.server.requests.append({"path": self.path, "headers": dict(self.headers),
                                         "body": json.loads(body)})
        self.send_response(self.server.status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):  # keep test output quiet
        pass


@pytest.fixture
def server():
    srv = LineageServer()
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()
    thread.join()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------- tests: emission

def test_file_transport_appends_one_valid_event_per_line(tmp_path, schemas):
    path = tmp_path / "lineage" / "events.jsonl"  # the folder is created on demand
    emitter = LineageEmitter(config_from_dict({"transport": "file", "path": str(path)}))
    emit_scenario(emitter, run_ok=False)

    lines = path.read_text().splitlines()
    events = [json.loads(line) for line in lines]
    assert emitter.failures == 0
    assert events == list(emitter.events)
    check_scenario(events, run_ok=False)
    assert_valid(schemas, events)

    # a second emitter on the same file appends; nothing is overwritten
    LineageEmitter(config_from_dict({"transport": "file", "path": str(path)})).run_started(RUN)
    assert len(path.read_text().splitlines()) == 9


def test_http_transport_posts_valid_events_to_a_real_server(server, schemas):
    emitter = LineageEmitter(config_from_dict({"transport": "http", "url": server.url, "api_key": "s3cret",
                                               "timeout": 2}))
    emit_scenario(emitter, run_ok=True)

    assert emitter.failures == 0
    assert [r["path"] for r in server.requests] == ["/api/v1/lineage"] * 8
    assert all(r["headers"]["Authorization"] == "Bearer s3cret" for r in server.requests)
    assert all(r["headers"]["Content-Type"] == "application/json" for r in server.requests)
    events = [r["body"] for r in server.requests]
    assert events == list(emitter.events)
    check_scenario(events, run_ok=True)
    assert_valid(schemas, events)


def test_validators_reject_broken_events(tmp_path, schemas):
    """The checks above can fail: a broken event or facet is reported."""
    emitter = LineageEmitter(config_from_dict({"transport": "file", "path": str(tmp_path / "e.jsonl")}))
    emit_scenario(emitter, run_ok=False)
    events = list(emitter.events)
    assert_valid(schemas, events)

    quality_done = by_job(events)["payments.daily.check"][1]
    del quality_done["inputs"][0]["inputFacets"]["dataQualityAssertions"]["assertions"][0]["success"]
    assert any("dataQualityAssertions" in p and "success" in p for p in schemas.problems(quality_done))

    start = json.loads(json.dumps(events[0]))
    start["run"]["runId"] = "run-1"
    start["eventTime"] = "yesterday"
    problems = schemas.problems(start)
    assert any("runId" in p for p in problems) and any("eventTime" in p for p in problems)

    failed = by_job(events)["payments.daily.publish"][1]
    failed["run"]["facets"]["errorMessage"].pop("programmingLanguage")
    failed["job"]["facets"]["mystery"] = {"_producer": "urn:x", "_schemaURL": "urn:y"}
    problems = schemas.problems(failed)
    assert any("errorMessage" in p and "programmingLanguage" in p for p in problems)
    assert any("mystery: no stored schema" in p for p in problems)


def test_endpoint_down_never_raises_and_counts_failures(caplog):
    emitter = LineageEmitter(config_from_dict({"transport": "http", "url": f"http://127.0.0.1:{closed_port()}",
                                               "timeout": 1}))
    with caplog.at_level("WARNING", logger="reconciler.lineage.openlineage"):
        emit_scenario(emitter, run_ok=False)
    assert emitter.failures == 8
    assert len(emitter.events) == 8  # built all the same, for inspection
    assert any("could not send START" in r.getMessage() for r in caplog.records)
    assert all(r.levelname == "WARNING" for r in caplog.records)


def test_server_errors_pause_sending_but_refused_events_do_not(server):
    server.status = 503  # overloaded: one retry, then events are dropped for a while
    emitter = LineageEmitter(config_from_dict({"url": server.url, "timeout": 2}))
    assert emitter.run_started(RUN) is False
    assert emitter.job_started(RUN, sql_job()[0]) is False
    assert emitter.run_finished(RUN, ok=True) is False
    assert emitter.failures == 3
    assert len(server.requests) == 2  # the first event and its one retry; the rest were dropped

    server.requests.clear()
    server.status = 400  # this event is refused: no pause, the next one is tried
    emitter = LineageEmitter(config_from_dict({"url": server.url, "timeout": 2}))
    emitter.run_started(RUN)
    emitter.run_finished(RUN, ok=True)
    assert emitter.failures == 2
    assert len(server.requests) == 2


def test_unwritable_file_and_broken_transport_count_failures(tmp_path):
    folder = tmp_path / "a-directory"
    folder.mkdir()
    emitter = LineageEmitter(config_from_dict({"transport": "file", "path": str(folder)}))
    assert emitter.run_started(RUN) is False
    assert emitter.failures == 1

    broken = LineageEmitter(OpenLineageConfig("http", url="not a url"))  # bypasses config checks
    broken.run_started(RUN)
    broken.run_finished(RUN, ok=True)
    assert broken.failures == 2


def test_transport_none_emits_nothing():
    emitter = LineageEmitter(config_from_dict(None))
    assert not emitter.enabled
    assert emitter.run_started(RUN) is False
    emitter.job_finished(RUN, failing_job()[0], failing_job()[1])
    assert emitter.failures == 0 and len(emitter.events) == 0


def test_cancelled_run_and_job_abort_and_times_default_to_utc(tmp_path):
    emitter = LineageEmitter(config_from_dict({"transport": "file", "path": str(tmp_path / "e.jsonl")}))
    run = RunInfo(run_id=str(uuid.uuid4()), workflow_id="workflow:payments/daily", workflow="daily",
                  workspace="payments", started_at=datetime(2026, 1, 1, 12, 0))
    job, _ = sql_job()
    emitter.run_started(run)
    emitter.job_finished(run, job, JobResult(ok=False, message="stopped"), cancelled=True)
    emitter.run_finished(run, ok=False, cancelled=True)
    start, job_end, run_end = emitter.events
    assert start["eventTime"] == "2026-01-01T12:00:00+00:00"
    assert start["run"]["runId"] == run.run_id  # a UUID run id is used as it is
    assert job_end["eventType"] == run_end["eventType"] == "ABORT"
    assert job_end["run"]["facets"]["errorMessage"]["message"] == "stopped"
    assert datetime.fromisoformat(run_end["eventTime"]).tzinfo is not None


def test_events_from_parallel_jobs_stay_whole_lines(tmp_path):
    path = tmp_path / "e.jsonl"
    emitter = LineageEmitter(config_from_dict({"transport": "file", "path": str(path)}))
    job, result = sql_job()
    result.sql = "SELECT " + ", ".join(f"c{i}" for i in range(3000))  # lines far longer than a write buffer

    def work(i):
        one = JobInfo(name=f"j{i}", stack="sql", run_id=job_run_id(RUN.run_id, f"j{i}"), outputs=[VALID])
        for _ in range(5):
            emitter.job_finished(RUN, one, result)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    events = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(events) == 30 and emitter.failures == 0
    assert len(emitter.events) == 30


# ---------------------------------------------------------------------------- tests: names and ids

def test_dataset_names_from_addresses():
    assert dataset_name("lake://payments/valid") == ("lake", "payments.valid")
    assert dataset_name("depot://raw-transactions/transactions") == ("depot://raw-transactions", "transactions")
    assert dataset_name("depot://files/2026/01/a.csv") == ("depot://files", "2026/01/a.csv")


def test_run_ids_are_uuids():
    u = str(uuid.uuid4())
    assert openlineage_run_id(u) == u
    assert openlineage_run_id(u.upper()) == u
    derived = openlineage_run_id("20260101-daily-1")
    assert derived == openlineage_run_id("20260101-daily-1") != openlineage_run_id("20260101-daily-2")
    assert uuid.UUID(derived).version == 5
    assert job_run_id("r", "a") == job_run_id("r", "a") != job_run_id("r", "b")
    assert job_run_id("r", "a", attempt=1) != job_run_id("r", "a", attempt=2) != job_run_id("r", "a")


# ---------------------------------------------------------------------------- tests: configuration

def test_config_from_dict():
    assert config_from_dict(None).transport == "none"
    assert config_from_dict({}).transport == "none"
    http = config_from_dict({"transport": "http", "url": "http://127.0.0.1:5000"})
    assert (http.transport, http.url, http.namespace, http.timeout, http.endpoint) == (
        "http", "http://127.0.0.1:5000", "reconciler", 5.0, "api/v1/lineage")
    file = config_from_dict({"transport": "file", "path": "/tmp/ol.jsonl", "namespace": "prod"})
    assert (file.transport, file.path, file.namespace) == ("file", "/tmp/ol.jsonl", "prod")
    assert config_from_dict({"url": "https://lineage.example.com"}).transport == "http"
    assert config_from_dict({"transport": "none", "url": "http://x"}).transport == "none"


@pytest.mark.parametrize("section, key", [
    ("not a mapping", "openlineage:"),
    ({"transport": "kafka"}, "openlineage.transport"),
    ({"transport": "http"}, "openlineage.url"),
    ({"transport": "http", "url": "ftp://host/x"}, "openlineage.url"),
    ({"transport": "http", "url": "http://h", "path": "/tmp/x"}, "openlineage.path"),
    ({"transport": "file"}, "openlineage.path"),
    ({"transport": "file", "path": "s3://bucket/x"}, "openlineage.path"),
    ({"transport": "http", "url": "http://h", "timeout": 0}, "openlineage.timeout"),
    ({"transport": "http", "url": "http://h", "timeout": "soon"}, "openlineage.timeout"),
    ({"transport": "http", "url": "http://h", "namespace": ""}, "openlineage.namespace"),
    ({"transport": "http", "url": "http://h", "bogus": 1}, "openlineage.bogus"),
    ({"transport": "http", "url": "http://h", "api_key_file": "/nonexistent/key"}, "openlineage.api_key_file"),
])
def test_bad_config_names_the_key(section, key):
    with pytest.raises(UserError) as caught:
        config_from_dict(section)
    assert key in caught.value.message


def test_api_key_file_is_read_and_kept_out_of_repr(tmp_path):
    key_file = tmp_path / "key"
    key_file.write_text("s3cret\n")
    config = config_from_dict({"transport": "http", "url": "http://h", "api_key_file": str(key_file)})
    assert config.api_key == "s3cret"
    assert "s3cret" not in repr(config)


def test_config_from_env():
    assert config_from_env({}).transport == "none"
    assert config_from_env({"RECONCILER_OPENLINEAGE_URL": ""}).transport == "none"
    http = config_from_env({"RECONCILER_OPENLINEAGE_URL": "http://127.0.0.1:5000",
                            "RECONCILER_OPENLINEAGE_TIMEOUT": "2.5", "RECONCILER_OPENLINEAGE_NAMESPACE": "dev"})
    assert (http.transport, http.url, http.timeout, http.namespace) == ("http", "http://127.0.0.1:5000", 2.5, "dev")
    file = config_from_env({"RECONCILER_OPENLINEAGE_FILE": "/tmp/ol.jsonl"})
    assert (file.transport, file.path) == ("file", "/tmp/ol.jsonl")
    with pytest.raises(UserError, match="RECONCILER_OPENLINEAGE_URL and RECONCILER_OPENLINEAGE_FILE"):
        config_from_env({"RECONCILER_OPENLINEAGE_URL": "http://h", "RECONCILER_OPENLINEAGE_FILE": "/tmp/x"})
    with pytest.raises(UserError, match="RECONCILER_OPENLINEAGE_TIMEOUT"):
        config_from_env({"RECONCILER_OPENLINEAGE_URL": "http://h", "RECONCILER_OPENLINEAGE_TIMEOUT": "abc"})
    with pytest.raises(UserError, match="RECONCILER_OPENLINEAGE_URL"):
        config_from_env({"RECONCILER_OPENLINEAGE_URL": "localhost:5000"})
