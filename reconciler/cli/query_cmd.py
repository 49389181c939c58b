"""`reconciler query SQL --as USER`: read-only SQL as one user would see it, through the same policy
enforcement as the daemon's services and `/api/v1/query`."""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import click

from reconciler.cli.main import cli
from reconciler.core.diagnostics import UserError


def _directory(config_path: Path | None):
    from reconciler.query.subjects import Directory

    path = config_path or (Path(os.environ["RECONCILER_CONFIG"]) if os.environ.get("RECONCILER_CONFIG") else None)
    if path is None:
        return Directory.empty()
    from reconciler.daemon.config import load_config

    return Directory.from_config(load_config(path))


def _with_retry(fn, patience: float = 5.0, lake: Path | None = None):
    """A daemon may hold the state or the lake for a moment (a write, a workflow run, or the lake kept open
    between runs, which it closes when asked): retry briefly."""
    from reconciler.query.engine import LakeBusy
    from reconciler.store import lakegate

    deadline = time.monotonic() + patience
    while True:
        try:
            return fn()
        except (LakeBusy, UserError) as exc:
            busy = isinstance(exc, LakeBusy) or "in use by" in exc.message
            if not busy or time.monotonic() >= deadline:
                raise
            if isinstance(exc, LakeBusy) and lake is not None:
                lakegate.ask_release(lake)
            time.sleep(0.25)


@cli.command()
@click.argument("sql")
@click.option("--as", "user", required=True, metavar="USER",
              help="Run as this user (from the instance config's `users:`), with that user's policies.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Instance config naming users and groups (default: $RECONCILER_CONFIG).")
@click.option("--state-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="State directory (default: .reconciler/ here, or $RECONCILER_STATE_DIR).")
@click.option("--limit", type=click.IntRange(0, 10_000), default=1000, show_default=True, help="Rows at most.")
@click.option("-o", "--output", type=click.Choice(["table", "json", "csv"]), default="table", show_default=True)
def query(sql, user, config_path, state_dir, limit, output):
    """Run read-only SQL over lake and depot datasets as USER would see them.

    Name datasets by table name (FROM merchant_daily_totals) or by quoted address
    (FROM "lake://payments/merchant_daily_totals"). Policies decide what USER reads: datasets
    they may not read are refused, masked columns come back masked, filtered rows are left out.
    """
    from reconciler.engine.operations import Target
    from reconciler.query.engine import QueryEngine

    state = Path(state_dir).absolute() if state_dir else Target(repo=".").state_dir.absolute()
    if not (state / "state.duckdb").exists():
        raise UserError(f"no state in {state}", hint="apply something first, or pass --state-dir")
    directory = _directory(config_path)
    subject = directory.subject(user)
    engine = QueryEngine(state, directory)
    try:
        result = _with_retry(lambda: engine.run(subject, sql, limit=limit), lake=state / "lake.duckdb")
    finally:
        engine.close()
    if output == "json":
        click.echo(json.dumps({"columns": result.columns, "types": result.types, "rows": result.to_json_rows(),
                               "truncated": result.truncated}, indent=2))
    elif output == "csv":
        sys.stdout.write(result.to_csv())
    else:
        from reconciler.cli.render import Out, table

        out = Out(sys.stdout)
        table(out, result.columns, [["" if v is None else str(v) for v in r] for r in result.rows],
              empty="No rows.")
        note = f"{len(result.rows)} row(s)" + ("; more rows exist (raise --limit)" if result.truncated else "")
        click.echo(note, err=True)
    return 0
