"""`/api/v1`: the daemon's read API over recorded state (resources, runs and logs, catalog, lineage, plans).

Mounted by http.py under `/api/v1`. When the config names an `api_token_file`, every
route needs `Authorization: Bearer <token>` (compared in constant time); the token is
read once at startup and never logged or echoed. Health, readiness, metrics and the
webhook live outside this router and stay open.

The state database is opened read-only per request, as `reconciler get` does, so the
answers are what the store holds now. Another process writing it (the DuckDB lock)
answers 503 with that message; a missing resource, run or dataset answers 404.
Errors are JSON: {"detail": "..."}.
"""
from __future__ import annotations

import hmac
import re
from contextlib import contextmanager
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Iterator, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import PlainTextResponse

from reconciler.core.diagnostics import UserError
from reconciler.core.ids import make_id
from reconciler.engine import queries

_SHA = re.compile(r"^[0-9a-f]{40}$")


def _not_found(e: UserError) -> HTTPException:
    return HTTPException(404, detail=e.message + (f" ({e.hint})" if e.hint else ""))


def _token_guard(token_file: Path | None):
    """A dependency refusing requests without the configured bearer token (none configured: open)."""
    if token_file is None:
        return lambda: None
    from reconciler.daemon.config import read_secret_file

    expected = read_secret_file(token_file).encode()

    def guard(request: Request) -> None:
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), expected):
            raise HTTPException(401, detail="missing or wrong API token: send 'Authorization: Bearer <token>'",
                                headers={"WWW-Authenticate": "Bearer"})

    return guard


def api_router(daemon) -> APIRouter:
    router = APIRouter(dependencies=[Depends(_token_guard(daemon.config.api_token_file))])
    state_dir = Path(daemon.state_dir)

    @contextmanager
    def store() -> Iterator:
        from reconciler.store.state import StateStore

        try:
            s = StateStore.open(state_dir, read_only=True)
        except UserError as e:  # another process holds the state for writing
            raise HTTPException(503, detail=e.message) from None
        try:
            yield s
        finally:
            s.close()

    # -- resources -------------------------------------------------------------------------
    @router.get("/resources", summary="List recorded resources", tags=["resources"])
    def list_resources(type: str | None = None, workspace: str | None = None) -> list[dict]:
        with store() as s:
            records = s.records()
        rows = [r for r in records.values()
                if (type is None or r.type == type) and (workspace is None or r.workspace == workspace)]
        rows.sort(key=lambda r: (r.type, r.workspace or "", r.name))
        return [queries.record_json(r) for r in rows]

    @router.get("/resources/{type}/{name}", summary="One resource with its history", tags=["resources"])
    def get_resource(type: str, name: str, workspace: str | None = None) -> dict:
        from reconciler.core.resources import TYPES

        if type not in TYPES:
            raise HTTPException(404, detail=f"unknown resource type '{type}'; types: {', '.join(TYPES)}")
        with store() as s:
            matches = [r for r in s.records().values() if r.type == type and r.name == name
                       and (workspace is None or r.workspace == workspace)]
            if len(matches) > 1:
                raise HTTPException(409, detail=f"{type} '{name}' exists in workspaces "
                                                f"{', '.join(sorted(r.workspace or '-' for r in matches))}: "
                                                "add ?workspace=")
            if not matches:
                where = f" in workspace '{workspace}'" if workspace else ""
                raise HTTPException(404, detail=f"no {type} named '{name}'{where} is recorded")
            record = matches[0]
            history = s.history(record.id)
        return queries.record_json(record) | {"history": history}

    # -- runs and logs ---------------------------------------------------------------------
    @router.get("/runs/{workspace}/{workflow}", summary="Latest runs of a workflow, with their jobs", tags=["runs"])
    def list_runs(workspace: str, workflow: str, limit: int = Query(20, ge=1, le=500)) -> list[dict]:
        wid = make_id("workflow", workflow, workspace)
        with store() as s:
            runs = queries.workflow_runs(s, wid, limit=limit)
            if not runs and s.get(wid) is None:
                raise HTTPException(404, detail=f"no workflow '{workflow}' in workspace '{workspace}' is recorded")
        return runs

    @router.get("/runs/{workspace}/{workflow}/{run_id}", summary="One run: its jobs and quality results",
                tags=["runs"])
    def get_run(workspace: str, workflow: str, run_id: str) -> dict:
        with store() as s:
            try:
                run = queries.workflow_runs(s, make_id("workflow", workflow, workspace), run_id, limit=500)[0]
            except UserError as e:
                raise _not_found(e) from None
            return queries.without_values(run | {"quality": s.runs.quality(run_id=run["run_id"])})

    @router.get("/runs/{workspace}/{workflow}/{run_id}/logs", summary="A run's job logs as text (secrets masked)",
                tags=["runs"], response_class=PlainTextResponse)
    def run_logs(workspace: str, workflow: str, run_id: str, job: str | None = None) -> PlainTextResponse:
        # the log files only, never the database: readable while a run is writing them
        try:
            folder = queries.run_dir(state_dir, workflow, workspace, run_id)
            files = queries.log_files(folder, job)
        except UserError as e:
            raise _not_found(e) from None
        parts = []
        for f in files:
            text = f.read_text(encoding="utf-8", errors="replace")
            parts.append(text if job else f"==> {f.stem} <==\n{text}")
        return PlainTextResponse("".join(p if p.endswith("\n") or not p else p + "\n" for p in parts))

    # -- catalog and lineage ---------------------------------------------------------------
    @router.get("/catalog", summary="Datasets with their columns, and data products", tags=["catalog"])
    def catalog(workspace: str | None = None) -> dict:
        with store() as s:
            datasets, products = queries.catalog(s, None, workspace)
        return {"datasets": datasets, "dataproducts": products}

    @router.get("/catalog/dataset", summary="One dataset: columns, profile, latest quality results",
                tags=["catalog"])
    def dataset(address: str = Query(..., description="e.g. lake://payments/valid")) -> dict:
        with store() as s:
            d = s.catalog.dataset(address)
            if d is None:
                raise HTTPException(404, detail=f"no dataset {address} in the catalog")
            d["columns"] = s.catalog.columns(address)
            return queries.without_values(queries.dataset_details(s, d))

    @router.get("/lineage", summary="Upstream and downstream lineage of a dataset", tags=["catalog"])
    def lineage(dataset: str, direction: Literal["upstream", "downstream"] | None = None) -> dict:
        with store() as s:
            try:
                graph = queries.Lineage(s, dataset)
            except UserError as e:
                raise _not_found(e) from None
        return graph.to_json(direction)

    # -- data products ---------------------------------------------------------------------
    @router.get("/dataproducts", summary="Data products with their health and SLOs met", tags=["dataproducts"])
    def dataproducts() -> list[dict]:
        from reconciler.products.view import dataproducts_summary

        with store() as s:
            return dataproducts_summary(s)

    @router.get("/dataproducts/{name}", summary="One data product: ports with schemas, resources, lineage, SLOs",
                tags=["dataproducts"])
    def dataproduct(name: str) -> dict:
        from reconciler.products.view import dataproduct_view

        with store() as s:
            try:
                return dataproduct_view(s, name)
            except UserError as e:
                raise _not_found(e) from None

    @router.get("/dataproducts/{name}/{fmt}", summary="A data product as an ODCS contract or an ODPS document",
                tags=["dataproducts"])
    def dataproduct_export(name: str, fmt: Literal["odcs", "odps"]) -> dict:
        from reconciler.products.view import export_dataproduct

        with store() as s:
            try:
                return export_dataproduct(s, name, fmt)
            except UserError as e:
                raise _not_found(e) from None

    # -- the daemon's own view ---------------------------------------------------------------
    @router.get("/plans", summary="The last reconcile and the plan previews of preview branches", tags=["daemon"])
    def plans() -> dict:
        last = daemon.state.last_result
        return {"last_reconcile": asdict(last) if is_dataclass(last) else last, "previews": _previews(daemon)}

    @router.get("/status", summary="Readiness, the last applied commit and any held prune", tags=["daemon"])
    def status() -> dict:
        st = daemon.state
        last = st.last_result
        return {"ready": st.ready, "commit": st.last_commit, "branch": daemon.config.branch,
                "held": getattr(last, "held", None), "reconciles": st.reconciles,
                "last_success_at": st.last_success_at}

    return router


def _previews(daemon) -> dict[str, dict]:
    """branch -> {"head", "markdown"}. The daemon remembers each preview branch's planned head; the
    markdown is read back from plans/<branch>.md on the status branch."""
    previews = getattr(daemon.state, "previews", None) or {}
    branch = getattr(daemon, "_branch", None)
    out = {}
    for name, value in sorted(previews.items()):
        if isinstance(value, str) and not _SHA.match(value):  # already the markdown
            out[name] = {"head": None, "markdown": value}
            continue
        markdown = None
        if branch is not None:
            from reconciler.gitops.status import preview_path

            data = branch.read(preview_path(name))
            markdown = data.decode("utf-8", errors="replace") if data is not None else None
        out[name] = {"head": value, "markdown": markdown}
    return out

