"""`reconciler dev DIR`: each save applied into an isolated dev environment; and the daemon's Dockerfile."""
from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from typing import Callable

import pytest

from tests.cli import repos
from tests.conftest import ROOT, GitRepo, run_cli, write_files

BROKEN = "version: v1\ntype: depot\nname: [\n"


class Lines:
    """The lines a process prints, read on a thread, waited for with a deadline (never a fixed sleep)."""

    def __init__(self, stream):
        self.seen: list[str] = []
        self._q: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream):
        for line in stream:
            self._q.put(line.rstrip("\n"))
        self._q.put(None)

    def wait_for(self, match: Callable[[str], bool], what: str, timeout: float = 20.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._q.get(timeout=max(deadline - time.monotonic(), 0.01))
            except queue.Empty:
                pytest.fail(f"timed out waiting for {what}; output so far:\n" + "\n".join(self.seen))
            if line is None:
                pytest.fail(f"the process ended before {what}; output:\n" + "\n".join(self.seen))
            self.seen.append(line)
            if match(line):
                return line


def by_id(items: list[dict]) -> dict[str, dict]:
    return {x["id"]: x for x in items}


def test_dev_applies_each_save_into_its_own_state_and_never_the_tracked_one(tmp_path):
    work = tmp_path / "work"
    write_files(work, repos.basic())
    tracked = tmp_path / "tracked"
    applied = run_cli("apply", "--repo", work, "--state-dir", tracked, "--auto-approve")
    assert applied.code == 0, applied
    before = run_cli("get", "--state-dir", tracked, "-o", "json")
    assert before.code == 0, before

    env = {k: v for k, v in os.environ.items() if k != "RECONCILER_STATE_DIR"}
    stderr = open(tmp_path / "dev.err", "w")
    p = subprocess.Popen([sys.executable, "-m", "reconciler", "dev", str(work)], cwd=tmp_path, env=env,
                         stdout=subprocess.PIPE, stderr=stderr, text=True)
    try:
        out = Lines(p.stdout)
        # the first cycle applies everything into the dev environment
        out.wait_for(lambda l: l.startswith("Plan: 4 to create"), "the first plan")
        out.wait_for(lambda l: l.startswith(("ok:", "failed:", "error:")), "the first result")
        assert out.seen[-1].startswith("ok: 4 Ready"), "\n".join(out.seen)
        assert "+ depot:raw" in "\n".join(out.seen)

        # a save updates the one resource it changes
        write_files(work, {"depots/raw.yaml": repos.DEPOT.replace("Raw card transactions", "Edited in dev")})
        out.wait_for(lambda l: "#2 saved depots/raw.yaml" in l, "the second cycle")
        out.wait_for(lambda l: l.startswith(("ok:", "failed:", "error:")), "the second result")
        second = "\n".join(out.seen[out.seen.index(next(l for l in out.seen if "#2 saved" in l)):])
        assert "Plan: 0 to create, 1 to update" in second and "~ depot:raw" in second, second
        assert out.seen[-1].startswith("ok: 1 Ready"), second

        # a broken save is reported with its place, and nothing is applied
        write_files(work, {"depots/raw.yaml": BROKEN})
        err = out.wait_for(lambda l: l.startswith("depots/raw.yaml:"), "the error of the broken file")
        assert re.match(r"depots/raw\.yaml:\d+:\d+: error", err), err
        result = out.wait_for(lambda l: l.startswith(("ok:", "failed:", "error:")), "the third result")
        assert result.startswith("error: 1 error(s): nothing was applied"), "\n".join(out.seen)

        p.send_signal(signal.SIGINT)
        assert p.wait(timeout=20) == 0, (tmp_path / "dev.err").read_text()
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(10)
        stderr.close()
    assert "Traceback" not in (tmp_path / "dev.err").read_text()

    # the dev environment holds the edited depot (the broken save kept its last applied state)
    dev_state = work / ".reconciler" / "dev"
    got = run_cli("get", "--state-dir", dev_state, "-o", "json")
    assert got.code == 0, got
    dev = by_id(got.json)
    assert set(dev) == {"depot:raw", "policy:mask-cards", "workspace:payments", "workflow:payments/daily"}
    assert dev["depot:raw"]["phase"] == "Ready" and dev["depot:raw"]["spec"]["description"] == "Edited in dev"
    assert (dev_state / "lake.duckdb").exists()
    # the tracked environment was not touched
    after = run_cli("get", "--state-dir", tracked, "-o", "json")
    assert after.json == before.json
    assert by_id(after.json)["depot:raw"]["spec"]["description"] == "Raw card transactions"


def test_dev_loop_reads_uncommitted_edits_of_a_git_work_tree(tmp_path):
    from reconciler.engine.dev import DevFilter, dev_loop

    git = GitRepo(tmp_path / "repo")
    git.commit(repos.basic())
    write_files(git.path, {"depots/extra.yaml": repos.DEPOT.replace("name: raw", "name: extra")})  # not committed
    reports = []
    cycles = dev_loop(git.path, tmp_path / "dev", on_cycle=reports.append, stop=threading.Event(), max_cycles=1)
    assert cycles == 1 and reports[0].ok, reports[0]
    assert {a.id for a in reports[0].plan.changes} >= {"depot:raw", "depot:extra"}
    assert reports[0].result.ok and reports[0].summary.startswith("Plan: 5 to create")

    filt = DevFilter(git.path, tmp_path / "dev")
    assert filt.relative(str(git.path / "depots" / "raw.yaml")) == "depots/raw.yaml"
    for ignored in (".git/index", "jobs/__pycache__/x.py", ".reconciler/dev/x.json", "notes.txt", "depots/.#raw.yaml"):
        assert filt.relative(str(git.path / ignored)) is None, ignored
    assert DevFilter(git.path, git.path / "state").relative(str(git.path / "state" / "cache.json")) is None


def test_dockerfile_runs_the_daemon_as_a_non_root_user_with_a_healthcheck():
    lines = []
    for raw in re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text()).splitlines():
        if raw.strip() and not raw.lstrip().startswith("#"):
            lines.append(raw.strip())
    instructions = [(l.split(None, 1)[0].upper(), l.split(None, 1)[1] if " " in l else "") for l in lines]
    known = {"FROM", "ENV", "WORKDIR", "COPY", "RUN", "VOLUME", "USER", "EXPOSE", "HEALTHCHECK", "ENTRYPOINT",
             "CMD", "ARG", "LABEL"}
    assert all(kw in known for kw, _ in instructions), instructions
    assert instructions[0] == ("FROM", "python:3.11-slim")
    kinds = [kw for kw, _ in instructions]
    user_at = kinds.index("USER")
    assert instructions[user_at][1] == "reconciler" and user_at < kinds.index("ENTRYPOINT")
    assert "useradd" in " ".join(a for k, a in instructions if k == "RUN")
    assert ("VOLUME", "/var/lib/reconciler") in instructions
    assert any(k == "ENV" and "RECONCILER_STATE_DIR=/var/lib/reconciler" in a for k, a in instructions)
    assert ("EXPOSE", "8080") in instructions
    health = next(a for k, a in instructions if k == "HEALTHCHECK")
    assert "http://127.0.0.1:8080/healthz" in health and "urllib" in health
    import json

    assert json.loads(dict(instructions)["ENTRYPOINT"]) == ["reconciler", "daemon"]
    cmd = json.loads(dict(instructions)["CMD"])
    assert cmd[:4] == ["--config", "/etc/reconciler/reconciler.yaml", "--listen", "0.0.0.0:8080"]
    # the healthcheck's Python runs as written
    code = json.loads(health.split("CMD", 1)[1])
    compile(code[2], "<healthcheck>", "exec")
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".venv", ".reconciler", ".git", "__pycache__", "bench/out"} <= set(ignored)
