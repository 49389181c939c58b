"""The daemon's reaction to a push: from `git push` of a one-file change to the status commit naming it.

Generates the 10,000-artefact repository (bench/gen_repo.py), pushes it to a bare
remote, starts `reconciler daemon` on it (the first sync applies everything and runs
every workflow: ~12 minutes at 10,000 on 2 cores), then pushes one-file changes (the
workflow `gen_repo.change_one` edits, which the daemon re-runs) and times each until
the status branch has a commit naming the pushed commit. Half of the pushes wait for
the poll (the poll interval is part of their time, as it would be in use); the other
half are followed at once by a signed GitHub push delivery to `/webhook`. Also reports
the daemon's own reconcile time (from `/metrics`) and its resident memory.

    python bench/daemon_bench.py [--artefacts 10000] [--changes 20] [--interval 1s] [--work DIR]

`--work DIR` keeps the repository, remote and state in DIR; run again with the same DIR,
the daemon restarts on the synced state and the ~12-minute first sync is not paid again.
"""
from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pygit2

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gen_repo  # noqa: E402

SECRET = b"bench-webhook-secret"


def proc_mb(pid: int, field: str) -> float:
    """VmRSS (now) or VmHWM (peak) of a process, in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def status_message(bare: pygit2.Repository) -> str:
    ref = bare.references.get("refs/heads/reconciler/status")
    return ref.peel(pygit2.Commit).message if ref is not None else ""


def reconcile_seconds(port: int) -> tuple[float, float]:
    """(sum, count) of the daemon's reconcile duration histogram."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    values = {}
    for line in text.splitlines():
        if line.startswith(("reconciler_reconcile_seconds_sum", "reconciler_reconcile_seconds_count")):
            name, value = line.split()
            values[name.rsplit("_", 1)[1]] = float(value)
    return values.get("sum", 0.0), values.get("count", 0.0)


def deliver_push(port: int, commit: str) -> None:
    body = json.dumps({"ref": f"refs/heads/{gen_repo.BRANCH}", "after": commit}).encode()
    signature = "sha256=" + hmac.new(SECRET, body, hashlib.sha256).hexdigest()
    request = urllib.request.Request(f"http://127.0.0.1:{port}/webhook", data=body, method="POST", headers={
        "Content-Type": "application/json", "X-GitHub-Event": "push", "X-Hub-Signature-256": signature})
    with urllib.request.urlopen(request, timeout=10) as r:
        assert r.status == 202, r.status


def wait_for(commit: str, bare: pygit2.Repository, p: subprocess.Popen, log: Path, timeout: float,
             step: float = 0.01) -> None:
    deadline = time.monotonic() + timeout
    while commit not in status_message(bare):
        if p.poll() is not None:
            raise SystemExit(f"the daemon exited ({p.returncode}):\n{log.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            raise SystemExit(f"no status commit for {commit} after {timeout:.0f} s; see {log}")
        time.sleep(step)


def summary(times: list[float]) -> str:
    p90 = statistics.quantiles(times, n=10, method="inclusive")[-1] if len(times) > 1 else times[0]
    return f"median {statistics.median(times):5.2f} s, p90 {p90:5.2f} s, max {max(times):5.2f} s (n={len(times)})"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--artefacts", type=int, default=10_000)
    ap.add_argument("--changes", type=int, default=20, help="pushes to time (half by poll, half by webhook)")
    ap.add_argument("--interval", default="1s")
    ap.add_argument("--drift-interval", help="the daemon's drift interval (its default: 5m), e.g. 3s to time "
                                             "pushes while drift passes run")
    ap.add_argument("--work", type=Path, help="keep (or reuse) the repository, remote and state here")
    ap.add_argument("--sync-timeout", type=float, default=3600)
    ap.add_argument("--json", type=Path, help="append the results as one JSON line to this file")
    a = ap.parse_args()
    work = a.work or Path(tempfile.mkdtemp(prefix="reconciler-daemon-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    exe = Path(sys.executable).with_name("reconciler")
    src, bare_path, state, log = work / "repo", work / "remote.git", work / "state", work / "daemon.log"
    p = None
    try:
        reused = bare_path.exists()
        if not reused:
            gen_repo.generate(src, a.artefacts, max(1, a.artefacts // 50))
            pygit2.clone_repository(str(src), str(bare_path), bare=True)
            pygit2.Repository(str(src)).remotes.create("origin", str(bare_path))
        repo, bare = pygit2.Repository(str(src)), pygit2.Repository(str(bare_path))
        (work / "webhook-secret").write_bytes(SECRET)
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        p = subprocess.Popen([str(exe), "daemon", "--repo", f"file://{bare_path}", "--state-dir", str(state),
                              "--interval", a.interval, "--listen", f"127.0.0.1:{port}",
                              "--webhook-secret-file", str(work / "webhook-secret")]
                             + (["--drift-interval", a.drift_interval] if a.drift_interval else []),
                             stdout=subprocess.DEVNULL, stderr=open(log, "a"))
        t0 = time.monotonic()
        head = str(repo.head.target)
        if reused:  # a restart on synced state: wait for readiness (the head was reported before)
            while True:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5):
                        break
                except OSError:
                    if p.poll() is not None or time.monotonic() - t0 > a.sync_timeout:
                        raise SystemExit(f"the daemon did not get ready; see {log}")
                    time.sleep(0.2)
        else:
            wait_for(head, bare, p, log, a.sync_timeout, step=0.5)
        first_sync = time.monotonic() - t0
        while reconcile_seconds(port)[1] < 1 and time.monotonic() - t0 < first_sync + 600:
            time.sleep(0.05)  # the first reconcile is counted when it ends, after its status commit
        peak_sync = proc_mb(p.pid, "VmHWM")
        times = {"poll": [], "webhook": []}
        daemon_seconds = []
        for i in range(a.changes):
            how = "webhook" if i % 2 else "poll"
            before = reconcile_seconds(port)
            commit = gen_repo.change_one(src)
            t = time.monotonic()
            repo.remotes["origin"].push([f"+refs/heads/{gen_repo.BRANCH}:refs/heads/{gen_repo.BRANCH}"])
            if how == "webhook":
                deliver_push(port, commit)
            wait_for(commit, bare, p, log, 600)
            times[how].append(time.monotonic() - t)
            # the reconcile is counted when it ends, a little after its status commit (gauges, schedules)
            after = reconcile_seconds(port)
            while after[1] == before[1] and time.monotonic() - t < 600:
                time.sleep(0.01)
                after = reconcile_seconds(port)
            if after[1] - before[1] == 1:  # exactly the reconcile of this push
                daemon_seconds.append(after[0] - before[0])
        rss, peak = proc_mb(p.pid, "VmRSS"), proc_mb(p.pid, "VmHWM")
        time.sleep(3)  # the last run's lake closes on its own thread: memory at rest is read once it is idle
        rest = proc_mb(p.pid, "VmRSS")
        print(f"Daemon, {a.artefacts:,} artefacts, poll interval {a.interval}, "
              f"{'restarted on synced state' if reused else 'from an empty state'}")
        print(f"  {'ready after restart' if reused else 'first sync (applies everything, runs every workflow)'}: "
              f"{first_sync:.1f} s, peak RSS by then {peak_sync:.0f} MB")
        print(f"  push -> status commit, by poll:     {summary(times['poll'])}  (target < 1 s + {a.interval})")
        print(f"  push -> status commit, by webhook:  {summary(times['webhook'])}  (target < 1 s)")
        if daemon_seconds:
            print(f"  the daemon's reconcile of one push:  {summary(daemon_seconds)}")
        print(f"  resident memory at rest after the pushes {rest:.0f} MB (target < 300 MB); right after the last "
              f"push {rss:.0f} MB; peak {peak:.0f} MB")
        if a.json:
            with a.json.open("a") as f:
                f.write(json.dumps({"artefacts": a.artefacts, "interval": a.interval, "reused": reused,
                                    "first_sync_s": first_sync, "poll_s": times["poll"],
                                    "webhook_s": times["webhook"], "reconcile_s": daemon_seconds,
                                    "rss_mb": rss, "rest_rss_mb": rest, "peak_rss_mb": peak, "peak_rss_sync_mb": peak_sync}) + "\n")
        return 0
    finally:
        if p is not None and p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(60)
            except subprocess.TimeoutExpired:
                p.kill()
        if a.work is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
