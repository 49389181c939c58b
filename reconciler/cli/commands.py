"""The hand-run verbs: init, validate, plan, apply, get, delete."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from reconciler.cli.main import cli, config_option, make_target, target_options
from reconciler.core.diagnostics import UserError

OUTPUT = click.option("-o", "--output", "output", type=click.Choice(["text", "json"]), default="text",
                      show_default=True, help="Output format.")


def _out(stream=None):
    from reconciler.cli.render import Out

    return Out(stream or sys.stdout)


def _print_diagnostics(diags, stream=None) -> None:
    from reconciler.cli.render import diagnostics

    diagnostics(_out(stream or sys.stderr), diags)


# -- init ------------------------------------------------------------------------------------
@cli.command()
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--template", default="dataproduct", show_default=True, help="Template to scaffold.")
@click.option("--name", required=True, help="Name of the data product (lowercase, digits, dashes).")
def init(directory: Path, template: str, name: str):
    """Scaffold a new repository from a template (a data product that validates as written)."""
    from reconciler.scaffold import scaffold

    written = scaffold(directory, template, name)
    out = _out()
    out.line(f"Created {len(written)} files in {directory}:", "green")
    for p in written:
        out.line(f"  {p.relative_to(directory)}")
    out.line(f"Next: cd {directory} && reconciler validate && reconciler plan")
    return 0


# -- validate --------------------------------------------------------------------------------
@cli.command()
@target_options
@config_option
@OUTPUT
def validate(repo, ref, state_dir, paths, config_file, output):
    """Parse, validate and resolve every artefact; print every error, not the first."""
    from reconciler.engine.operations import load_desired
    from reconciler.store.writebehind import one_shot

    one_shot()
    target = make_target(repo, ref, state_dir, paths, config_file)
    desired = load_desired(target, snapshot=False)
    res = desired.resolution
    diags = desired.diagnostics
    errors = [d for d in diags if d.is_error]
    files = len({r.file for r in res.resources.values()})
    if output == "json":
        _out().json({"valid": not errors, "commit": desired.source.commit, "resources": len(res.resources),
                     "files": files, "errors": len(errors), "diagnostics": [d.to_json() for d in diags]})
        return 1 if errors else 0
    out = _out()
    from reconciler.cli.render import diagnostics

    diagnostics(out, diags)
    if errors:
        out.line(f"{len(errors)} error(s) in {len({d.file for d in errors})} file(s); "
                 f"{len(res.resources)} resource(s) valid.", "red")
        return 1
    out.line(f"Valid: {len(res.resources)} resources in {files} files"
             + (f" at commit {desired.source.commit[:8]}." if desired.source.commit else "."), "green")
    return 0


# -- plan ------------------------------------------------------------------------------------
@cli.command()
@target_options
@click.option("--base", default=None, metavar="REF", help="Plan against the artefacts at REF instead of the recorded state (previews).")
@click.option("-o", "--output", "output", type=click.Choice(["text", "markdown", "json"]), default="text", show_default=True)
@click.option("--out", "out_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Save the plan to FILE for `reconciler apply FILE`.")
@click.option("--detailed-exitcode", is_flag=True, help="Exit 0 with no changes, 2 with changes, 1 on error.")
@click.option("--max-prune", type=int, default=10, show_default=True, help="Hold plans deleting more resources than this.")
@click.option("--allow-prune", is_flag=True, help="Do not hold a plan that deletes more than --max-prune resources.")
@config_option
def plan(repo, ref, state_dir, paths, base, output, out_file, detailed_exitcode, max_prune, allow_prune, config_file):
    """Show the ordered actions that apply would take against the recorded state, and who gains or loses
    access to which datasets when policies change."""
    from reconciler.cli import render
    from reconciler.engine.operations import make_plan
    from reconciler.store.writebehind import one_shot

    one_shot()
    target = make_target(repo, ref, state_dir, paths, config_file)
    the_plan, diags = make_plan(target, base=base, max_prune=max_prune, allow_prune=allow_prune)
    errors = [d for d in diags if d.is_error]
    if output != "json":
        _print_diagnostics(diags)
    if out_file:
        out_file.parent.mkdir(parents=True, exist_ok=True)
        out_file.write_text(the_plan.dumps())
    if output == "json":
        _out().json(render.plan_json(the_plan))
    elif output == "markdown":
        sys.stdout.write(render.plan_markdown(the_plan))
    else:
        render.plan_text(_out(), the_plan)
        if out_file:
            _out().line(f"Saved the plan to {out_file}; apply it exactly with: reconciler apply {out_file}")
    if errors:
        if output == "text":
            _out(sys.stderr).line(f"{len(errors)} error(s): resources in broken files keep their last applied state.", "red")
        return 1
    if detailed_exitcode:
        return 2 if the_plan.has_changes else 0
    return 0


# -- apply -----------------------------------------------------------------------------------
@cli.command()
@click.argument("planfile", required=False, type=click.Path(dir_okay=False, path_type=Path))
@target_options
@click.option("--auto-approve", is_flag=True, help="Apply without asking for confirmation.")
@click.option("--allow-prune", is_flag=True, help="Apply even when the plan deletes more than --max-prune resources.")
@click.option("--max-prune", type=int, default=10, show_default=True)
@click.option("--parallelism", type=click.IntRange(1, 64), default=4, show_default=True,
              help="How many independent resources to apply at once.")
@OUTPUT
def apply(planfile, repo, ref, state_dir, paths, auto_approve, allow_prune, max_prune, parallelism, output):
    """Apply the plan in dependency order (or exactly the saved PLANFILE, refused if stale)."""
    from reconciler.cli import render
    from reconciler.core.plan import Plan
    from reconciler.engine import operations

    target = make_target(repo, ref, state_dir, paths)
    out = _out()
    quiet = output == "json"
    if planfile:
        try:
            the_plan = Plan.from_json(json.loads(planfile.read_text()))
        except FileNotFoundError:
            raise UserError(f"plan file {planfile} does not exist")
        except (ValueError, KeyError, TypeError) as e:
            raise UserError(f"{planfile} is not a saved Reconciler plan: {e}",
                            hint="make one with `reconciler plan --out FILE`")
        saved = True
    else:
        the_plan, diags = operations.make_plan(target, max_prune=max_prune, allow_prune=allow_prune)
        saved = False
        errors = [d for d in diags if d.is_error]
        if not quiet:
            _print_diagnostics(diags)
        if errors:
            if quiet:
                out.json({"ok": False, "applied": False, "diagnostics": [d.to_json() for d in diags],
                          "plan": render.plan_json(the_plan)})
            else:
                out.line(f"{len(errors)} error(s): nothing was applied. Fix them and run apply again.", "red")
            return 1
        if not quiet:
            render.plan_text(out, the_plan)
    if the_plan.held and not allow_prune:
        raise UserError(f"apply refused: {the_plan.held}")
    if not the_plan.has_changes:
        if quiet:
            out.json({"ok": True, "applied": False, "results": [], "plan": render.plan_json(the_plan)})
        return 0
    if not saved and not auto_approve:
        if not sys.stdin.isatty():
            raise UserError("apply needs --auto-approve (or a saved plan file) when not run from a terminal")
        answer = click.prompt("\nDo you want to perform these actions? Only 'yes' will be accepted", default="",
                              show_default=False)
        if answer.strip() != "yes":
            out.line("Apply cancelled; nothing was changed.")
            return 1
    from reconciler.store import lakegate

    progress = _Progress(out, the_plan, enabled=not quiet)
    # the workflows it runs share one lake connection, closed when the apply ends (store/lakegate.py)
    with progress, lakegate.held_between_writes(Path(target.state_dir) / "lake.duckdb"):
        result = operations.apply(target, the_plan, parallelism=parallelism, on_event=progress.event, saved=saved,
                                  allow_prune=allow_prune)
    if quiet:
        out.json({"ok": result.ok, "applied": True, "commit": the_plan.commit,
                  "results": [r.to_json() for r in result.results]})
    else:
        counts = result.counts()
        parts = ", ".join(f"{n} {phase}" for phase, n in sorted(counts.items()))
        out.line(("Apply complete: " if result.ok else "Apply finished with failures: ") + parts + ".",
                 "green" if result.ok else "red")
    return 0 if result.ok else 1


class _Progress:
    """Per-resource lines, and a rich progress bar on a terminal; silent with -o json."""

    def __init__(self, out, plan, enabled: bool):
        self.out = out
        self.enabled = enabled
        self.total = len(plan.changes)
        self.bar = None
        self.task = None
        import threading

        self.lock = threading.Lock()

    def __enter__(self):
        if self.enabled and self.out.colour:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn

            self.bar = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                console=self.out.console, transient=True)
            self.bar.__enter__()
            self.task = self.bar.add_task("applying", total=self.total)
        return self

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.__exit__(*exc)

    def event(self, kind, action, result):
        if not self.enabled:
            return
        from reconciler.cli.render import COLOURS

        with self.lock:
            if kind == "start":
                if self.bar is not None:
                    self.bar.update(self.task, description=f"{action.symbol} {action.id}")
                return
            mark = "ok" if result.phase in ("Ready", "Deleted") else result.phase
            text = f"  {action.symbol:>3} {action.id}: {result.phase}"
            if result.message:
                text += f" ({result.message})"
            text += f" [{result.seconds:.2f}s]"
            self.out.line(text, COLOURS.get(result.phase) if mark != "ok" else "green")
            if self.bar is not None:
                self.bar.advance(self.task)


# -- get -------------------------------------------------------------------------------------
TYPE_ALIASES = {
    "workspaces": "workspace", "ws": "workspace", "depots": "depot", "workflows": "workflow", "wf": "workflow",
    "policies": "policy", "services": "service", "svc": "service", "secrets": "secret", "stacks": "stack",
    "operators": "operator", "bundles": "bundle", "dataproducts": "dataproduct", "dp": "dataproduct",
    "products": "dataproduct", "resources": None, "all": None,
}


@cli.command()
@click.argument("kind", required=False)
@click.argument("name", required=False)
@click.option("-w", "--workspace", default=None, help="Only this workspace.")
@click.option("-o", "--output", "output", type=click.Choice(["table", "yaml", "json", "odcs", "odps"]), default="table",
              show_default=True, help="odcs and odps: `get dataproduct NAME` as an ODCS contract / ODPS product (YAML).")
@click.option("--state-dir", type=click.Path(file_okay=False, path_type=Path), default=None)
@click.option("--run", "run_id", default=None, help="`get runs WORKFLOW`: show this run's jobs.")
@click.option("--upstream", "direction", flag_value="upstream", help="`get lineage DATASET`: only what feeds it.")
@click.option("--downstream", "direction", flag_value="downstream", help="`get lineage DATASET`: only what it feeds.")
def get(kind, name, workspace, output, state_dir, run_id, direction):
    """List resources with phase, health and applied commit.

    Also: `get catalog [DATASET]`, `get runs WORKFLOW [--run ID]`, `get lineage DATASET [--upstream|--downstream]`,
    `get dataproduct [NAME] [-o odcs|odps]` (ports, resources, lineage, SLOs and health).
    """
    from reconciler.cli import getters

    target = make_target(".", None, state_dir, ())
    if kind is not None and TYPE_ALIASES.get(kind.lower(), kind.lower()) == "dataproduct":
        return getters.get_dataproduct(target.state_dir, name, output)
    if output in ("odcs", "odps"):
        raise UserError(f"-o {output} exports a data product: `reconciler get dataproduct NAME -o {output}`")
    if kind == "catalog":
        return getters.get_catalog(target.state_dir, name, workspace, output)
    if kind == "runs":
        return getters.get_runs(target.state_dir, name, workspace, run_id, output)
    if kind == "lineage":
        return getters.get_lineage(target.state_dir, name, direction, output)
    return getters.get_resources(target.state_dir, kind, name, workspace, output)


# -- run / logs ------------------------------------------------------------------------------
@cli.command("run")
@click.argument("workflow")
@target_options
@click.option("-w", "--workspace", default=None, help="The workflow's workspace (default public).")
@OUTPUT
def run_(workflow, repo, ref, state_dir, paths, workspace, output):
    """Run an applied workflow now (exit 0 when it succeeded, 1 when it failed)."""
    from reconciler.engine import operations

    target = make_target(repo, ref, state_dir, paths)
    outcome = operations.run_workflow(target, workflow, workspace)
    if output == "json":
        _out().json({"run_id": outcome.run_id, "status": outcome.status, "message": outcome.message,
                     "jobs": outcome.jobs, "rows_in": outcome.rows_in, "rows_out": outcome.rows_out})
    else:
        out = _out()
        for job, status in outcome.jobs.items():
            out.line(f"  {job}: {status}", {"succeeded": "green", "failed": "red", "skipped": "yellow"}.get(status))
        out.line(f"Run {outcome.run_id} {outcome.status}: {outcome.message}",
                 "green" if outcome.status == "succeeded" else "red")
    return 0 if outcome.status == "succeeded" else 1


@cli.command()
@click.argument("workflow")
@click.option("-w", "--workspace", default=None, help="The workflow's workspace (default public).")
@click.option("--run", "run_id", default=None, help="A run id (default: the latest run).")
@click.option("--job", default=None, help="Only this job's log.")
@click.option("-f", "--follow", is_flag=True, help="Keep printing while the run is going on.")
@click.option("--state-dir", type=click.Path(file_okay=False, path_type=Path), default=None)
def logs(workflow, workspace, run_id, job, follow, state_dir):
    """Print the job logs of a workflow run."""
    from reconciler.cli.getters import show_logs

    target = make_target(".", None, state_dir, ())
    return show_logs(target.state_dir, workflow, workspace, run_id, job, follow)


# -- delete ----------------------------------------------------------------------------------
@cli.command()
@click.argument("kind", required=False)
@click.argument("name", required=False)
@click.option("-f", "--file", "file_", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Delete the resources defined in this artefact file.")
@click.option("-w", "--workspace", default=None, help="Workspace of a workspace-scoped resource (default public).")
@click.option("--cascade", is_flag=True, help="Also delete the resources that depend on it (dependents first).")
@click.option("--state-dir", type=click.Path(file_okay=False, path_type=Path), default=None)
@click.option("--auto-approve", "--yes", "auto_approve", is_flag=True, help="Do not ask for confirmation.")
@OUTPUT
def delete(kind, name, file_, workspace, cascade, state_dir, auto_approve, output):
    """Delete applied resources, dependents first; refuses while others depend on them unless --cascade."""
    from reconciler.cli.getters import run_delete

    target = make_target(".", None, state_dir, ())
    return run_delete(target, kind, name, file_, workspace, cascade, auto_approve, output)


# -- daemon ----------------------------------------------------------------------------------
@cli.command()
@click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="reconciler.yaml (flags of the same names override it).")
@click.option("--repo", default=None, help="Repository to track: a path, file://, https:// or ssh:// URL.")
@click.option("--branch", default=None, help="Tracked branch (default main).")
@click.option("--interval", default=None, help="Poll interval, e.g. 30s.")
@click.option("--state-dir", default=None, help="State directory.")
@click.option("--status-branch", default=None, help="Where status is committed (default reconciler/status).")
@click.option("--max-prune", type=int, default=None, help="Hold deletes when a plan has more than this.")
@click.option("--listen", default=None, help="HTTP address (default 127.0.0.1:8080).")
@click.option("--webhook-secret-file", default=None, help="Secret that signs webhook deliveries.")
@click.option("--drift-interval", default=None, help="How often to look for drift, e.g. 5m.")
@click.option("--self-heal/--no-self-heal", default=None, help="Re-apply resources whose observed state drifted.")
@click.option("--slo-interval", default=None, help="How often to evaluate data products' SLOs, e.g. 1m.")
@click.option("--lake-hold", default=None,
              help="Keep the lake open this long after a workflow run, e.g. 60s (faster runs, more memory; default 0s).")
def daemon(config_file, repo, branch, interval, state_dir, status_branch, max_prune, listen, webhook_secret_file,
           drift_interval, self_heal, slo_interval, lake_hold):
    """Keep the state converged to a git branch; report back on the status branch (SIGTERM stops it)."""
    import logging
    import signal

    from reconciler.daemon.config import load_config
    from reconciler.daemon.service import Daemon

    overrides = {"repo": repo, "branch": branch, "interval": interval, "state_dir": state_dir,
                 "status_branch": status_branch, "max_prune": max_prune, "listen": listen,
                 "webhook_secret_file": webhook_secret_file, "drift_interval": drift_interval,
                 "self_heal": self_heal, "slo_interval": slo_interval, "lake_hold": lake_hold}
    if config_file is None and repo is None:
        raise UserError("the daemon needs --config FILE or --repo REPO")
    config = load_config(config_file, overrides)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("apscheduler").setLevel(logging.WARNING)  # it logs every poll at INFO
    d = Daemon(config)

    def on_term(signum, frame):
        d.stop.set()  # the resource in hand finishes; the loop exits

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    click.echo(f"reconciler daemon: tracking {config.branch} of {config.repo}; state in {config.state_dir}; "
               f"http on {config.host}:{config.port}", err=True)
    d.run()
    return 0
