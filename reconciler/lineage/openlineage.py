"""OpenLineage RunEvents for workflow runs and their jobs, sent with the openlineage-python client.

A workflow run is a parent job named "<workspace>.<workflow>"; each job of the run
is a job named "<workspace>.<workflow>.<job>" whose ParentRunFacet points at the
workflow run. Each run (workflow or job) gets a START and then one of COMPLETE,
FAIL or ABORT.

Transports (openlineage-python 1.54):
- "http": HttpTransport posts each event as JSON to `url` + `endpoint`
  (default "api/v1/lineage", Marquez's path), with a bounded timeout and one retry.
- "file": FileTransport with append=True appends one JSON object per line to `path`.
  (Without append the client writes one new file per event, `<path>-<timestamp>.json`;
  we never use that mode.)
- "none": nothing is built or sent.

Emission never breaks a run: building and sending are wrapped, a failure is logged
at warning level and counted in `failures`. After an HTTP outage (refused, timed
out, 5xx) events are dropped, and counted, for PAUSE_AFTER_OUTAGE seconds, so a
dead endpoint costs a run one timeout, not one per event.
"""
from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable

import requests
from openlineage.client import OpenLineageClient
from openlineage.client.event_v2 import InputDataset, Job, OutputDataset, Run, RunEvent, RunState
from openlineage.client.facet_v2 import (
    column_lineage_dataset,
    data_quality_assertions_dataset,
    error_message_run,
    job_type_job,
    parent_run,
    schema_dataset,
    sql_job,
)
from openlineage.client.serde import Serde
from openlineage.client.transport.file import FileConfig, FileTransport
from openlineage.client.transport.http import ApiKeyTokenProvider, HttpConfig, HttpTransport, TokenProvider

from reconciler.stacks.base import CheckResult, JobResult

log = logging.getLogger(__name__)


def _version() -> str:
    try:
        return metadata.version("reconciler")
    except metadata.PackageNotFoundError:
        return "dev"


PRODUCER = f"urn:reconciler:{_version()}"  # a URI naming the emitter; the project has no public URL yet
INTEGRATION = "RECONCILER"
SQL_DIALECT = "duckdb"
LAKE_NAMESPACE = "lake"
KEEP_EVENTS = 100
PAUSE_AFTER_OUTAGE = 30.0  # seconds during which HTTP events are dropped after the endpoint failed
# Fixed namespace for uuid5: the same reconciler run id always maps to the same OpenLineage runId.
_RUN_ID_NAMESPACE = uuid.UUID("6f1c3a52-57b4-4c55-9d0e-8f0a3b2d7e11")
# One immediate retry for a refused connection or a 502-504; never retry a read timeout (the
# event may have arrived) and never honour Retry-After (it could stall a run for hours).
_HTTP_RETRY = {
    "total": 1, "connect": 1, "read": 0, "status": 1, "other": 0, "backoff_factor": 0.0,
    "status_forcelist": [502, 503, 504], "allowed_methods": ["POST"],
    "respect_retry_after_header": False,
}


from reconciler.lineage.config import (  # noqa: E402,F401  (re-exported: the configuration lives there)
    _CONFIG_KEYS, DEFAULT_ENDPOINT, MAX_TIMEOUT, TRANSPORTS, OpenLineageConfig, config_from_dict, config_from_env)

# ---------------------------------------------------------------------------- what the runner passes

Timestamp = datetime | str | None  # aware datetime or ISO 8601 text; naive values are taken as UTC


@dataclass
class RunInfo:
    run_id: str  # our run id; a non-UUID is mapped to a stable uuid5
    workflow_id: str  # "workflow:WS/NAME"
    workflow: str
    workspace: str
    commit: str | None = None
    started_at: Timestamp = None
    ended_at: Timestamp = None


@dataclass
class JobInfo:
    name: str  # the job's name inside the workflow
    stack: str
    run_id: str  # the job run's id (see job_run_id); a non-UUID is mapped to a stable uuid5
    started_at: Timestamp = None
    ended_at: Timestamp = None
    inputs: list[str] = field(default_factory=list)  # declared dataset addresses read
    outputs: list[str] = field(default_factory=list)  # declared dataset addresses written


def openlineage_run_id(run_id: str) -> str:
    """`run_id` itself when it is a UUID (canonical form), else a stable uuid5 of it."""
    try:
        return str(uuid.UUID(str(run_id)))
    except ValueError:
        return str(uuid.uuid5(_RUN_ID_NAMESPACE, str(run_id)))


def job_run_id(run_id: str, job: str, attempt: int | None = None) -> str:
    """A stable UUID for one job of a workflow run (or one attempt of it, when `attempt` is given)."""
    key = f"{run_id}/{job}" if attempt is None else f"{run_id}/{job}#{attempt}"
    return str(uuid.uuid5(_RUN_ID_NAMESPACE, key))


def dataset_name(address: str) -> tuple[str, str]:
    """(namespace, name) of a dataset address: lake://ws/t -> ("lake", "ws.t"); depot://d/x -> ("depot://d", "x")."""
    scheme, sep, rest = address.partition("://")
    if not sep:
        return "reconciler", address
    first, _, tail = rest.partition("/")
    if scheme == "lake" and tail:
        return LAKE_NAMESPACE, f"{first}.{tail}"
    if tail:
        return f"{scheme}://{first}", tail
    return f"{scheme}://", rest


# ---------------------------------------------------------------------------- the emitter

class LineageEmitter:
    """Builds and sends RunEvents; never raises from its public methods. Safe to share between threads."""

    def __init__(self, config: OpenLineageConfig):
        self.config = config
        self.failures = 0
        self.events: deque[dict] = deque(maxlen=KEEP_EVENTS)  # last events built: sent, failed or dropped
        self._lock = threading.Lock()
        self._paused_until = 0.0
        self._client: OpenLineageClient | None = None
        self._setup_error: str | None = None
        if config.transport != "none":
            try:
                self._client = OpenLineageClient(
                    transport=_make_transport(config),
                    # our facets only: no git facet read from the daemon's own working directory
                    config={"facets": {"source_code_location": {"disabled": True}}},
                )
            except Exception as e:  # a broken transport must not stop the daemon; it counts as failures
                log.warning("OpenLineage: cannot set up the %s transport, events will be dropped: %s",
                            config.transport, e)
                self._setup_error = str(e)

    @property
    def enabled(self) -> bool:
        return self.config.transport != "none"

    # -- workflow runs

    def run_started(self, run: RunInfo) -> bool:
        return self._send("START", f"workflow run {run.run_id}",
                          lambda: self._workflow_event(run, RunState.START, run.started_at))

    def run_finished(self, run: RunInfo, ok: bool, error: str | None = None, *, cancelled: bool = False) -> bool:
        state = RunState.ABORT if cancelled else RunState.COMPLETE if ok else RunState.FAIL
        message = None if ok and not cancelled else (error or ("cancelled" if cancelled else "workflow run failed"))
        return self._send(state.value, f"workflow run {run.run_id}",
                          lambda: self._workflow_event(run, state, run.ended_at, message))

    # -- jobs

    def job_started(self, run: RunInfo, job: JobInfo) -> bool:
        return self._send("START", f"job {job.name} of run {run.run_id}",
                          lambda: self._job_start_event(run, job))

    def job_finished(self, run: RunInfo, job: JobInfo, result: JobResult, *, cancelled: bool = False) -> bool:
        state = RunState.ABORT if cancelled else RunState.COMPLETE if result.ok else RunState.FAIL
        return self._send(state.value, f"job {job.name} of run {run.run_id}",
                          lambda: self._job_end_event(run, job, result, state))

    def close(self) -> None:
        if self._client is not None:
            try:
                self._client.close(timeout=0)
            except Exception as e:  # closing is best effort too
                log.debug("OpenLineage: closing the transport failed: %s", e)

    # -- sending

    def _send(self, what: str, subject: str, build) -> bool:
        if not self.enabled:
            return False
        with self._lock:  # one event at a time: file lines never interleave, events keep their order
            event = None
            try:
                event = build()
                if self._client is None:
                    raise RuntimeError(f"transport not set up: {self._setup_error}")
                if time.monotonic() < self._paused_until:
                    self.failures += 1
                    log.debug("OpenLineage: dropped %s of %s (endpoint recently failed)", what, subject)
                    return False
                self._client.emit(event)  # the client adds its own facets (a "tags" run facet) in place
                return True
            except Exception as e:
                self.failures += 1
                if self.config.transport == "http" and _is_outage(e):
                    self._paused_until = time.monotonic() + PAUSE_AFTER_OUTAGE
                    log.warning("OpenLineage: could not send %s of %s to %s: %s; dropping events for %gs",
                                what, subject, self.config.url, e, PAUSE_AFTER_OUTAGE)
                else:
                    log.warning("OpenLineage: could not emit %s of %s: %s", what, subject, e)
                return False
            finally:
                if event is not None:  # recorded after the client's additions: what was (or would be) sent
                    self._record(event)

    def _record(self, event: RunEvent) -> None:
        try:
            self.events.append(Serde.to_dict(event))
        except Exception as e:  # the in-memory copy is a convenience; never let it fail an emit
            log.debug("OpenLineage: could not keep a copy of an event: %s", e)

    # -- building

    def _workflow_job_name(self, run: RunInfo) -> str:
        return f"{run.workspace}.{run.workflow}"

    def _workflow_event(self, run: RunInfo, state: RunState, at: Timestamp, error: str | None = None) -> RunEvent:
        run_facets = {}
        if error is not None:
            run_facets["errorMessage"] = _error_facet(error)
        return RunEvent(
            eventType=state, eventTime=_iso(at), producer=PRODUCER,
            run=Run(runId=openlineage_run_id(run.run_id), facets=run_facets),
            job=Job(namespace=self.config.namespace, name=self._workflow_job_name(run),
                    facets={"jobType": _job_type("WORKFLOW")}),
            inputs=[], outputs=[],
        )

    def _job_run(self, run: RunInfo, job: JobInfo, extra: dict | None = None) -> Run:
        parent_job = self._workflow_job_name(run)
        parent_id = openlineage_run_id(run.run_id)
        facets = {"parent": parent_run.ParentRunFacet(
            run=parent_run.Run(runId=parent_id),
            job=parent_run.Job(namespace=self.config.namespace, name=parent_job),
            # the workflow run is also the root: nothing schedules workflow runs above it
            root=parent_run.Root(run=parent_run.RootRun(runId=parent_id),
                                 job=parent_run.RootJob(namespace=self.config.namespace, name=parent_job)),
            producer=PRODUCER,
        )}
        facets.update(extra or {})
        return Run(runId=openlineage_run_id(job.run_id), facets=facets)

    def _job(self, run: RunInfo, job: JobInfo, sql: str | None = None) -> Job:
        facets: dict = {"jobType": _job_type("JOB")}
        if sql:
            facets["sql"] = sql_job.SQLJobFacet(query=sql, dialect=SQL_DIALECT, producer=PRODUCER)
        return Job(namespace=self.config.namespace, name=f"{run.workspace}.{run.workflow}.{job.name}",
                   facets=facets)

    def _job_start_event(self, run: RunInfo, job: JobInfo) -> RunEvent:
        return RunEvent(
            eventType=RunState.START, eventTime=_iso(job.started_at), producer=PRODUCER,
            run=self._job_run(run, job), job=self._job(run, job),
            inputs=[InputDataset(*dataset_name(a)) for a in _unique(job.inputs)],
            outputs=[OutputDataset(*dataset_name(a)) for a in _unique(job.outputs)],
        )

    def _job_end_event(self, run: RunInfo, job: JobInfo, result: JobResult, state: RunState) -> RunEvent:
        extra = {}
        if state is not RunState.COMPLETE:
            extra["errorMessage"] = _error_facet(result.message or ("job cancelled" if state is RunState.ABORT
                                                                    else "job failed"))
        return RunEvent(
            eventType=state, eventTime=_iso(job.ended_at), producer=PRODUCER,
            run=self._job_run(run, job, extra), job=self._job(run, job, result.sql),
            inputs=_inputs(job, result), outputs=_outputs(job, result),
        )


# ---------------------------------------------------------------------------- datasets and facets

def _inputs(job: JobInfo, result: JobResult) -> list[InputDataset]:
    lineage_sources = [src for cols in result.column_lineage.values() for fields in cols.values()
                       for src, _ in fields]
    checks: dict[str, list[CheckResult]] = {}
    for check in result.checks:
        checks.setdefault(check.dataset, []).append(check)
    inputs = []
    for address in _unique([*job.inputs, *result.inputs, *lineage_sources, *checks]):
        input_facets = {}
        if address in checks:
            input_facets["dataQualityAssertions"] = data_quality_assertions_dataset.DataQualityAssertionsDatasetFacet(
                assertions=[_assertion(c) for c in checks[address]], producer=PRODUCER)
        inputs.append(InputDataset(*dataset_name(address), inputFacets=input_facets))
    return inputs


def _assertion(check: CheckResult) -> data_quality_assertions_dataset.Assertion:
    # The facet names one column per assertion; a check over several columns is dataset-level,
    # its columns listed in params (we do not know which column failed).
    params: dict[str, Any] = {}
    if len(check.columns) > 1:
        params["columns"] = list(check.columns)
    if check.failing_rows:
        params["failing_rows"] = check.failing_rows
    return data_quality_assertions_dataset.Assertion(
        assertion=check.check, success=check.passed,
        column=check.columns[0] if len(check.columns) == 1 else None,
        severity=check.severity or None, name=check.name or None,
        description=check.message or None, params=params,
    )


def _outputs(job: JobInfo, result: JobResult) -> list[OutputDataset]:
    written = {t.address: t for t in result.outputs}
    outputs = []
    for address in _unique([*written, *result.column_lineage, *job.outputs]):
        facets: dict = {}
        table = written.get(address)
        if table is not None:
            facets["schema"] = schema_dataset.SchemaDatasetFacet(
                fields=[schema_dataset.SchemaDatasetFacetFields(name=n, type=t, ordinal_position=i)
                        for i, (n, t) in enumerate(table.columns, start=1)],
                producer=PRODUCER)
        lineage = result.column_lineage.get(address)
        if lineage:
            facets["columnLineage"] = column_lineage_dataset.ColumnLineageDatasetFacet(
                fields={column: column_lineage_dataset.Fields(inputFields=[
                    column_lineage_dataset.InputField(*dataset_name(src), field=src_column)
                    for src, src_column in sources]) for column, sources in lineage.items()},
                producer=PRODUCER)
        outputs.append(OutputDataset(*dataset_name(address), facets=facets))
    return outputs


def _job_type(job_type: str) -> job_type_job.JobTypeJobFacet:
    return job_type_job.JobTypeJobFacet(processingType="BATCH", integration=INTEGRATION, jobType=job_type,
                                        producer=PRODUCER)


def _error_facet(message: str) -> error_message_run.ErrorMessageRunFacet:
    return error_message_run.ErrorMessageRunFacet(message=message, programmingLanguage="python",
                                                  producer=PRODUCER)


# ---------------------------------------------------------------------------- helpers

def _make_transport(config: OpenLineageConfig):
    if config.transport == "http":
        auth = ApiKeyTokenProvider({"api_key": config.api_key}) if config.api_key else TokenProvider({})
        return HttpTransport(HttpConfig(url=config.url, endpoint=config.endpoint, timeout=config.timeout,
                                        auth=auth, retry=dict(_HTTP_RETRY)))
    if config.transport == "file":
        path = config.path
        if not path.startswith("file://"):
            path = str(Path(path).expanduser())
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        return FileTransport(FileConfig(log_file_path=path, append=True))
    raise ValueError(f"unknown OpenLineage transport {config.transport!r}")


def _is_outage(e: Exception) -> bool:
    """The endpoint is down or overloaded (pause sending), as opposed to refusing this one event."""
    if isinstance(e, (requests.ConnectionError, requests.Timeout, requests.exceptions.RetryError)):
        return True
    response = getattr(e, "response", None)
    return isinstance(e, requests.HTTPError) and response is not None and response.status_code >= 500


def _iso(at: Timestamp) -> str:
    if at is None:
        moment = datetime.now(timezone.utc)
    elif isinstance(at, datetime):
        moment = at
    else:
        moment = datetime.fromisoformat(str(at))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.isoformat()


def _unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))
