"""Operator jobs: run a job on an external engine over its HTTP API (Airflow, ADF, dbt Cloud...).

The operator document says how: `create` starts a run and names the answer's field
holding the external run id, `status` is polled until `states` maps the external
state to succeeded, failed or cancelled, and `cancel` (optional) is called when
the job times out or the run is stopped. Paths, bodies and headers are Jinja2
templates (see custom.py) over spec, job, workflow, workspace, run (our run id)
and, after create, run_id (the external one).

Failures are values: 5xx, 429, timeouts and refused connections are retryable,
other 4xx are not. The auth token goes into the Authorization header only; it is
masked in any answer excerpt we quote.
"""
from __future__ import annotations

import base64
import json
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from http.client import HTTPException
from typing import Any

from reconciler.core.resources.durations import parse_duration

from .base import JobContext, JobResult
from .custom import RenderError, checked_spec, render_text, render_value, section_of
from .process import format_seconds

DEFAULT_POLL_INTERVAL = 2.0
REQUEST_TIMEOUT = 30.0  # seconds for one HTTP call, shortened near the job's deadline
CANCEL_TIMEOUT = 10.0
MAX_POLL_ERRORS = 5  # consecutive transient status failures before the job gives up on the run
_EXCERPT = 300


class OperatorError(Exception):
    def __init__(self, message: str, retryable: bool):
        super().__init__(message)
        self.message = message
        self.retryable = retryable


class OperatorHttp:
    """JSON over HTTP against one operator's base_url, turning every failure into an OperatorError."""

    def __init__(self, label: str, base_url: str, headers: dict[str, str], secrets: list[str]):
        self.label = label
        self.base_url = base_url.rstrip("/")
        self.headers = headers
        self.secrets = [s for s in secrets if s]
        parts = urllib.parse.urlsplit(self.base_url)
        self.origin = f"{parts.scheme}://{parts.netloc}"

    def call(self, method: str, path: str, body: Any, timeout: float) -> Any:
        url = self.base_url + urllib.parse.quote(path, safe="/?&=%:@+,;~!$'()*")
        data = None if body is None else json.dumps(body).encode()
        headers = {"Accept": "application/json", **self.headers}
        if data is not None:
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(url, data=data, method=method, headers=headers)
        what = f"{self.label}: {method} {path}"
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                status, raw = response.status, response.read()
        except urllib.error.HTTPError as exc:
            raw = exc.read() if exc.fp is not None else b""
            hint = "; check the operator's auth secret" if exc.code in (401, 403) else ""
            retryable = exc.code >= 500 or exc.code in (408, 429)
            raise OperatorError(f"{what} answered {exc.code}: {self.excerpt(raw)}{hint}", retryable) from None
        except urllib.error.URLError as exc:
            raise OperatorError(f"{self.label}: cannot reach {self.origin}: {self._reason(exc.reason, timeout)}",
                                True) from None
        except (TimeoutError, socket.timeout, ConnectionError, HTTPException, OSError) as exc:
            raise OperatorError(f"{self.label}: cannot reach {self.origin}: {self._reason(exc, timeout)}",
                                True) from None
        if not raw.strip():
            return None
        try:
            return json.loads(raw)
        except ValueError:
            raise OperatorError(f"{what} answered {status} with a body that is not JSON: {self.excerpt(raw)}",
                                False) from None

    def _reason(self, reason: Any, timeout: float) -> str:
        if isinstance(reason, (TimeoutError, socket.timeout)):
            return f"no answer within {format_seconds(timeout)}"
        if isinstance(reason, OSError) and reason.strerror:
            return reason.strerror
        return self._mask(str(reason)) or type(reason).__name__

    def excerpt(self, raw: bytes) -> str:
        text = " ".join(raw.decode("utf-8", "replace").split())
        text = self._mask(text)
        return (text[:_EXCERPT] + "...") if len(text) > _EXCERPT else (text or "(empty body)")

    def _mask(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "***")
        return text


def dig(document: Any, dotted: str) -> Any:
    """document["a"]["b"] for "a.b" (list items by index); None when any step is missing."""
    for step in dotted.split("."):
        if isinstance(document, dict):
            document = document.get(step)
        elif isinstance(document, list) and step.isdigit() and int(step) < len(document):
            document = document[int(step)]
        else:
            return None
    return document


def _secret_value(ctx: JobContext, ref: dict) -> str:
    name = ref.get("secret")
    qualified = f"{ref['workspace']}/{name}" if ref.get("workspace") else name
    for key in (qualified, name):
        if ctx.runtime_secrets.get(key):
            return ctx.runtime_secrets[key]
    raise OperatorError(f"secret '{qualified}' was not resolved for this job; apply the secret and check its value",
                        False)


class OperatorStack:
    """Runs a job on a `type: operator` resource; the document comes from ctx.runtime_spec unless given here."""

    def __init__(self, name: str | None = None, document: dict | None = None):
        self.name = "operator" if name is None else name if name.startswith("operator:") else f"operator:{name}"
        self.document = document

    def run(self, ctx: JobContext) -> JobResult:
        started = time.monotonic()
        name = (ctx.stack or self.name).removeprefix("operator:")
        label = f"operator '{name}'"
        section = section_of(self.document or ctx.runtime_spec, "operator")
        if not section.get("base_url") or not section.get("create") or not section.get("status"):
            return JobResult(ok=False, message=f"{label} has no base_url/create/status (is it applied?)",
                             retryable=False)
        spec, failure = checked_spec(ctx, section, label, "operator")
        if failure is not None:
            return failure
        variables = {"spec": spec, "job": ctx.job, "workflow": ctx.workflow, "workspace": ctx.workspace,
                     "run": ctx.run_id, "attempt": ctx.attempt}
        try:
            http = self._client(ctx, label, section, variables)
            create = section["create"]
            create_path = render_text(create["path"], variables, "create.path")
            create_body = render_value(create.get("body"), variables, "create.body")
            # the later templates need the external run id; render them once now so a typo fails before
            # anything starts on the external engine
            self._later_calls(section, {**variables, "run_id": "RUN_ID"})
        except RenderError as exc:
            return JobResult(ok=False, message=f"{label}: {exc}", retryable=False)
        except OperatorError as exc:
            return JobResult(ok=False, message=f"{label}: {exc.message}", retryable=exc.retryable)
        if ctx.cancel.is_set():
            return JobResult(ok=False, message=f"{label}: cancelled before the run was created", retryable=False)

        try:
            answer = http.call(create["method"], create_path, create_body, self._timeout(ctx))
        except OperatorError as exc:
            return JobResult(ok=False, message=exc.message, retryable=exc.retryable)
        external_id = dig(answer, create["run_id"])
        if external_id is None or isinstance(external_id, (dict, list)):
            return JobResult(ok=False, retryable=False,
                             message=f"{label}: {create['method']} {create_path} answered without a run id at "
                                     f"'{create['run_id']}': {http.excerpt(json.dumps(answer).encode())}")
        external_id = str(external_id)
        ctx.log(f"{label}: created run {external_id}")
        variables["run_id"] = external_id
        status_call, cancel_call = self._later_calls(section, variables)
        return self._follow(ctx, http, label, section, external_id, status_call, cancel_call, started)

    # ---- parts ------------------------------------------------------------------------------------

    def _client(self, ctx: JobContext, label: str, section: dict, variables: dict) -> OperatorHttp:
        headers = {key: render_text(str(value), variables, f"headers.{key}")
                   for key, value in (section.get("headers") or {}).items()}
        auth = section.get("auth") or {}
        secrets: list[str] = []
        if auth.get("bearer"):
            token = _secret_value(ctx, auth["bearer"])
            headers["Authorization"] = f"Bearer {token}"
            secrets.append(token)
        elif auth.get("basic"):
            password = _secret_value(ctx, auth["basic"]["password"])
            pair = f"{auth['basic']['user']}:{password}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(pair).decode()
            secrets += [password, base64.b64encode(pair).decode()]
        return OperatorHttp(label, section["base_url"], headers, secrets)

    @staticmethod
    def _later_calls(section: dict, variables: dict) -> tuple[tuple, tuple | None]:
        status = section["status"]
        status_call = (status["method"], render_text(status["path"], variables, "status.path"))
        cancel = section.get("cancel")
        cancel_call = None
        if cancel:
            cancel_call = (cancel["method"], render_text(cancel["path"], variables, "cancel.path"),
                           render_value(cancel.get("body"), variables, "cancel.body"))
        return status_call, cancel_call

    @staticmethod
    def _timeout(ctx: JobContext) -> float:
        remaining = ctx.remaining()
        return REQUEST_TIMEOUT if remaining is None else max(0.5, min(REQUEST_TIMEOUT, remaining))

    @staticmethod
    def _poll_interval(section: dict) -> float:
        value = section.get("poll_interval")
        return DEFAULT_POLL_INTERVAL if value in (None, "") else parse_duration(value)

    def _follow(self, ctx: JobContext, http: OperatorHttp, label: str, section: dict, external_id: str,
                status_call: tuple, cancel_call: tuple | None, started: float) -> JobResult:
        states: dict = {str(k): v for k, v in section["states"].items()}
        state_field = section["status"]["state"]
        interval = self._poll_interval(section)
        last, unknown_seen, errors = None, set(), 0

        def result(ok: bool, message: str, retryable: bool = True) -> JobResult:
            return JobResult(ok=ok, message=message, external_id=external_id, retryable=retryable)

        while True:
            if ctx.cancel.is_set() or ctx.timed_out():
                why = "cancelled" if ctx.cancel.is_set() else \
                    f"timed out after {format_seconds(time.monotonic() - started)}"
                note = self._cancel(ctx, http, external_id, cancel_call)
                return result(False, f"{label}: {why}; {note}", retryable=not ctx.cancel.is_set())
            try:
                answer = http.call(*status_call, None, self._timeout(ctx))
            except OperatorError as exc:
                errors += 1
                if not exc.retryable or errors >= MAX_POLL_ERRORS:
                    note = self._cancel(ctx, http, external_id, cancel_call)
                    return result(False, f"{exc.message} (run {external_id}; {note})", exc.retryable)
                ctx.log(f"{exc.message}; polling again")
            else:
                errors = 0
                external = dig(answer, state_field)
                ours = states.get(str(external)) if external is not None else None
                if ours is None:
                    if str(external) not in unknown_seen:
                        unknown_seen.add(str(external))
                        shown = f"state '{external}'" if external is not None else f"no '{state_field}' field"
                        ctx.log(f"{label}: run {external_id} reports {shown}, which `states` does not map; "
                                "still waiting")
                elif (external, ours) != last:
                    last = (external, ours)
                    ctx.log(f"{label}: run {external_id} is {external} ({ours})")
                if ours == "succeeded":
                    return result(True, f"{label}: run {external_id} succeeded")
                if ours == "failed":
                    return result(False, f"{label}: run {external_id} failed (external state '{external}')")
                if ours == "cancelled":
                    return result(False, f"{label}: run {external_id} was cancelled on the engine "
                                         f"(external state '{external}')", retryable=False)
            remaining = ctx.remaining()
            ctx.cancel.wait(interval if remaining is None else min(interval, remaining))

    def _cancel(self, ctx: JobContext, http: OperatorHttp, external_id: str, cancel_call: tuple | None) -> str:
        if cancel_call is None:
            return f"the operator has no cancel call, so run {external_id} may still be running"
        method, path, body = cancel_call
        try:
            http.call(method, path, body, CANCEL_TIMEOUT)
        except OperatorError as exc:
            ctx.log(f"{exc.message} (cancelling run {external_id})")
            return f"cancelling run {external_id} failed: {exc.message}"
        ctx.log(f"{http.label}: cancel sent for run {external_id} ({method} {path})")
        return f"cancel sent to run {external_id}"
