"""The README's first command: scripts/quickstart.sh starts the daemon on a git copy of sample-repo.

Run against the test's own virtualenv (QUICKSTART_SKIP_INSTALL=1) in a temp dir, on a free port.
"""
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pygit2
import pytest

from tests.conftest import ROOT, free_port

SCRIPT = ROOT / "scripts" / "quickstart.sh"


def alive(pid: int) -> bool:
    """Whether pid runs; the daemon outlives the script, so nobody here can wait() for it (a zombie left for
    init to reap counts as exited)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def readyz(port: int) -> int | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return None


@pytest.fixture
def quickstart(tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("RECONCILER_STATE_DIR", "PAYMENTS_API_TOKEN")}
    env.update(QUICKSTART_DIR=str(tmp_path / "qs"), QUICKSTART_PORT=str(port), QUICKSTART_SKIP_INSTALL="1",
               QUICKSTART_VENV=str(Path(sys.executable).parent.parent), QUICKSTART_TIMEOUT="300")

    def run(*args):
        return subprocess.run(["bash", str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=400)

    yield run, tmp_path / "qs", port
    pid_file = tmp_path / "qs" / "daemon.pid"
    if pid_file.exists() and alive(int(pid_file.read_text())):  # a failed test must not leave a daemon behind
        os.kill(int(pid_file.read_text()), signal.SIGKILL)


def wait_gone(pid: int, timeout: float = 60) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        time.sleep(0.1)
    return False


@pytest.mark.slow
def test_quickstart_starts_the_daemon_on_the_sample_and_a_rerun_replaces_it(quickstart):
    run, qs, port = quickstart
    p = run()
    assert p.returncode == 0, p.stdout + p.stderr
    pid = int((qs / "daemon.pid").read_text())
    assert alive(pid) and readyz(port) == 200  # the daemon outlives the script
    # it says where the API and STATUS.md are, and shows the resources
    assert f"http://127.0.0.1:{port}/docs" in p.stdout
    assert f"git -C {qs / 'repo'} show reconciler/status:STATUS.md" in p.stdout
    assert "transactions-daily" in p.stdout and f"kill {pid}" in p.stdout
    # the sample became a git repository of its own: one commit on main, the status branch beside it
    repo = pygit2.Repository(str(qs / "repo"))
    head = repo.branches.local["main"].peel(pygit2.Commit)
    assert head.parents == [] and "dataproduct.yaml" in head.tree
    status = repo.branches.local["reconciler/status"].peel(pygit2.Commit)
    text = repo[status.tree["STATUS.md"].id].data.decode()
    row = next(line for line in text.splitlines() if "`workflow:payments/transactions-daily`" in line)
    assert str(head.id) in text and "| Ready |" in row and "succeeded" in row

    # a second run stops the first daemon and starts another on the same repository and state
    again = run()
    assert again.returncode == 0, again.stdout + again.stderr
    assert "reusing the repository" in again.stdout and f"stopping the daemon (pid {pid})" in again.stdout
    assert not alive(pid)
    second = int((qs / "daemon.pid").read_text())
    assert second != pid and alive(second) and readyz(port) == 200
    assert repo.branches.local["main"].target == head.id  # the tracked branch is never written

    # SIGTERM stops it cleanly: it removes its announcement file on the way out
    os.kill(second, signal.SIGTERM)
    assert wait_gone(second), "the daemon did not exit on SIGTERM"
    assert not (qs / "state" / "daemon.json").exists()
    assert readyz(port) is None
    assert run("stop").returncode == 0  # nothing left to stop is not an error
