#!/usr/bin/env python3
"""Interleaved A/B timing of two (or more) versions of the code on one command, as fresh processes.

This machine's speed drifts by tens of percent within minutes, so two versions are only comparable
when their runs alternate: A B B A A B ... Each version is a git revision of this repository, exported
into a temporary folder and put first on PYTHONPATH; every run starts in that folder's parent, so the
checkout's own `reconciler/` (which `python -m` would find first from the checkout's folder) never
shadows it. Before each run the state dir is removed (`--cold`, the default) or kept (`--warm`).

    python bench/ab.py --revs HEAD~3 HEAD --runs 10 -- plan --repo R --state-dir STATE --detailed-exitcode
    python bench/ab.py --revs main . --runs 8 -- validate --repo R --state-dir STATE   # "." = the work tree

STATE in the command is replaced by a state dir of each version's own (`--state-from DIR`: each starts as
a copy of DIR, e.g. an applied state; `--prepare "ARGS"`: a reconciler command run once per version
first, untimed, e.g. a plan that fills that version's caches; `--before "SHELL"`: a command run before
every run, e.g. a one-file commit, so that each version plans a commit of its own). Prints, per version, the
median, first quartile and minimum of the wall time, and of the CPU time of the process and the
children it waited for (forked workers; not the detached cache writer). Exit codes other than 0 and 2
are reported. Each exported package is compiled to bytecode first, as an installed one is (`--source`:
not; see bench/bytecode.py).
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bytecode import compile_package  # noqa: E402  (sibling scripts)
from settle import wait_for_background  # noqa: E402


def export(rev: str, dest: Path, compiled: bool) -> Path:
    """The `reconciler` package of `rev` (or of the work tree for ".") under dest, with its bytecode unless
    not `compiled` (bench/bytecode.py)."""
    dest.mkdir(parents=True)
    if rev == ".":
        shutil.copytree(ROOT / "reconciler", dest / "reconciler",
                        ignore=shutil.ignore_patterns("__pycache__"))
    else:
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "reconciler"], check=True,
                                 capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    if compiled:
        compile_package(dest / "reconciler")
    return dest


def run_once(python: str, tree: Path, args: list[str], state: Path, cold: bool) -> tuple[float, float, int]:
    wait_for_background(state)  # the last command's cache writes end first (bench/settle.py)
    if cold:
        shutil.rmtree(state, ignore_errors=True)
    env = dict(os.environ, PYTHONPATH=str(tree))
    started = time.perf_counter()
    proc = subprocess.Popen([python, "-m", "reconciler", *[a.replace("STATE", str(state)) for a in args]],
                            env=env, cwd=tree.parent, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    return time.perf_counter() - started, usage.ru_utime + usage.ru_stime, os.waitstatus_to_exitcode(status)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--revs", nargs="+", required=True, help='git revisions; "." is the work tree')
    ap.add_argument("--runs", type=int, default=8, help="runs of each version")
    ap.add_argument("--warm", action="store_true", help="keep each version's state dir between runs")
    ap.add_argument("--pause", type=float, default=0.5, help="seconds between runs (a detached writer ends)")
    ap.add_argument("--state-from", type=Path, help="copy this state dir for each version to start from")
    ap.add_argument("--prepare", help="a reconciler command (STATE allowed) run once per version, untimed")
    ap.add_argument("--before", help="a shell command run before every timed run")
    ap.add_argument("--source", action="store_true", help="no bytecode: every run compiles the modules it imports")
    ap.add_argument("command", nargs=argparse.REMAINDER, help="-- and the reconciler command")
    a = ap.parse_args()
    command = a.command[1:] if a.command[:1] == ["--"] else a.command
    if not command:
        ap.error("give the command after --")
    work = Path(tempfile.mkdtemp(prefix="reconciler-ab-"))
    try:
        trees = [export(rev, work / f"v{i}" / "src", not a.source) for i, rev in enumerate(a.revs)]
        for i, tree in enumerate(trees):
            if a.state_from:
                shutil.copytree(a.state_from, work / f"v{i}" / "state", symlinks=True)
            if a.prepare:
                run_once(sys.executable, tree, a.prepare.split(), work / f"v{i}" / "state", False)
        walls: list[list[float]] = [[] for _ in trees]
        cpus: list[list[float]] = [[] for _ in trees]
        for k in range(a.runs):
            order = list(range(len(trees))) if k % 2 == 0 else list(reversed(range(len(trees))))
            for i in order:
                time.sleep(a.pause)
                if a.before:
                    subprocess.run(a.before, shell=True, check=True)
                wall, cpu, code = run_once(sys.executable, trees[i], command, work / f"v{i}" / "state",
                                           not (a.warm or a.state_from))
                walls[i].append(wall)
                cpus[i].append(cpu)
                if code not in (0, 2):
                    print(f"# {a.revs[i]}: run {k + 1} exited {code}", file=sys.stderr)
        print(f"{'version':>12} {'wall median':>12} {'q1':>8} {'min':>8} {'cpu median':>11} {'q1':>8}   ({a.runs} runs each)")
        for rev, w, c in zip(a.revs, walls, cpus):
            print(f"{rev:>12} {statistics.median(w):11.3f}s {sorted(w)[len(w) // 4]:7.3f}s {min(w):7.3f}s "
                  f"{statistics.median(c):10.3f}s {sorted(c)[len(c) // 4]:7.3f}s")
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
