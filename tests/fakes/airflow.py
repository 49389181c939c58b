"""A small, real Airflow REST API (v1) on 127.0.0.1: enough of dagRuns for the operator stack.

    with FakeAirflow(token="tok") as airflow:
        airflow.url            # http://127.0.0.1:PORT/api/v1
        airflow.requests       # every request received, in order (RecordedRequest)

Behaviour by dag_id:
  ok        queued -> running -> success over `polls` status calls (default 3)
  fails     the same, ending in failed
  retrying  reports up_for_retry (a state operators often leave unmapped) before success
  slow      stays running until cancelled (PATCH {"state": "failed"})
  error500  creating a run answers 500
  anything else: 404, as Airflow answers for an unknown DAG
Every request needs `Authorization: Bearer <token>`, otherwise 401.
"""
from __future__ import annotations

import json
import threading
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

DAGS = ("ok", "fails", "retrying", "slow", "error500")


@dataclass
class RecordedRequest:
    method: str
    path: str  # unquoted
    headers: dict[str, str]
    body: Any  # parsed JSON, or None


@dataclass
class DagRun:
    dag_id: str
    dag_run_id: str
    conf: Any
    polls: int = 0
    forced_state: str | None = None  # set by PATCH
    history: list[str] = field(default_factory=list)


class FakeAirflow:
    def __init__(self, token: str = "airflow-test-token", polls: int = 3):
        self.token = token
        self.polls = polls
        self.requests: list[RecordedRequest] = []
        self.runs: dict[str, DagRun] = {}
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ---- lifecycle ---------------------------------------------------------------------------------

    def __enter__(self) -> "FakeAirflow":
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="fake-airflow", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(5)

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/v1"

    def requests_with(self, method: str, path_part: str = "") -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self.requests if r.method == method and path_part in r.path]

    # ---- the API -----------------------------------------------------------------------------------

    def handle(self, method: str, path: str, headers: dict[str, str], body: Any) -> tuple[int, Any]:
        with self._lock:
            self.requests.append(RecordedRequest(method, path, headers, body))
            auth = next((v for k, v in headers.items() if k.lower() == "authorization"), None)
            if auth != f"Bearer {self.token}":
                return 401, {"title": "Unauthorized", "status": 401, "detail": "Invalid credentials",
                             "type": "https://airflow.apache.org/docs/apache-airflow/stable/stable-rest-api-ref.html"
                                     "#section/Errors/Unauthenticated"}
            parts = path.split("/")  # "", api, v1, dags, DAG, dagRuns[, RUN]
            if len(parts) < 6 or parts[1:4] != ["api", "v1", "dags"] or parts[5] != "dagRuns":
                return 404, {"title": "Not Found", "status": 404, "detail": f"no route {method} {path}"}
            dag_id = parts[4]
            if dag_id not in DAGS:
                return 404, {"title": "DAG not found", "status": 404,
                             "detail": f"DAG with dag_id: '{dag_id}' not found"}
            if len(parts) == 6 and method == "POST":
                return self._create(dag_id, body)
            run = self.runs.get(parts[6]) if len(parts) == 7 else None
            if run is None or run.dag_id != dag_id:
                return 404, {"title": "DAGRun not found", "status": 404, "detail": f"no dag run {path}"}
            if method == "GET":
                run.polls += 1
                state = self._state(run)
                run.history.append(state)
                return 200, self._view(run, state)
            if method == "PATCH":
                run.forced_state = (body or {}).get("state", "failed")
                return 200, self._view(run, run.forced_state)
            return 405, {"title": "Method Not Allowed", "status": 405, "detail": method}

    def _create(self, dag_id: str, body: Any) -> tuple[int, Any]:
        if dag_id == "error500":
            return 500, {"title": "Internal Server Error", "status": 500, "detail": "scheduler unavailable"}
        # Airflow's own ids contain ':' and '+', which the client must carry through the URL path
        run_id = f"manual__2026-01-01T00:00:{len(self.runs):02d}+00:00"
        run = DagRun(dag_id, run_id, (body or {}).get("conf"))
        self.runs[run_id] = run
        return 200, self._view(run, "queued")

    def _state(self, run: DagRun) -> str:
        if run.forced_state:
            return run.forced_state
        if run.dag_id == "slow":
            return "running"
        if run.polls >= self.polls:
            return "failed" if run.dag_id == "fails" else "success"
        if run.dag_id == "retrying":
            return "up_for_retry"
        return "queued" if run.polls == 1 else "running"

    @staticmethod
    def _view(run: DagRun, state: str) -> dict:
        return {"dag_id": run.dag_id, "dag_run_id": run.dag_run_id, "state": state, "conf": run.conf,
                "external_trigger": True, "logical_date": "2026-01-01T00:00:00+00:00"}


def _handler_for(fake: FakeAirflow) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                self._answer(400, {"title": "Bad Request", "status": 400, "detail": "body is not JSON"})
                return
            path = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path)
            status, answer = fake.handle(self.command, path, dict(self.headers.items()), body)
            self._answer(status, answer)

        def _answer(self, status: int, answer: Any) -> None:
            data = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _serve

        def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
            pass

    return Handler
