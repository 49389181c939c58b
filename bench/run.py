#!/usr/bin/env python3
"""Times the Reconciler CLI on a generated repository, as fresh processes, beside the targets and the peers.

    python bench/run.py [--artefacts 10000] [--runs 5] [--keep] [--json results.jsonl]

Builds a repository with bench/gen_repo.py in a temporary directory, then runs the
`reconciler` console script installed next to this Python (sys.executable), each
measurement `--runs` times (median, min, max of the wall time from spawn to exit):

  validate (cold)      `reconciler validate --repo R --state-dir S`, S/cache removed first
  plan (cold, empty)   `reconciler plan --repo R --state-dir S --detailed-exitcode`, S removed first
  apply (once)         `reconciler apply --repo R --state-dir S --auto-approve`, one run
  plan (no changes)    the plan again, everything applied and the cache warm
  plan (one file)      the plan after a new commit editing one workflow (a new edit each run)
  --help               `reconciler --help`: interpreter and import floor

Before each operation and after the last, `bench/yardstick.py` parses the repository's files with
`yaml.CSafeLoader` in a fresh process: the measurement issue 3 gives for its machine (~1.7 s for 10,000
files). Each operation's median is also shown scaled to that machine (median x 1.7 s / the yardstick
around it, the mean of the readings just before and just after it), as this machine's speed wanders.

Exit codes are checked (plan uses --detailed-exitcode: 2 with changes, 0 without); an
unexpected one is shown in the note column and makes this script exit 1. Process output
goes to WORK/logs/. The peers' figures are read from --peers (a Markdown table with
tool, N, cold, nothing-changed and one-edit columns) when that file exists: the rows
with N equal to --artefacts, else the nearest N, are shown as they are written there.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bytecode  # noqa: E402  (a sibling script)
import gen_repo  # noqa: E402  (a sibling script, not a package)
import yardstick  # noqa: E402  (a sibling script)
from settle import wait_for_background  # noqa: E402

DEFAULT_PEERS = Path("/work/shared/peers/README.md")


@dataclass
class Operation:
    key: str
    label: str
    target: float | None  # seconds
    peer_column: str | None  # which peers' column it sits beside: cold | nochange | edit
    expect_rc: int


OPERATIONS = [
    Operation("validate_cold", "validate (cold)", 1.5, "cold", 0),
    Operation("plan_cold", "plan (cold, empty state)", 1.5, "cold", 2),
    Operation("apply", "apply --auto-approve (once)", None, None, 0),
    Operation("plan_nochange", "plan (all applied, no changes)", 0.3, "nochange", 0),
    Operation("plan_one_edit", "plan (after a one-file commit)", 0.4, "edit", 2),
    Operation("help", "reconciler --help", 0.15, None, 0),
]


@dataclass
class Result:
    op: Operation
    walls: list[float] = field(default_factory=list)
    rss_mb: list[float] = field(default_factory=list)
    rcs: list[int] = field(default_factory=list)
    logs: list[str] = field(default_factory=list)
    yardstick_s: float | None = None  # the CSafeLoader parse around this operation (bench/yardstick.py)
    issue_s: float | None = None  # what the issue's machine takes for it

    @property
    def scaled(self) -> float | None:
        """The median on the machine issue 3 describes: where the yardstick takes ~1.7 s per 10,000 files."""
        if not self.walls or not self.yardstick_s:
            return None
        return statistics.median(self.walls) * self.issue_s / self.yardstick_s

    @property
    def ok(self) -> bool:
        return bool(self.rcs) and all(rc == self.op.expect_rc for rc in self.rcs)

    @property
    def note(self) -> str:
        bad = [rc for rc in self.rcs if rc != self.op.expect_rc]
        return f"exit {bad[0]}, want {self.op.expect_rc} ({len(bad)}/{len(self.rcs)})" if bad else ""

    @property
    def first_bad_log(self) -> str | None:
        return next((log for rc, log in zip(self.rcs, self.logs) if rc != self.op.expect_rc), None)

    def record(self) -> dict:
        w = self.walls
        return {"operation": self.op.key, "median_s": statistics.median(w) if w else None,
                "min_s": min(w) if w else None, "max_s": max(w) if w else None, "runs": len(w),
                "target_s": self.op.target, "rss_mb": max(self.rss_mb) if self.rss_mb else None,
                "yardstick_s": self.yardstick_s, "scaled_s": self.scaled,
                "rcs": self.rcs, "ok": self.ok, "note": self.note}


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:  # it ended meanwhile
        pass


def run_timed(cmd: list[str], cwd: Path, env: dict, timeout: float, log: Path) -> tuple[float, int, float]:
    """Wall seconds, exit code and peak RSS (MB) of one fresh process; its output goes to `log`."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as fh:
        fh.write(("$ " + " ".join(cmd) + "\n").encode())
        fh.flush()
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=fh,
                                stderr=subprocess.STDOUT, start_new_session=True)
        # a hung run is killed with its own process group, which only it and its children are in
        timer = threading.Timer(timeout, _kill_group, (proc.pid,))
        timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            timer.cancel()
        wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    return wall, proc.returncode, usage.ru_maxrss / 1024


class Bench:
    def __init__(self, exe: str, work: Path, repo: Path, state: Path, timeout: float, cache_subdir: str):
        self.exe, self.work, self.repo, self.state = exe, work, repo, state
        self.timeout, self.cache_subdir = timeout, cache_subdir
        self.env = dict(os.environ, NO_COLOR="1", PYTHONUNBUFFERED="1", RECONCILER_STATE_DIR=str(state))
        self.yardsticks: list[float] = []
        self.issue_s: float | None = None  # the yardstick on the issue's machine, for this repository

    def measure(self, op: Operation, args: list[str], runs: int, before=None, timeout: float | None = None) -> Result:
        res = Result(op)
        for k in range(runs):
            wait_for_background(self.state)  # the last command's cache writes end first (bench/settle.py)
            if before:
                before(k)
            log = self.work / "logs" / f"{op.key}-{k}.log"
            wall, rc, rss = run_timed([self.exe, *args], self.work, self.env, timeout or self.timeout, log)
            res.walls.append(wall)
            res.rcs.append(rc)
            res.rss_mb.append(rss)
            res.logs.append(str(log))
        print(f"  {op.label:32} median {statistics.median(res.walls):8.3f} s  {res.note}"
              + (f"; see {res.first_bad_log}" if res.note else ""), flush=True)
        return res

    def yardstick(self) -> float:
        """Seconds bench/yardstick.py's CSafeLoader parse takes now, in a fresh process."""
        wait_for_background(self.state)
        out = subprocess.run([sys.executable, str(Path(yardstick.__file__)), str(self.repo)], check=True,
                             capture_output=True, text=True).stdout
        reading = json.loads(out)
        self.yardsticks.append(reading["parse_s"])
        self.issue_s = yardstick.issue_parse_s(reading["files"])
        return reading["parse_s"]

    def drop_cache(self, _k: int = 0) -> None:
        shutil.rmtree(self.state / self.cache_subdir, ignore_errors=True)

    def drop_state(self, _k: int = 0) -> None:
        shutil.rmtree(self.state, ignore_errors=True)

    def commit_one_edit(self, _k: int = 0) -> None:
        gen_repo.change_one(self.repo)

    def run_all(self, runs: int, apply_timeout: float) -> list[Result]:
        ops = {op.key: op for op in OPERATIONS}
        repo = ["--repo", str(self.repo), "--state-dir", str(self.state)]
        plan = ["plan", *repo, "--detailed-exitcode"]
        steps = [
            lambda: self.measure(ops["validate_cold"], ["validate", *repo], runs, before=self.drop_cache),
            lambda: self.measure(ops["plan_cold"], plan, runs, before=self.drop_state),
            lambda: self.measure(ops["apply"], ["apply", *repo, "--auto-approve"], 1, before=self.drop_state,
                                 timeout=apply_timeout),
            lambda: self.measure(ops["plan_nochange"], plan, runs),
            lambda: self.measure(ops["plan_one_edit"], plan, runs, before=self.commit_one_edit),
            lambda: self.measure(ops["help"], ["--help"], runs),
        ]
        results = []
        before = self.yardstick()
        for step in steps:
            res = step()
            after = self.yardstick()
            res.yardstick_s, res.issue_s = (before + after) / 2, self.issue_s
            results.append(res)
            before = after
        return results


# --------------------------------------------------------------------------- peers

def read_peers(path: Path, n: int) -> tuple[list[str], dict[str, dict[str, str]]]:
    """Peer column titles, and per title the figures as written: {cold|nochange|edit: text}.

    Reads the first Markdown table whose header has a `tool` and an `N` column; per tool
    the row with N == n, else the one with the nearest N."""
    if not path.is_file():
        return [], {}
    rows = [[c.strip() for c in line.strip().strip("|").split("|")]
            for line in path.read_text().splitlines() if line.strip().startswith("|")]
    if len(rows) < 3:
        return [], {}
    head = [h.lower() for h in rows[0]]
    if "tool" not in head or "n" not in head:
        return [], {}
    tool_at, n_at = head.index("tool"), head.index("n")
    columns = {}
    for i, h in enumerate(head):
        if "cold" in h:
            columns["cold"] = i
        elif "nothing changed" in h or "warm" in h:
            columns["nochange"] = i
        elif "edit" in h:
            columns["edit"] = i
    best: dict[str, tuple[int, list[str]]] = {}
    for row in rows[2:]:  # rows[1] is the --- separator
        digits = re.sub(r"[^0-9]", "", row[n_at]) if len(row) > n_at else ""
        if len(row) != len(head) or not digits:
            continue
        peer_n = int(digits)
        tool = row[tool_at]
        if tool not in best or abs(peer_n - n) < abs(best[tool][0] - n):
            best[tool] = (peer_n, row)
    titles, figures = [], {}
    for tool, (peer_n, row) in best.items():
        title = tool if peer_n == n else f"{tool} (N={peer_n:,})"
        titles.append(title)
        figures[title] = {key: row[i] for key, i in columns.items()}
    return titles, figures


# --------------------------------------------------------------------------- output

def seconds(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f} s"


def table_rows(results: list[Result], peer_titles: list[str], peers: dict) -> tuple[list[str], list[list[str]]]:
    header = ["operation", "median", "min", "max", "runs", "target", "on the issue's machine", "peak RSS",
              *peer_titles, "note"]
    rows = []
    for r in results:
        rec = r.record()
        peer_cells = [peers[t].get(r.op.peer_column, "-") if r.op.peer_column else "-" for t in peer_titles]
        rss = f"{rec['rss_mb']:.0f} MB" if rec["rss_mb"] is not None else "-"
        rows.append([r.op.label, seconds(rec["median_s"]), seconds(rec["min_s"]), seconds(rec["max_s"]),
                     str(rec["runs"]), seconds(r.op.target), seconds(rec["scaled_s"]), rss, *peer_cells,
                     rec["note"]])
    return header, rows


def yardstick_row(readings: list[float], issue_s: float, columns: int) -> list[str]:
    """The yardstick's own row: the CSafeLoader parse of the repository's files, against the issue's figure."""
    row = ["yardstick: CSafeLoader parse, 1 process", seconds(statistics.median(readings)), seconds(min(readings)),
           seconds(max(readings)), str(len(readings)), "-", seconds(issue_s), "-"]
    return row + ["-"] * (columns - len(row) - 1) + ["issue 3's reading of its machine"]


def print_table(title: str, header: list[str], rows: list[list[str]]) -> None:
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
        print(title)
        for line in [header, ["-" * w for w in widths], *rows]:
            print("  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip())
        return
    table = Table(title=title)
    for i, h in enumerate(header):
        table.add_column(h, justify="right" if 0 < i < len(header) - 1 else "left")
    for r in rows:
        table.add_row(*r)
    Console(width=max(160, shutil.get_terminal_size().columns)).print(table)


# --------------------------------------------------------------------------- main

def find_cli() -> str:
    beside = Path(sys.executable).parent / "reconciler"
    if beside.exists():
        return str(beside)
    found = shutil.which("reconciler")
    if not found:
        sys.exit(f"no `reconciler` console script next to {sys.executable} or on PATH: "
                 "install the project (pip install -e .) into this Python's environment")
    return found


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--artefacts", type=int, default=10_000)
    ap.add_argument("--folders", type=int, help="default: one per 50 artefacts")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--work", type=Path, help="working directory (default: a new temporary one)")
    ap.add_argument("--keep", action="store_true", help="keep the working directory")
    ap.add_argument("--peers", type=Path, default=DEFAULT_PEERS, help="peers' Markdown table")
    ap.add_argument("--cache-subdir", default="cache", help="the state dir's cache folder, removed for cold runs")
    ap.add_argument("--timeout", type=float, default=600, help="seconds per process")
    ap.add_argument("--apply-timeout", type=float, default=3600, help="seconds for the one apply")
    ap.add_argument("--json", type=Path, help="append one JSON record per operation to this file")
    ap.add_argument("--source", action="store_true",
                    help="do not compile the package first: time it as an editable install starts with "
                         "PYTHONDONTWRITEBYTECODE set, compiling every module from source (bench/bytecode.py)")
    ap.add_argument("--loose", action="store_true",
                    help="keep the repository's objects loose, as gen_repo.py left them up to session 11")
    a = ap.parse_args(argv)

    exe = find_cli()
    pkg = bytecode.package_dir()
    if not a.source:
        bytecode.compile_package(pkg)
    work = a.work.resolve() if a.work else Path(tempfile.mkdtemp(prefix="reconciler-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    repo, state = work / "repo", work / "state"
    folders = a.folders or max(1, a.artefacts // 50)
    results: list[Result] = []
    try:
        t0 = time.perf_counter()
        gen_repo.generate(repo, a.artefacts, folders, a.loose)
        print(f"# {exe}  python {platform.python_version()}  cpus {os.cpu_count()}  "
              f"generated {a.artefacts} artefacts in {folders} folders at {repo} "
              f"({'loose objects' if a.loose else 'packed'}) "
              f"in {time.perf_counter() - t0:.1f} s; {pkg} "
              f"{'from source (--source)' if a.source else 'compiled to bytecode first'}", flush=True)
        bench = Bench(exe, work, repo, state, a.timeout, a.cache_subdir)
        results = bench.run_all(a.runs, a.apply_timeout)
    finally:
        # a failed run keeps its logs; a clean temporary one is removed unless --keep
        all_ok = bool(results) and all(r.ok for r in results)
        if all_ok and not a.keep and not a.work:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"# working directory kept: {work}", flush=True)

    titles, peers = read_peers(a.peers, a.artefacts)
    header, rows = table_rows(results, titles, peers)
    if bench.yardsticks:
        rows.append(yardstick_row(bench.yardsticks, bench.issue_s, len(header)))
    print_table(f"Reconciler, {a.artefacts:,} artefacts, fresh processes, median of {a.runs}"
                + (f"; peers from {a.peers}" if titles else ""), header, rows)
    if a.json:
        with a.json.open("a") as fh:
            for r in results:
                fh.write(json.dumps({**r.record(), "artefacts": a.artefacts, "cpus": os.cpu_count(),
                                     "at": time.strftime("%Y-%m-%dT%H:%M:%S")}) + "\n")
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main())
