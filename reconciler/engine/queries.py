"""Reads of recorded state shared by the CLI's `get`/`logs` and the daemon's `/api/v1`.

Each function takes an open (read-only) StateStore or the state dir and returns
plain JSON-safe values; rendering stays with the caller. Secrets are redacted here,
so no caller can forget to.
"""
from __future__ import annotations

from pathlib import Path

from reconciler.core.diagnostics import UserError
from reconciler.core.ids import DEFAULT_WORKSPACE

HEALTH = {"Ready": "Healthy", "Failed": "Degraded", "Blocked": "Degraded", "Applying": "Progressing",
          "Pending": "Progressing", "Deleting": "Progressing"}


# -- resources -------------------------------------------------------------------------------
def record_json(r) -> dict:
    """A record as `get -o json` shows it, secrets redacted."""
    from reconciler.core.redact import redact

    extra = {}
    if r.type == "workflow" and r.spec:
        from reconciler.providers.workflow import next_fire

        extra["next_run"] = next_fire(r.spec)
    return extra | {"id": r.id, "type": r.type, "name": r.name, "workspace": r.workspace, "phase": r.phase,
            "health": HEALTH.get(r.phase, "Unknown"), "message": r.message, "commit": r.commit, "file": r.file,
            "hash": r.hash, "depends_on": list(r.depends_on), "bundle": r.bundle, "prune": r.prune,
            "outputs": redact(r.outputs or {}), "created_at": str(r.created_at) if r.created_at else None,
            "updated_at": str(r.updated_at) if r.updated_at else None,
            "applied_at": str(r.applied_at) if r.applied_at else None, "spec": redact(r.spec) if r.spec else None}


# -- runs ------------------------------------------------------------------------------------
def workflow_runs(store, workflow_id: str, run_id: str | None = None, with_jobs: bool = True,
                  limit: int = 50) -> list[dict]:
    """Latest runs of a workflow (newest first), each with its `jobs` when asked. A `run_id` (or a
    prefix of one) narrows to that run; none matching raises UserError."""
    runs = store.runs.runs(workflow_id, limit=limit)
    if run_id:
        runs = [r for r in runs if r["run_id"] == run_id or r["run_id"].startswith(run_id)]
        if not runs:
            raise UserError(f"no run {run_id} of {workflow_id} in {store.state_dir}")
    for r in runs:
        r["jobs"] = store.runs.jobs(r["run_id"]) if with_jobs else []
    return runs


# -- logs ------------------------------------------------------------------------------------
def run_dir(state_dir: Path, workflow: str, workspace: str | None, run_id: str | None) -> Path:
    """The log folder of a run (the latest when no run_id): state_dir/runs/WS/WORKFLOW/RUN. Reads files
    only, so it works while another process holds the state database."""
    base = Path(state_dir) / "runs" / (workspace or DEFAULT_WORKSPACE) / workflow
    runs = sorted((p for p in base.glob("*") if p.is_dir()), key=lambda p: p.name) if base.exists() else []
    if not runs:
        raise UserError(f"no runs of workflow '{workflow}' in workspace '{workspace or DEFAULT_WORKSPACE}' "
                        f"under {state_dir}")
    if not run_id:
        return runs[-1]
    matches = [p for p in runs if p.name == run_id or p.name.startswith(run_id)]
    if not matches:
        raise UserError(f"no run {run_id} of workflow '{workflow}'",
                        hint=f"latest runs: {', '.join(p.name for p in runs[-3:])}")
    return matches[-1]


def log_files(run: Path, job: str | None, must_exist: bool = True) -> list[Path]:
    """The job logs of a run folder, sorted; only `job`'s when given (missing -> UserError if must_exist)."""
    files = sorted(run.glob("*.log"))
    if job:
        files = [f for f in files if f.stem == job]
        if not files and must_exist:
            raise UserError(f"run {run.name} has no log for job '{job}'",
                            hint=f"jobs: {', '.join(f.stem for f in sorted(run.glob('*.log')))}")
    return files


# -- catalog ---------------------------------------------------------------------------------
def dataset_details(store, d: dict) -> dict:
    """Add a dataset's column profile and its latest run's quality results (in place)."""
    d["profile"] = store.runs.profiles(d["address"])
    latest = store.runs.quality(dataset=d["address"], limit=50)
    last_run = latest[0]["run_id"] if latest else None
    d["quality"] = [q for q in latest if q["run_id"] == last_run]
    return d


WITHHELD = "[withheld: read data through a service or /api/v1/query]"
_VALUE_STATS = ("min", "max", "top")


def without_values(d: dict) -> dict:
    """A dataset's details with the row values left out (in place): profiles keep counts, nulls,
    distinct and mean but not min, max or top values; quality results keep pass/fail and failing
    counts but not their sample rows. The HTTP API is the security boundary and its metadata routes
    know no subject, so data reaches API callers only through the policy-enforced query routes."""
    for p in d.get("profile") or []:
        stats = p.get("stats") if isinstance(p.get("stats"), dict) else p
        for key in _VALUE_STATS:
            if key in stats:
                stats[key] = WITHHELD
    for q in d.get("quality") or []:
        if q.get("sample"):
            q["sample"] = WITHHELD
    return d


def catalog(store, name: str | None = None, workspace: str | None = None) -> tuple[list[dict], list[dict]]:
    """(datasets with columns, data products). `name` is an address or its last segment; one match
    also carries its profile and latest quality. No match raises UserError."""
    datasets = store.catalog.datasets(workspace=workspace)
    if name:
        datasets = [d for d in datasets if d["address"] == name or d["address"].endswith("/" + name)]
        if not datasets:
            raise UserError(f"no dataset '{name}' in the catalog of {store.state_dir}")
    columns = store.catalog.columns_of(d["address"] for d in datasets)
    for d in datasets:
        d["columns"] = columns.get(d["address"], [])
    if name and len(datasets) == 1:
        dataset_details(store, datasets[0])
    products = store.catalog.dataproducts() if not name else []
    return datasets, products


# -- lineage ---------------------------------------------------------------------------------
class Lineage:
    """The lineage edges recorded in a state, and walks over them."""

    def __init__(self, store, dataset: str):
        self.dataset = dataset
        self.edges = store.runs.lineage_edges()
        self.columns = store.runs.column_lineage(dataset)
        known = {d["address"] for d in store.catalog.datasets()}
        nodes = known | {e["source"] for e in self.edges} | {e["target"] for e in self.edges}
        if dataset not in nodes:
            import difflib

            close = difflib.get_close_matches(dataset, sorted(nodes), n=1, cutoff=0.5)
            raise UserError(f"no dataset {dataset} in the catalog or lineage of {store.state_dir}",
                            hint=f"did you mean {close[0]}?" if close
                            else "addresses look like lake://WS/TABLE or depot://DEPOT/DATASET")

    def walk(self, up: bool) -> list[dict]:
        """Every edge reachable upstream (or downstream) of the dataset, breadth first."""
        seen, out, todo = {self.dataset}, [], [self.dataset]
        while todo:
            node = todo.pop(0)
            for e in self.edges:
                if (e["target"] if up else e["source"]) == node:
                    out.append(e)
                    nxt = e["source"] if up else e["target"]
                    if nxt not in seen:
                        seen.add(nxt)
                        todo.append(nxt)
        return out

    def to_json(self, direction: str | None) -> dict:
        up = self.walk(True) if direction in (None, "upstream") else []
        down = self.walk(False) if direction in (None, "downstream") else []

        def strip(es):
            return [{k: e[k] for k in ("source", "target", "workflow_id", "job")} for e in es]

        return {"dataset": self.dataset, "upstream": strip(up), "downstream": strip(down), "columns": self.columns}
