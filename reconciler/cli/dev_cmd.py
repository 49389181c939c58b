"""`reconciler dev DIR`: apply each save of a working tree into an isolated dev environment."""
from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path

import click

from reconciler.cli.main import State, cli


@cli.command()
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--state-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="The dev environment's state (default DIR/.reconciler/dev; never the tracked one).")
@click.option("--allow-prune", is_flag=True, help="Apply plans that delete more than 10 resources.")
@click.option("--debounce", "debounce_ms", type=click.IntRange(0, 10_000), default=200, show_default=True,
              help="Milliseconds to wait for a burst of saves to settle.")
def dev(directory: Path, state_dir: Path | None, allow_prune: bool, debounce_ms: int):
    """Watch DIR and apply each save into an isolated dev environment (Ctrl-C stops)."""
    import signal
    import threading

    from reconciler.cli.render import Out
    from reconciler.engine.dev import default_state_dir, dev_loop

    state_dir = (state_dir or default_state_dir(directory)).absolute()
    out = Out(sys.stdout)
    stop = threading.Event()

    def on_signal(signum, frame):
        stop.set()  # the resource in hand finishes; the watch ends

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    out.line(f"reconciler dev: watching {directory.resolve()}; dev state in {state_dir} (Ctrl-C stops)", "bold")
    sys.stdout.flush()
    dev_loop(directory, state_dir, on_cycle=lambda report: print_cycle(out, report), stop=stop,
             debounce_ms=debounce_ms, allow_prune=allow_prune)
    out.line("reconciler dev: stopped.")
    return 0


def print_cycle(out, report) -> None:
    """A short plan and the result of one cycle."""
    from reconciler.cli.render import COLOURS, diagnostics

    stamp = datetime.now().strftime("%H:%M:%S")
    what = "start" if not report.changed else "saved " + ", ".join(report.changed[:5]) + \
        (f" (+{len(report.changed) - 5} more)" if len(report.changed) > 5 else "")
    out.line()
    out.line(f"[{stamp}] #{report.number} {what}", "bold")
    diagnostics(out, report.diagnostics)
    if report.plan is not None and not report.errors:
        out.line(report.summary)
        for a in report.plan.changes:
            out.line(f"  {a.symbol:>3} {a.id}", COLOURS[a.action])
    if report.error:
        out.line(f"error: {report.error}" + ("; resources keep their dev state." if report.errors else "."), "red")
        if report.error_hint:
            out.line(f"  hint: {report.error_hint}")
        if report.traceback and State.debug:
            out.line(report.traceback)
    elif report.result is not None:
        result = report.result
        failed = [r for r in result.results if r.phase not in ("Ready", "Deleted")]
        for r in failed:
            out.line(f"  {r.id}: {r.phase}" + (f" ({r.message})" if r.message else ""), COLOURS.get(r.phase))
        counts = ", ".join(f"{n} {phase}" for phase, n in sorted(result.counts().items()))
        if result.ok:
            out.line(f"ok: {counts} [{report.seconds:.2f}s]", "green")
        else:
            out.line(f"failed: {counts}" + (" (interrupted)" if result.interrupted else "")
                     + f" [{report.seconds:.2f}s]", "red")
    else:
        out.line(f"ok: no changes [{report.seconds:.2f}s]", "green")
    out.stream.flush()
