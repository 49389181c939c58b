"""The daemon's loop, driven in process on an applied sample state: what it does when a push, a reader of
the state or a drift pass meets it (daemon/service.py)."""
import contextlib
import subprocess
import sys

from tests.conftest import SAMPLE_ENV, run_cli


def applied_daemon(sample_repo, state_dir, **config):
    """A Daemon (not started) on the sample, applied by the CLI."""
    from reconciler.daemon.config import load_config
    from reconciler.daemon.service import Daemon

    r = run_cli("apply", "--repo", sample_repo.path, "--state-dir", state_dir, "--auto-approve", "-o", "json",
                env=SAMPLE_ENV)
    assert r.code == 0, r
    return Daemon(load_config(None, {"repo": str(sample_repo.path), "state_dir": str(state_dir), **config}))


@contextlib.contextmanager
def state_held_open(state_dir):
    """Another process reading the state database (as a `reconciler get` does) while the block runs."""
    holder = subprocess.Popen([sys.executable, "-c", "import duckdb, sys; c = duckdb.connect(sys.argv[1], read_only=True);"
                               " print('open', flush=True); sys.stdin.read()", str(state_dir / "state.duckdb")],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "open"
        yield
    finally:
        holder.communicate("", timeout=30)


def test_a_drift_slice_gives_way_to_an_announced_push(sample_repo, state_dir):
    """A webhook's push ends the drift slice under way (daemon/service.py): the rest of the pass waits for
    later cycles, and the new head is reconciled first instead of up to a slice later."""
    daemon = applied_daemon(sample_repo, state_dir)
    daemon.state.last_commit = str(sample_repo.repo.head.target)  # as after the daemon's first sync
    daemon.drift_wanted = True
    daemon.trigger("webhook github push main", push=True)
    assert daemon._check_drift() == {}
    pending = list(daemon._drift_queue)
    assert len(pending) == 3 and daemon.drift_wanted  # the sample's workflow and two depots, none looked at
    daemon.pushed.clear()  # as the next cycle does once it has fetched the head
    assert daemon._check_drift() == {}  # nothing drifted
    assert daemon._drift_queue == [] and not daemon.drift_wanted


def test_a_scheduled_run_that_finds_the_state_in_use_waits_instead_of_being_lost(sample_repo, state_dir, monkeypatch):
    """A cron fire that comes while another process (a `reconciler get`) has the state database open must
    not be dropped: DuckDB refuses the daemon's write for that moment, and the run goes at a next cycle."""
    daemon = applied_daemon(sample_repo, state_dir)
    wf = "workflow:payments/transactions-daily"
    with state_held_open(state_dir):
        daemon.due.add(wf)
        assert daemon._run_due_workflows() == 0
        assert daemon.due == {wf}  # kept for the next cycle
    for k, v in SAMPLE_ENV.items():  # the run reads the sample's secrets, as the daemon's environment gives them
        monkeypatch.setenv(k, v)
    assert daemon._run_due_workflows() == 1 and not daemon.due
    r = run_cli("get", "runs", "transactions-daily", "-w", "payments", "--state-dir", state_dir, "-o", "json")
    assert r.code == 0 and [x["trigger"] for x in r.json].count("schedule") == 1, r


def test_a_reconcile_that_finds_the_state_in_use_tries_again_soon(sample_repo, state_dir, monkeypatch):
    """The same for a reconcile: it fails for that moment and is tried again within RETRY_BUSY_SECONDS, not at
    the next poll (which may be minutes away when webhooks announce pushes)."""
    daemon = applied_daemon(sample_repo, state_dir, interval="10m")
    sample_repo.commit({"workspace-extra.yaml": "version: v1\ntype: workspace\nname: extra\n"}, "a new workspace")
    retries = []
    monkeypatch.setattr(daemon, "_retry_soon", retries.append)
    with state_held_open(state_dir):
        result = daemon.reconcile_once()
        assert result.errors == 1 and retries == ["the state was in use"], (result, retries)
    for k, v in SAMPLE_ENV.items():
        monkeypatch.setenv(k, v)
    result = daemon.reconcile_once()
    assert result.errors == 0 and not result.failed, result
    r = run_cli("get", "workspace", "extra", "--state-dir", state_dir, "-o", "json")
    assert r.code == 0, r


def test_retries_on_a_busy_state_back_off(tmp_path, monkeypatch):
    """A reader that keeps the state for long costs a few retries and log lines, not two a second."""
    import threading

    from reconciler.daemon.config import load_config
    from reconciler.daemon.service import Daemon

    delays = []

    class Timer:
        def __init__(self, delay, fn, args=()):
            delays.append(delay)
            self.daemon = False

        def start(self):
            pass

    monkeypatch.setattr(threading, "Timer", Timer)
    daemon = Daemon(load_config(None, {"repo": str(tmp_path), "state_dir": str(tmp_path / "state")}))
    for _ in range(9):
        daemon._retry_soon("the state was in use")
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0]
