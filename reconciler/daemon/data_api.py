"""Data over HTTP: services (`type: service`) and ad-hoc queries, behind tokens and policies.

Mounted by http.py under `/api/v1` beside api.py's metadata router, with its own guard:
- data routes (a service's datasets and queries, `POST /query`) need a bearer token that maps
  to a subject: a user token from the instance config (`users:`), or, on a service's own routes
  only, one of that service's tokens (its consumer acts as a user of that name, with no groups).
  The metadata API token is not a subject and reads no data. No token, a wrong one or another
  service's token: 401. A subject the policies refuse: 403 with the reason.
- the service listing and descriptions are metadata: guarded like api.py (its API token when one
  is configured), and readable with a user token too.
- `/services/{ws}/{name}/health` is open and returns no data.

Every read goes through QueryEngine.run, the same enforcement as `reconciler query --as`.
Tokens are compared as SHA-256 digests with hmac.compare_digest over every candidate; they are
never logged, and error bodies never echo them. The served services come from served.py's
ServiceTable, re-read when the state changes, so an applied change is served at once.
"""
from __future__ import annotations

import hashlib
import hmac
import json
from datetime import date
from pathlib import Path
from typing import Any, Callable

from fastapi import APIRouter, HTTPException, Request, Response

from reconciler.core.access import Subject
from reconciler.core.diagnostics import UserError
from reconciler.daemon.served import ServedService, ServiceTable
from reconciler.query.lakedb import ident

DEFAULT_LIMIT = 100
DEFAULT_QUERY_LIMIT = 1000  # POST /query: an ad-hoc question usually wants more than a page
MAX_LIMIT = 10_000
MAX_BODY = 256_000  # POST /query: the guard refuses SQL over 100,000 characters anyway
RESERVED = ("limit", "offset", "columns", "format")
FORMATS = {"json": "application/json", "csv": "text/csv; charset=utf-8"}
HEALTH_SUBJECT = Subject("reconciler:health", frozenset(), admin=True)
UNAUTHORIZED = ("missing or wrong token: send 'Authorization: Bearer <token>' with your user token or a "
                "token of this service")


# ---------------------------------------------------------------------------- request helpers

def bearer(request: Request) -> str | None:
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    given = given.strip()
    return given if scheme.lower() == "bearer" and given else None


def unauthorized() -> HTTPException:
    return HTTPException(401, detail=UNAUTHORIZED, headers={"WWW-Authenticate": "Bearer"})


def json_response(data: Any, status: int = 200, headers: dict | None = None) -> Response:
    # serialised here, not by FastAPI's encoder (much slower on pages of rows)
    body = json.dumps(data, separators=(",", ":"), ensure_ascii=False, default=str)
    return Response(body, status_code=status, media_type="application/json", headers=headers)


def parse_int(request: Request, name: str, default: int, low: int, high: int | None) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = None
    if value is None or value < low or (high is not None and value > high):
        span = f"from {low} to {high}" if high is not None else f"{low} or more"
        raise HTTPException(400, detail=f"parameter '{name}' must be an integer {span}, got {raw[:40]!r}")
    return value


_TRUE, _FALSE = {"true", "1", "yes", "on"}, {"false", "0", "no", "off"}
_EXAMPLES = {"string": "any text", "int": "e.g. 42", "float": "e.g. 4.2", "bool": "true or false",
             "date": "YYYY-MM-DD"}


def typed_param(name: str, type_: str, raw: str) -> Any:
    """A query parameter's value as its declared type; HTTP 400 naming the parameter and the type."""
    try:
        if type_ == "string":
            return raw
        if type_ == "int":
            return int(raw)
        if type_ == "float":
            value = float(raw)
            if value != value or value in (float("inf"), float("-inf")):
                raise ValueError
            return value
        if type_ == "bool":
            if raw.lower() in _TRUE | _FALSE:
                return raw.lower() in _TRUE
            raise ValueError
        if type_ == "date":
            return date.fromisoformat(raw)
    except ValueError:
        pass
    raise HTTPException(400, detail=f"parameter '{name}' is declared {type_} ({_EXAMPLES.get(type_, type_)}); "
                                    f"got {raw[:40]!r}")


def pick_format(request: Request, declared: tuple[str, ...]) -> str:
    asked = request.query_params.get("format")
    if asked is None:
        accept = request.headers.get("accept", "")
        if "text/csv" in accept and "csv" in declared and "application/json" not in accept:
            return "csv"
        return "json" if "json" in declared else declared[0]
    if asked not in FORMATS:
        raise HTTPException(400, detail=f"parameter 'format' must be one of {', '.join(FORMATS)}, got {asked[:20]!r}")
    if asked not in declared:
        raise HTTPException(406, detail=f"this service serves {', '.join(declared)}, not {asked}")
    return asked


def split_columns(request: Request) -> list[str] | None:
    raw = request.query_params.get("columns")
    if raw is None:
        return None
    cols = [c.strip() for c in raw.split(",") if c.strip()]
    if not cols:
        raise HTTPException(400, detail="parameter 'columns' is empty; write columns=a,b")
    return cols


def single(request: Request, name: str) -> str:
    values = request.query_params.getlist(name)
    if len(values) > 1:
        raise HTTPException(400, detail=f"parameter '{name}' is given {len(values)} times; give it once")
    return values[0]


def serve_page(engine, subject: Subject, sql: str, params: dict, fmt: str, request: Request, limit: int,
               offset: int, columns: list[str]) -> Response:
    """One page of `sql` for `subject`, through QueryEngine.run like every read, as JSON
    ({columns, limit, offset, next, rows}) or CSV (a header row; `Link: <...>; rel="next"`).

    JSON rows are rendered by DuckDB (to_json of each row, in the query's order): the page never
    becomes Python objects, which costs several times the query itself at 1,000 rows.
    """
    if fmt == "csv":
        result = run_guarded(lambda: engine.run(subject, sql, params, limit=limit, offset=offset))
        nxt = next_url(request, limit, offset) if result.truncated else None
        return Response(result.to_csv(), media_type=FORMATS["csv"],
                        headers={"Link": f'<{nxt}>; rel="next"'} if nxt else None)
    result = run_guarded(lambda: engine.run(subject, f"SELECT to_json(p) AS row FROM ({sql}) AS p", params,
                                            limit=limit, offset=offset))
    rows = [r[0] for r in result.rows]
    if rows:
        columns = list(json.loads(rows[0]))  # exactly what the page holds, in order
    head = json.dumps({"columns": columns, "limit": limit, "offset": offset,
                       "next": next_url(request, limit, offset) if result.truncated else None},
                      separators=(",", ":"), ensure_ascii=False)
    return Response(head[:-1] + ',"rows":[' + ",".join(rows) + "]}", media_type="application/json")


def next_url(request: Request, limit: int, offset: int) -> str:
    return str(request.url.include_query_params(offset=offset + limit, limit=limit))


def run_guarded(run: Callable[[], Any]):
    """engine.run with its errors as HTTP answers: refused 400, denied 403, lake busy 503."""
    from reconciler.query import engine as query_engine
    from reconciler.query.guard import QueryRefused

    try:
        return run()
    except QueryRefused as e:
        raise HTTPException(400, detail=_message(e)) from None
    except query_engine.AccessDenied as e:
        raise HTTPException(403, detail=_message(e)) from None
    except query_engine.LakeBusy as e:
        retry = str(int(getattr(e, "retry_after", 5) or 5))
        raise HTTPException(503, detail=_message(e), headers={"Retry-After": retry}) from None
    except UserError as e:
        raise HTTPException(400, detail=_message(e)) from None


def _message(e: UserError) -> str:
    return e.message + (f" ({e.hint})" if e.hint else "")


# ---------------------------------------------------------------------------- the router

def data_router(daemon, engine=None, directory=None) -> APIRouter:
    """The data routes for `daemon` (its config, state_dir); `engine`/`directory` default to ones built
    from them. Mount under /api/v1."""
    from reconciler.query.engine import QueryEngine
    from reconciler.query.subjects import Directory

    config = getattr(daemon, "config", None)
    directory = directory if directory is not None else Directory.from_config(config)
    engine = engine if engine is not None else QueryEngine(Path(daemon.state_dir), directory)
    table = ServiceTable(Path(daemon.state_dir))
    api_token = None
    if config is not None and config.api_token_file is not None:
        from reconciler.daemon.config import read_secret_file

        api_token = hashlib.sha256(read_secret_file(config.api_token_file).encode()).digest()
    router = APIRouter(tags=["data"])

    def user(request: Request) -> Subject | None:
        token = bearer(request)
        return directory.by_token(token) if token else None

    def metadata_reader(request: Request, service: ServedService | None = None) -> None:
        """Listing and descriptions: open like api.py when no API token is configured; else the API token,
        a user token, or (for its own description) a token of the service."""
        if api_token is None:
            return
        token = bearer(request)
        if token is None:
            raise unauthorized()
        api_ok = hmac.compare_digest(hashlib.sha256(token.encode()).digest(), api_token)
        if api_ok or directory.by_token(token) is not None or (service is not None and service.consumer(token)):
            return
        raise unauthorized()

    def service_or_404(request: Request, workspace: str, name: str, subject: Subject | None = None) -> ServedService:
        found = table.get(workspace, name)
        if found is None:
            if subject is None and user(request) is None:
                raise unauthorized()  # who may not read learns nothing, not even which services exist
            raise HTTPException(404, detail=f"no service '{name}' in workspace '{workspace}' is applied")
        return found

    def reader(request: Request, service: ServedService) -> Subject:
        """The subject of a data request on `service`: one of its consumers, or a user."""
        token = bearer(request)
        if token is None:
            raise unauthorized()
        consumer = service.consumer(token)
        if consumer is not None:
            return Subject(consumer, frozenset(), admin=False)
        subject = directory.by_token(token)
        if subject is None:
            raise unauthorized()
        return subject

    def describe(request: Request, s: ServedService) -> dict:
        base = str(request.base_url).rstrip("/") + s.path
        return {"workspace": s.workspace, "name": s.name, "description": s.description, "owner": s.owner,
                "url": base, "formats": list(s.formats),
                "datasets": [{"name": n, "dataset": a, "columns": s.columns.get(a, []), "url": f"{base}/datasets/{n}"}
                             for n, a in s.datasets.items()],
                "queries": [{"name": q.name, "params": q.params, "url": f"{base}/queries/{q.name}"}
                            for q in s.queries.values()],
                "health": f"{base}/health"}

    @router.get("/services", summary="Applied services with their URLs")
    def list_services(request: Request) -> Response:
        metadata_reader(request)
        items = sorted(table.services().values(), key=lambda s: (s.workspace, s.name))
        return json_response([describe(request, s) for s in items])

    @router.get("/services/{workspace}/{name}", summary="One service: its datasets, queries and URLs")
    def get_service(workspace: str, name: str, request: Request) -> Response:
        s = table.get(workspace, name)
        metadata_reader(request, s)
        if s is None:
            raise HTTPException(404, detail=f"no service '{name}' in workspace '{workspace}' is applied")
        return json_response(describe(request, s))

    @router.get("/services/{workspace}/{name}/datasets/{dataset}", summary="A page of a service's dataset")
    def read_dataset(workspace: str, name: str, dataset: str, request: Request) -> Response:
        s = service_or_404(request, workspace, name)
        subject = reader(request, s)
        if dataset not in s.datasets:
            raise HTTPException(404, detail=f"service '{name}' has no dataset '{dataset}'; it serves "
                                            f"{', '.join(s.datasets) or 'no datasets'}")
        address = s.datasets[dataset]
        fmt = pick_format(request, s.formats)
        limit = parse_int(request, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
        offset = parse_int(request, "offset", 0, 0, None)
        known = s.columns.get(address) or []
        columns = split_columns(request)
        if columns is not None and known:
            unknown = [c for c in columns if c not in known]
            if unknown:
                raise HTTPException(400, detail=f"unknown column {', '.join(unknown)}; dataset '{dataset}' has "
                                                f"{', '.join(known)}")
        where = {}
        for key in request.query_params:
            if key in RESERVED:
                continue
            if key not in known:
                raise HTTPException(400, detail=f"unknown parameter '{key}': filter with COLUMN=VALUE on a column of "
                                                f"'{dataset}' ({', '.join(known) or 'none known yet'}), or use "
                                                f"{', '.join(RESERVED)}")
            where[key] = single(request, key)
        sql, params = engine.dataset_sql(address, columns, where or None)
        return serve_page(engine, subject, sql, params, fmt, request, limit, offset, columns or known)

    @router.get("/services/{workspace}/{name}/queries/{query}", summary="A page of a service's query")
    def run_query(workspace: str, name: str, query: str, request: Request) -> Response:
        s = service_or_404(request, workspace, name)
        subject = reader(request, s)
        q = s.queries.get(query)
        if q is None:
            raise HTTPException(404, detail=f"service '{name}' has no query '{query}'; it serves "
                                            f"{', '.join(s.queries) or 'no queries'}")
        fmt = pick_format(request, s.formats)
        limit = parse_int(request, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
        offset = parse_int(request, "offset", 0, 0, None)
        columns = split_columns(request)
        unknown = [k for k in request.query_params if k not in RESERVED and k not in q.params]
        if unknown:
            declared = ", ".join(f"{p} ({t})" for p, t in q.params.items()) or "none"
            raise HTTPException(400, detail=f"unknown parameter '{unknown[0]}'; query '{query}' takes {declared}, "
                                            f"and {', '.join(RESERVED)}")
        params = {}
        for p, type_ in q.params.items():
            if p not in request.query_params:
                raise HTTPException(400, detail=f"parameter '{p}' ({type_}) is required by query '{query}'")
            params[p] = typed_param(p, type_, single(request, p))
        sql = q.sql
        if columns is not None:
            result_columns = run_guarded(lambda: engine.run(subject, q.sql, params, limit=0)).columns
            unknown = [c for c in columns if c not in result_columns]
            if unknown:
                raise HTTPException(400, detail=f"unknown column {', '.join(unknown)}; query '{query}' returns "
                                                f"{', '.join(result_columns)}")
            sql = f"SELECT {', '.join(ident(c) for c in columns)} FROM ({q.sql}) AS q"
        return serve_page(engine, subject, sql, params, fmt, request, limit, offset, columns or [])

    @router.get("/services/{workspace}/{name}/health", summary="Whether every dataset of the service reads now "
                                                                "(no token, no data)")
    def health(workspace: str, name: str) -> Response:
        s = table.get(workspace, name)
        if s is None:
            return json_response({"ok": False, "detail": f"no service '{name}' in workspace '{workspace}' is "
                                                         "applied"}, 404)
        problems = []
        for n, address in s.datasets.items():
            try:  # one row, unordered: readable is the question, not which row
                engine.run(HEALTH_SUBJECT, f"SELECT * FROM {ident(address)}", None, limit=1, offset=0)
            except UserError as e:
                problems.append(f"dataset '{n}' ({address}): {e.message}")
        if problems:
            return json_response({"ok": False, "detail": "; ".join(problems)}, 503)
        return json_response({"ok": True})

    @router.post("/query", summary="Read-only SQL with policies applied for the token's user")
    async def query(request: Request) -> Response:
        subject = user(request)
        if subject is None:
            raise HTTPException(401, detail="missing or wrong token: send 'Authorization: Bearer <token>' with "
                                            "your user token", headers={"WWW-Authenticate": "Bearer"})
        if int(request.headers.get("content-length") or 0) > MAX_BODY:
            raise HTTPException(413, detail=f"the request body is over {MAX_BODY // 1000} kB; send one SQL query")
        raw = await request.body()
        if len(raw) > MAX_BODY:  # a chunked body has no content-length to refuse it by
            raise HTTPException(413, detail=f"the request body is over {MAX_BODY // 1000} kB; send one SQL query")
        try:
            body = json.loads(raw or b"null")
        except ValueError:
            body = None
        from starlette.concurrency import run_in_threadpool

        # the query and the JSON of its rows run off the event loop, like the other (sync) routes
        return await run_in_threadpool(answer_query, subject, body)

    def answer_query(subject: Subject, body: Any) -> Response:
        if not isinstance(body, dict) or not isinstance(body.get("sql"), str):
            raise HTTPException(400, detail='send a JSON object {"sql": "SELECT ...", "limit": N}')
        limit, offset = body.get("limit", DEFAULT_QUERY_LIMIT), body.get("offset", 0)
        if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= MAX_LIMIT:
            raise HTTPException(400, detail=f"'limit' must be an integer from 1 to {MAX_LIMIT}")
        if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
            raise HTTPException(400, detail="'offset' must be an integer, 0 or more")
        params = body.get("params")
        if params is not None and not isinstance(params, dict):
            raise HTTPException(400, detail="'params' must be an object of name: value")
        result = run_guarded(lambda: engine.run(subject, body["sql"], params, limit=limit, offset=offset))
        return json_response({"columns": result.columns, "types": result.types, "rows": result.to_json_rows(),
                              "truncated": result.truncated, "limit": limit, "offset": offset})

    return router
