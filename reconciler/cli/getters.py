"""`get` and `delete`: reading recorded state and rendering it."""
from __future__ import annotations

import json
import sys
from datetime import datetime, timezone
from pathlib import Path

import click

from reconciler.core.diagnostics import UserError

from reconciler.engine.queries import HEALTH  # noqa: F401  (re-exported: the health of a phase)


def _out():
    from reconciler.cli.render import Out

    return Out(sys.stdout)


def _dump(payload, output: str) -> None:
    """-o json / -o yaml of anything JSON-safe (dates and the like become strings)."""
    if output == "json":
        _out().json(payload)
    else:
        import yaml

        # libyaml's emitter: the same text as safe_dump's pure-Python one, ~3x faster (10,000 resources:
        # 31 s -> 9.4 s); the representer stays Python's
        sys.stdout.write(yaml.dump(json.loads(json.dumps(payload, default=str)), sort_keys=False,
                                   default_flow_style=False, Dumper=getattr(yaml, "CSafeDumper", yaml.SafeDumper)))


def age(ts: str | None) -> str:
    if not ts:
        return "-"
    try:
        then = datetime.fromisoformat(str(ts))
    except ValueError:
        return str(ts)
    if then.tzinfo is None:
        then = then.replace(tzinfo=timezone.utc)
    s = int((datetime.now(timezone.utc) - then).total_seconds())
    for unit, n in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= n:
            return f"{s // n}{unit}"
    return f"{max(s, 0)}s"


def _resolve_kind(kind: str | None) -> str | None:
    from reconciler.cli.commands import TYPE_ALIASES
    from reconciler.core.resources import TYPES

    if kind is None:
        return None
    k = kind.lower()
    if k in TYPES:
        return k
    if k in TYPE_ALIASES:
        return TYPE_ALIASES[k]
    import difflib

    close = difflib.get_close_matches(k, list(TYPES) + ["catalog"], n=1)
    raise UserError(f"unknown resource type '{kind}'" + (f"; did you mean '{close[0]}'?" if close else ""),
                    hint=f"types: {', '.join(TYPES)}, and `get catalog`")


def _read_records(state_dir: Path):
    from reconciler.engine.operations import read_records

    return read_records(state_dir)[0]


def get_resources(state_dir: Path, kind: str | None, name: str | None, workspace: str | None, output: str) -> int:
    type_ = _resolve_kind(kind)
    records = _read_records(state_dir)
    rows = [r for r in records.values()
            if (type_ is None or r.type == type_) and (name is None or r.name == name)
            and (workspace is None or r.workspace == workspace)]
    rows.sort(key=lambda r: (r.type, r.workspace or "", r.name))
    if name is not None and not rows:
        where = f" in workspace '{workspace}'" if workspace else ""
        raise UserError(f"no {type_ or 'resource'} named '{name}'{where} is recorded in {state_dir}")
    if output in ("json", "yaml"):
        data = [_record_json(r) for r in rows]
        _dump(data[0] if name is not None and len(data) == 1 else data, output)
    else:
        from reconciler.cli.render import table

        cols = ["TYPE", "NAME", "WORKSPACE", "PHASE", "HEALTH", "COMMIT", "AGE", "MESSAGE"]
        body = [[r.type, r.name, r.workspace or "-", r.phase, HEALTH.get(r.phase, "Unknown"),
                 (r.commit or "worktree")[:8] if r.hash else "-", age(r.applied_at or r.updated_at),
                 (r.message or "")[:80]] for r in rows]
        if type_ == "workflow":  # when the schedule fires next (the table needs no specs otherwise)
            from reconciler.providers.workflow import next_fire

            cols.insert(7, "NEXT RUN")
            for row, r in zip(body, rows):
                row.insert(7, (next_fire(r.spec) if r.spec else None) or "-")
        table(_out(), cols, body,
              empty=f"No resources recorded in {state_dir}." + ("" if records else " Run `reconciler apply` first."))
    return 0


def _record_json(r) -> dict:
    from reconciler.engine.queries import record_json

    return record_json(r)


def get_catalog(state_dir: Path, name: str | None, workspace: str | None, output: str) -> int:
    from reconciler.engine.queries import catalog
    from reconciler.store.state import StateStore

    with StateStore.open(Path(state_dir), read_only=True) as store:
        # one dataset named: its profile and latest quality results too
        datasets, products = catalog(store, name, workspace)
    if output in ("json", "yaml"):
        _dump({"datasets": datasets, "dataproducts": products}, output)
        return 0
    from reconciler.cli.render import table

    out = _out()
    if name and len(datasets) == 1:
        d = datasets[0]
        out.line(f"{d['address']}  ({d.get('kind') or '-'}, {d.get('row_count') if d.get('row_count') is not None else '?'} rows, "
                 f"owner {d.get('owner_resource') or '-'})")
        if d.get("owner") or d.get("last_run"):
            out.line(f"owner: {d.get('owner') or '-'}, last written by run {d.get('last_run') or '-'} "
                     f"({age(d.get('updated_at'))} ago)")
        stats = {p["column"]: p for p in d.get("profile") or []}

        def stat(col, key):
            v = stats.get(col, {}).get(key)
            return "-" if v is None else str(v)[:24]

        table(out, ["COLUMN", "TYPE", "TAGS", "NULLS", "DISTINCT", "MIN", "MAX"],
              [[c["name"], c["type"], ",".join(c.get("tags") or []), stat(c["name"], "nulls"),
                stat(c["name"], "distinct"), stat(c["name"], "min"), stat(c["name"], "max")] for c in d["columns"]])
        if d.get("quality"):
            out.line()
            table(out, ["CHECK", "SEVERITY", "RESULT", "FAILING ROWS", "RUN"],
                  [[q["name"], q["severity"], "pass" if q["passed"] else "FAIL", str(q["failing_rows"]), q["run_id"]]
                   for q in d["quality"]])
        return 0
    table(out, ["DATASET", "KIND", "ROWS", "COLUMNS", "OWNER", "UPDATED"],
          [[d["address"], d.get("kind") or "-", "-" if d.get("row_count") is None else str(d["row_count"]),
            str(len(d["columns"])), d.get("owner_resource") or "-", age(d.get("updated_at"))] for d in datasets],
          empty="The catalog is empty. Apply depots and run workflows to fill it.")
    if products:
        out.line()
        table(out, ["DATAPRODUCT", "DOMAIN", "OWNER"], [[p["name"], p.get("domain") or "-", p.get("owner") or "-"]
                                                        for p in products])
    return 0


def run_delete(target, kind, name, file_: Path | None, workspace, cascade: bool, auto_approve: bool, output: str) -> int:
    from reconciler.core import resources as models
    from reconciler.core.ids import DEFAULT_WORKSPACE, make_id
    from reconciler.engine import operations

    if file_ is not None:
        if kind or name:
            raise UserError("give either TYPE NAME or -f FILE, not both")
        ids = operations.ids_in_file(file_)
    else:
        if not kind or not name:
            raise UserError("delete needs TYPE NAME (e.g. `reconciler delete workflow daily -w payments`) or -f FILE")
        type_ = _resolve_kind(kind)
        if type_ is None:
            raise UserError("delete needs one resource type")
        scoped = models.TYPES[type_].scope == "workspace"
        if workspace and not scoped:
            raise UserError(f"{type_} is not workspace-scoped; drop -w")
        ids = [make_id(type_, name, (workspace or DEFAULT_WORKSPACE) if scoped else None)]
    out = _out()
    quiet = output == "json"

    def confirm(plan) -> bool:
        if not quiet:
            for a in plan.actions:
                out.line(f"  - {a.id}  ({a.reason})", "red")
        if auto_approve:
            return True
        if not sys.stdin.isatty():
            raise UserError("delete needs --auto-approve when not run from a terminal")
        return click.prompt("Delete these resources? Only 'yes' will be accepted", default="",
                            show_default=False).strip() == "yes"

    plan, result = operations.delete_resources(target, ids, cascade=cascade, confirm=confirm)
    if result is None:
        out.line("Delete cancelled; nothing was changed.")
        return 1
    if quiet:
        out.json({"ok": result.ok, "results": [r.to_json() for r in result.results]})
    else:
        for r in result.results:
            out.line(f"  {r.id}: {r.phase}" + (f" ({r.message})" if r.message else ""),
                     "red" if r.phase not in ("Deleted",) else None)
        out.line("Deleted." if result.ok else "Delete finished with failures.", "green" if result.ok else "red")
        out.line("Note: resources still defined in git are created again by the next apply; remove them from git "
                 "to keep them deleted.")
    return 0 if result.ok else 1


# -- runs, logs, lineage ---------------------------------------------------------------------
def _workflow_id(name: str | None, workspace: str | None) -> str:
    from reconciler.core.ids import DEFAULT_WORKSPACE, make_id

    if not name:
        raise UserError("name the workflow: `reconciler get runs WORKFLOW [-w WORKSPACE]`")
    return make_id("workflow", name, workspace or DEFAULT_WORKSPACE)


def _duration(start, end) -> str:
    try:
        s = (datetime.fromisoformat(str(end)) - datetime.fromisoformat(str(start))).total_seconds()
    except (TypeError, ValueError):
        return "-"
    return f"{s:.1f}s" if s < 120 else f"{s / 60:.1f}m"


def get_runs(state_dir: Path, name: str | None, workspace: str | None, run_id: str | None, output: str) -> int:
    from reconciler.engine.queries import workflow_runs
    from reconciler.store.state import StateStore

    wid = _workflow_id(name, workspace)

    with StateStore.open(Path(state_dir), read_only=True) as store:
        runs = workflow_runs(store, wid, run_id, with_jobs=bool(run_id) or output != "table")
        if run_id:
            quality = store.runs.quality(run_id=runs[0]["run_id"])
        else:
            quality = []
    if not runs and not run_id:
        if output == "table":
            _out().line(f"No runs of {wid} recorded in {state_dir}.")
        else:
            _out().json([])
        return 0
    if output in ("json", "yaml"):
        _dump(runs if not run_id else {**runs[0], "quality": quality}, output)
        return 0
    from reconciler.cli.render import table

    out = _out()
    table(out, ["RUN", "STATUS", "TRIGGER", "COMMIT", "STARTED", "DURATION", "ROWS IN", "ROWS OUT", "MESSAGE"],
          [[r["run_id"], r["status"], r["trigger"] or "-", (r["commit"] or "worktree")[:8], age(r["started_at"]) + " ago",
            _duration(r["started_at"], r["ended_at"]), _num(r["rows_in"]), _num(r["rows_out"]),
            (r["message"] or "")[:70]] for r in runs])
    if run_id:
        out.line()
        table(out, ["JOB", "STACK", "STATUS", "ATTEMPTS", "DURATION", "ROWS IN", "ROWS OUT", "MESSAGE"],
              [[j["job"], j["stack"] or "-", j["status"], str(j["attempts"] or 0), _duration(j["started_at"], j["ended_at"]),
                _num(j["rows_in"]), _num(j["rows_out"]), (j["message"] or "")[:70]] for j in runs[0]["jobs"]])
        if quality:
            out.line()
            table(out, ["CHECK", "DATASET", "SEVERITY", "RESULT", "FAILING ROWS"],
                  [[q["name"], q["dataset"], q["severity"], "pass" if q["passed"] else "FAIL", str(q["failing_rows"])]
                   for q in quality])
    return 0


def _num(v) -> str:
    return "-" if v is None else str(v)


def get_lineage(state_dir: Path, dataset: str | None, direction: str | None, output: str) -> int:
    from reconciler.store.state import StateStore

    if not dataset:
        raise UserError("name a dataset: `reconciler get lineage lake://WORKSPACE/TABLE`")
    from reconciler.engine.queries import Lineage

    with StateStore.open(Path(state_dir), read_only=True) as store:
        graph = Lineage(store, dataset)
    edges, columns = graph.edges, graph.columns

    if output in ("json", "yaml"):
        _dump(graph.to_json(direction), output)
        return 0
    out = _out()
    out.line(dataset, "bold")

    def tree(node: str, up_: bool, depth: int, seen: set) -> None:
        for e in edges:
            if (e["target"] if up_ else e["source"]) != node:
                continue
            other = e["source"] if up_ else e["target"]
            arrow = "<-" if up_ else "->"
            out.line(f"{'  ' * depth}{arrow} {other}  ({e['workflow_id']}, job {e['job']})")
            if other not in seen:
                tree(other, up_, depth + 1, seen | {other})

    if direction in (None, "upstream"):
        tree(dataset, True, 1, {dataset})
    if direction in (None, "downstream"):
        tree(dataset, False, 1, {dataset})
    if columns:
        out.line()
        from reconciler.cli.render import table

        table(out, ["COLUMN", "FROM DATASET", "FROM COLUMN", "JOB"],
              [[c["target_column"], c["source"], c["source_column"], c["job"]] for c in columns])
    return 0


def show_logs(state_dir: Path, workflow: str, workspace: str | None, run_id: str | None, job: str | None,
              follow: bool) -> int:
    """Reads log files only (never the state database), so it works while an apply or run holds the state."""
    import time

    from reconciler.engine import queries

    run_dir = queries.run_dir(Path(state_dir), workflow, workspace, run_id)
    out = _out()
    offsets: dict[Path, int] = {}

    def emit_new() -> None:
        files = queries.log_files(run_dir, job, must_exist=not follow)
        for f in files:
            data = f.read_text(encoding="utf-8", errors="replace")
            start = offsets.get(f, 0)
            if len(data) > start:
                if start == 0 and not job:
                    out.line(f"==> {f.stem} <==", "bold")
                for line in data[start:].splitlines():
                    out.line(line if job else f"[{f.stem}] {line}")
                offsets[f] = len(data)

    emit_new()
    while follow and not (run_dir / "run.json").exists():
        time.sleep(0.5)
        emit_new()
    if follow:
        emit_new()
        status = json.loads((run_dir / "run.json").read_text())
        out.line(f"run {run_dir.name} {status['status']}: {status['message']}")
    return 0


# -- data products ---------------------------------------------------------------------------
def _from_daemon(state_dir: Path, path: str):
    from reconciler.engine.operations import from_daemon

    return from_daemon(state_dir, path)


def _product_read(state_dir: Path, read, api_path: str):
    """read(store) over the state, or the daemon's answer while its reconcile holds the state."""
    from reconciler.store.state import StateStore

    try:
        store = StateStore.open(Path(state_dir), read_only=True)
    except UserError:
        answer = _from_daemon(state_dir, api_path)
        if answer is None:
            raise
        return answer
    with store:
        return read(store)


def get_dataproduct(state_dir: Path, name: str | None, output: str) -> int:
    """`get dataproduct [NAME] [-o table|json|yaml|odcs|odps]`."""
    from urllib.parse import quote

    from reconciler.products import view

    if output in view.EXPORT_FORMATS:
        if not name:
            raise UserError(f"-o {output} exports one data product: `reconciler get dataproduct NAME -o {output}`")
        doc = _product_read(state_dir, lambda s: view.export_dataproduct(s, name, output),
                            f"/dataproducts/{quote(name, safe='')}/{output}")
        import yaml

        # the Bitol standards are YAML-native: YAML, through JSON so that no anchors or tags appear
        sys.stdout.write(yaml.dump(json.loads(json.dumps(doc, default=str)), Dumper=yaml.CSafeDumper,
                                   sort_keys=False, allow_unicode=True, default_flow_style=False))
        return 0
    if not name:
        rows = _product_read(state_dir, view.dataproducts_summary, "/dataproducts")
        if output in ("json", "yaml"):
            _dump(rows, output)
            return 0
        from reconciler.cli.render import table

        table(_out(), ["DATAPRODUCT", "DOMAIN", "OWNER", "HEALTH", "SLOS MET", "DETAIL"],
              [[r["name"], r.get("domain") or "-", r.get("owner") or "-", r["health"],
                f"{r['slos_ok']}/{r['slos']}", (r.get("health_detail") or "")[:90]] for r in rows],
              empty=f"No data products recorded in {state_dir}.")
        return 0
    product = _product_read(state_dir, lambda s: view.dataproduct_view(s, name),
                            f"/dataproducts/{quote(name, safe='')}")
    if output in ("json", "yaml"):
        _dump(product, output)
        return 0
    _print_dataproduct(product)
    return 0


_HEALTH_STYLE = {"Healthy": "green", "Degraded": "yellow", "Failed": "red"}


def _print_dataproduct(p: dict) -> None:
    from reconciler.cli.render import table

    out = _out()
    out.line(f"{p['name']}  (domain {p.get('domain') or '-'}, owner {p.get('owner') or '-'})", "bold")
    if p.get("description"):
        out.line(p["description"])
    out.line(f"health: {p['health']}: {p.get('health_detail') or ''}", _HEALTH_STYLE.get(p["health"]))
    out.line(f"phase: {p.get('phase') or '-'}, commit {(p.get('commit') or 'worktree')[:8]}, "
             f"evaluated at {p.get('evaluated_at')}")
    if p.get("recorded"):
        r = p["recorded"]
        out.line(f"daemon's last evaluation: {r['state']} at {r['at']}")
    for title, ports in (("Input ports", p["inputs"]), ("Output ports", p["outputs"])):
        out.line()
        out.line(f"{title} ({len(ports)})", "bold")
        for port in ports:
            rows = "-" if port.get("row_count") is None else port["row_count"]
            seen = "written" if port.get("kind") == "lake" else "introspected"
            where = f"{rows} rows, {seen} {age(port.get('updated_at'))} ago" if port["in_catalog"] \
                else "not in the catalog yet"
            out.line(f"  {port['name']}: {port['dataset']}  ({where})")
            if port["columns"]:
                table(out, ["COLUMN", "TYPE", "TAGS"],
                      [[c["name"], c.get("type") or "-", ",".join(c.get("tags") or [])] for c in port["columns"]])
    out.line()
    out.line(f"Resources ({len(p['resources'])})", "bold")
    table(out, ["RESOURCE", "PHASE", "MESSAGE"], [[r["id"], r["phase"], (r.get("message") or "")[:80]]
                                                  for r in p["resources"]], empty="No member resources recorded.")
    out.line()
    out.line("Lineage", "bold")
    if not p["lineage"]:
        out.line("No lineage recorded yet (run the product's workflows).")
    for e in p["lineage"]:
        out.line(f"  {e['source']} -> {e['target']}  ({e['workflow_id']}, job {e['job']})")
    out.line()
    out.line(f"SLOs ({len(p['slos'])})", "bold")
    table(out, ["SLO", "KIND", "VALUE", "TARGET", "OK", "DETAIL"],
          [[s["name"], s["kind"], s["value_text"], s["target_text"], "yes" if s["ok"] else "BREACHED",
            s["detail"][:100]] for s in p["slos"]], empty="No SLOs declared.")
