"""The daemon's reaction to a push: from `git push` of a one-file change to the status commit naming it.

Generates the 10,000-artefact repository (bench/gen_repo.py), pushes it to a bare
remote, starts `reconciler daemon` on it (the first sync applies everything and runs
every workflow: minutes), then pushes one-file changes and times each until the
status branch has a commit naming the pushed commit. Also reports the daemon's
resident memory. The poll interval is part of the time, as it would be in use.

    python bench/daemon_bench.py [--artefacts 10000] [--changes 5] [--interval 1s]
"""
from __future__ import annotations

import argparse
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pygit2

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gen_repo  # noqa: E402


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def status_message(bare: pygit2.Repository) -> str:
    ref = bare.references.get("refs/heads/reconciler/status")
    return ref.peel(pygit2.Commit).message if ref is not None else ""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--artefacts", type=int, default=10_000)
    ap.add_argument("--changes", type=int, default=5)
    ap.add_argument("--interval", default="1s")
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="reconciler-daemon-bench-"))
    exe = Path(sys.executable).with_name("reconciler")
    p = None
    try:
        src = work / "repo"
        gen_repo.generate(src, a.artefacts, max(1, a.artefacts // 50))
        bare_path = work / "remote.git"
        pygit2.clone_repository(str(src), str(bare_path), bare=True)
        repo = pygit2.Repository(str(src))
        repo.remotes.create("origin", str(bare_path))
        bare = pygit2.Repository(str(bare_path))
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        p = subprocess.Popen([str(exe), "daemon", "--repo", f"file://{bare_path}", "--state-dir", str(work / "state"),
                              "--interval", a.interval, "--listen", f"127.0.0.1:{port}"],
                             stdout=subprocess.DEVNULL, stderr=open(work / "daemon.log", "w"))
        t0 = time.monotonic()
        head = str(repo.head.target)
        while head not in status_message(bare):
            if p.poll() is not None:
                print((work / "daemon.log").read_text()[-3000:])
                return 1
            time.sleep(0.5)
        first_sync = time.monotonic() - t0
        workflow = next(str(f.relative_to(src)) for f in sorted(src.rglob("*.yaml")) if "workflow" in f.read_text()[:200]
                        and "type: workflow" in f.read_text())
        text = (src / workflow).read_text()
        sig = pygit2.Signature("bench", "bench@example.com")
        times = []
        for i in range(a.changes):
            (src / workflow).write_text(text.replace("amount >", f"amount + {i} >", 1))
            repo.index.add(workflow)
            repo.index.write()
            c = str(repo.create_commit("HEAD", sig, sig, f"edit {i}", repo.index.write_tree(), [repo.head.target]))
            t = time.monotonic()
            repo.remotes["origin"].push(["+refs/heads/main:refs/heads/main"])
            while c not in status_message(bare):
                time.sleep(0.02)
            times.append(time.monotonic() - t)
        memory = rss_mb(p.pid)
        print(f"Daemon, {a.artefacts:,} artefacts, poll interval {a.interval}")
        print(f"  first sync (applies everything, runs every workflow)   {first_sync:8.1f} s")
        print(f"  push of a one-file change -> its status commit, median {statistics.median(times):8.2f} s "
              f"(max {max(times):.2f} s; target < 1 s plus the poll interval)")
        print(f"  resident memory after the changes                       {memory:8.0f} MB (target < 300 MB)")
        return 0
    finally:
        if p is not None and p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(60)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
