"""The daemon as a real subprocess against a bare repository the test pushes to."""
import os
import signal
import subprocess
import sys
import time
import urllib.request

import pygit2
import pytest

from tests.cli import repos
from tests.conftest import GitRepo, free_port, run_cli

ENV = {"RECONCILER_TEST_TOKEN": "daemon-token-123"}


def wait_for(check, what: str, timeout: float = 90):
    """Poll until check() is truthy (bounded); the value, or a failure naming what never happened."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}")


def http(port: int, path: str):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except OSError:
        return None, b""


def status_file(bare: pygit2.Repository, path: str) -> str | None:
    ref = bare.references.get("refs/heads/reconciler/status")
    if ref is None:
        return None
    tree = ref.peel(pygit2.Commit).tree
    try:
        return bare[tree[path].id].data.decode()
    except KeyError:
        return None


def status_message(bare: pygit2.Repository) -> str:
    ref = bare.references.get("refs/heads/reconciler/status")
    return ref.peel(pygit2.Commit).message if ref is not None else ""


@pytest.fixture
def remote(tmp_path):
    work = GitRepo(tmp_path / "work")
    work.commit(repos.basic())
    bare_path = tmp_path / "remote.git"
    pygit2.clone_repository(str(work.path), str(bare_path), bare=True)
    work.repo.remotes.create("origin", str(bare_path))
    return work, bare_path


def push(work: GitRepo) -> None:
    work.repo.remotes["origin"].push(["+refs/heads/main:refs/heads/main"])


@pytest.fixture
def daemon(remote, tmp_path):
    work, bare_path = remote
    port = free_port()
    env = {**os.environ, **ENV}
    env.pop("RECONCILER_STATE_DIR", None)
    p = subprocess.Popen([sys.executable, "-m", "reconciler", "daemon", "--repo", f"file://{bare_path}",
                          "--state-dir", str(tmp_path / "state"), "--interval", "1s", "--listen", f"127.0.0.1:{port}"],
                         env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    yield p, port, work, pygit2.Repository(str(bare_path))
    if p.poll() is None:
        p.kill()
        p.wait(10)


def test_daemon_syncs_reports_on_the_status_branch_and_stops_on_sigterm(daemon, tmp_path):
    p, port, work, bare = daemon
    wait_for(lambda: http(port, "/readyz")[0] == 200, "the first successful reconcile")
    assert http(port, "/healthz")[0] == 200
    first = str(work.repo.head.target)
    status = wait_for(lambda: status_file(bare, "STATUS.md"), "STATUS.md on the status branch")
    assert "depot" in status and "raw" in status and "Ready" in status and first[:8] in status
    assert status_file(bare, "status/workflow/payments/daily.yaml")
    assert bare.references["refs/heads/main"].peel(pygit2.Commit).id == work.repo.head.target  # tracked branch untouched
    # a push that adds a resource is applied and reported with the new commit named
    work.commit(repos.depots(1))
    push(work)
    second = str(work.repo.head.target)
    wait_for(lambda: second in status_message(bare), "a status commit naming the new source commit")
    assert "extra-0" in status_file(bare, "STATUS.md")
    # a push that breaks a file keeps its resource and reports the error
    work.commit({"depots/extra-0.yaml": "version: v1\ntype: depot\nname: [\n"})
    push(work)
    third = str(work.repo.head.target)
    wait_for(lambda: third in status_message(bare), "the status of the broken commit")
    text = status_file(bare, "STATUS.md")
    assert "extra-0" in text and "depots/extra-0.yaml" in text
    # materialised trees of commits no record names are removed (each is a whole copy of the repository)
    applied = {x["commit"] for x in run_cli("get", "--state-dir", tmp_path / "state", "-o", "json").json}
    kept = {e.name for e in (tmp_path / "state" / "checkouts").iterdir()}
    assert kept <= applied | {third} and applied <= kept | {None}, (kept, applied)
    # a preview branch gets its plan file; the tracked environment is not touched by it
    before = run_cli("get", "--state-dir", tmp_path / "state", "-o", "json").json
    main_tip = work.repo.head.peel(pygit2.Commit)
    work.repo.branches.local.create("feature/more", main_tip)
    work.repo.checkout("refs/heads/feature/more")
    work.commit({"depots/extra-0.yaml": repos.DEPOT.replace("name: raw", "name: extra-0"), **repos.depots(2, "pr")})
    work.repo.remotes["origin"].push(["+refs/heads/feature/more:refs/heads/feature/more"])
    preview = wait_for(lambda: status_file(bare, "plans/feature/more.md"), "the preview of feature/more")
    assert "`feature/more`" in preview and "| `+` | `depot:pr-0` |" in preview and "| `+` | `depot:pr-1` |" in preview
    assert {x["id"] for x in run_cli("get", "--state-dir", tmp_path / "state", "-o", "json").json} == \
        {x["id"] for x in before}
    # metrics parse with prometheus-client's own parser
    from prometheus_client.parser import text_string_to_metric_families

    code, body = http(port, "/metrics")
    names = {m.name for m in text_string_to_metric_families(body.decode())}
    assert {"reconciler_reconciles", "reconciler_resources", "reconciler_last_success_timestamp_seconds"} <= names
    # a forged webhook is refused and triggers nothing
    req = urllib.request.Request(f"http://127.0.0.1:{port}/webhook", data=b"{}", method="POST",
                                 headers={"X-GitHub-Event": "push", "X-Hub-Signature-256": "sha256=" + "0" * 64})
    try:
        urllib.request.urlopen(req, timeout=5)
        pytest.fail("a forged delivery was accepted")
    except urllib.error.HTTPError as e:
        assert e.code == 401
    p.send_signal(signal.SIGTERM)
    assert p.wait(60) == 0


def start_daemon(bare_path, state, port, extra_env=None, extra_args=()):
    env = {**os.environ, **ENV, **(extra_env or {})}
    env.pop("RECONCILER_STATE_DIR", None)
    return subprocess.Popen([sys.executable, "-m", "reconciler", "daemon", "--repo", f"file://{bare_path}",
                             "--state-dir", str(state), "--interval", "1s", "--listen", f"127.0.0.1:{port}",
                             *extra_args],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_kill_9_mid_reconcile_then_a_restart_converges(remote, tmp_path):
    work, bare_path = remote
    state, port = tmp_path / "state", free_port()
    p = start_daemon(bare_path, state, port, {"RECONCILER_CRASH_AT": "begin:depot:raw"})
    assert p.wait(90) == -signal.SIGKILL
    p = start_daemon(bare_path, state, port)
    try:
        wait_for(lambda: http(port, "/readyz")[0] == 200, "readiness after the restart")
        got = run_cli("get", "--state-dir", state, "-o", "json")
        assert got.code == 0, got
        assert {x["phase"] for x in got.json} == {"Ready"} and len(got.json) == 4, [(x["id"], x["phase"], x.get("message")) for x in got.json]
        runs = run_cli("get", "runs", "daily", "-w", "payments", "--state-dir", state, "-o", "json").json
        assert [r["status"] for r in runs] == ["succeeded"]  # the workflow ran once
        p.send_signal(signal.SIGTERM)
        assert p.wait(60) == 0
    finally:
        if p.poll() is None:
            p.kill()


@pytest.mark.slow
def test_a_cron_schedule_fires_a_run(tmp_path):
    work = GitRepo(tmp_path / "work")
    every_minute = repos.WORKFLOW.replace("workflow:\n  dag:", "workflow:\n  schedule: {cron: '* * * * *', timezone: Europe/Paris}\n  dag:")
    assert "schedule" in every_minute
    work.commit(repos.basic(**{"workflows/daily.yaml": every_minute}))
    bare_path = tmp_path / "remote.git"
    pygit2.clone_repository(str(work.path), str(bare_path), bare=True)
    state, port = tmp_path / "state", free_port()
    p = start_daemon(bare_path, state, port)
    try:
        wait_for(lambda: http(port, "/readyz")[0] == 200, "the first reconcile")

        def scheduled():
            r = run_cli("get", "runs", "daily", "-w", "payments", "--state-dir", state, "-o", "json")
            return r.code == 0 and any(x["trigger"] == "schedule" and x["status"] == "succeeded" for x in r.json)

        wait_for(scheduled, "a run started by the one-minute cron schedule", timeout=100)
        p.send_signal(signal.SIGTERM)
        assert p.wait(60) == 0
    finally:
        if p.poll() is None:
            p.kill()


@pytest.mark.parametrize("self_heal", [False, True])
def test_drift_of_a_lake_table_is_reported_and_healed(remote, tmp_path, self_heal):
    import duckdb

    work, bare_path = remote
    state, port = tmp_path / "state", free_port()
    env = {**os.environ, **ENV}
    env.pop("RECONCILER_STATE_DIR", None)
    args = [sys.executable, "-m", "reconciler", "daemon", "--repo", f"file://{bare_path}", "--state-dir", str(state),
            "--interval", "1s", "--drift-interval", "1s", "--listen", f"127.0.0.1:{port}"]
    p = subprocess.Popen(args + (["--self-heal"] if self_heal else []), env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    bare = pygit2.Repository(str(bare_path))
    try:
        wait_for(lambda: http(port, "/readyz")[0] == 200, "the first reconcile")

        def drop():
            try:
                con = duckdb.connect(str(state / "lake.duckdb"))
            except duckdb.Error:
                return False  # the daemon is writing; try again
            con.execute("DROP TABLE payments.valid")
            con.close()
            return True

        wait_for(drop, "dropping the workflow's table behind the daemon's back")
        if not self_heal:
            text = wait_for(lambda: (status_file(bare, "STATUS.md") or "") if "Drift" in (status_file(bare, "STATUS.md") or "")
                            else None, "drift in STATUS.md")
            assert "workflow:payments/daily" in text and "lake://payments/valid is gone" in text
        else:
            def healed():
                try:
                    con = duckdb.connect(str(state / "lake.duckdb"), read_only=True)
                except duckdb.Error:
                    return False
                try:
                    return con.execute("SELECT count(*) FROM information_schema.tables WHERE table_schema = 'payments' "
                                       "AND table_name = 'valid'").fetchone()[0] == 1
                finally:
                    con.close()

            wait_for(healed, "the table written again by the self-healing daemon")
        p.send_signal(signal.SIGTERM)
        assert p.wait(60) == 0
    finally:
        if p.poll() is None:
            p.kill()


def test_get_works_during_a_reconcile(remote, tmp_path):
    work, bare_path = remote
    state, port = tmp_path / "state", free_port()
    p = start_daemon(bare_path, state, port)
    try:
        wait_for(lambda: http(port, "/readyz")[0] == 200, "the first reconcile")
        gate = tmp_path / "go"
        waits = f"""
version: v1
type: workflow
name: waits
workspace: payments
workflow:
  dag:
    - name: wait
      stack: shell
      spec: {{command: "echo waiting; for i in $(seq 900); do test -f {gate} && break; sleep 0.1; done"}}
"""
        work.commit({"workflows/waits.yaml": waits})
        push(work)
        log_glob = "runs/payments/waits/*/wait.log"
        wait_for(lambda: any("waiting" in f.read_text() for f in state.glob(log_glob)), "the reconcile to be running")

        def applying():  # the daemon holds the state database while the workflow runs; get must still answer
            r = run_cli("get", "--state-dir", state, "-o", "json")
            assert r.code == 0, r
            phases = {x["id"]: x["phase"] for x in r.json}
            assert phases["depot:raw"] == "Ready"
            return phases.get("workflow:payments/waits") == "Applying"

        wait_for(applying, "get to show the running workflow as Applying")
        gate.touch()
        wait_for(lambda: str(work.repo.head.target) in status_message(pygit2.Repository(str(bare_path))),
                 "the status of the commit")
        p.send_signal(signal.SIGTERM)
        assert p.wait(60) == 0
        assert not (state / "daemon.json").exists()
    finally:
        if p.poll() is None:
            p.kill()


def test_a_bad_slo_interval_flag_is_named(tmp_path):
    r = run_cli("daemon", "--repo", tmp_path, "--state-dir", tmp_path / "state", "--slo-interval", "soon")
    assert r.code == 1 and "slo_interval (from --slo-interval)" in r.err and "Traceback" not in r.err, r


def test_the_lake_stays_open_between_runs_and_is_released_to_a_query(remote, tmp_path):
    """Opening and closing a lake of thousands of tables costs ~0.5 s a run, so a daemon with --lake-hold keeps
    it open after a run. Another process's `reconciler query` asks for it and gets it within its retry window."""
    import duckdb

    work, bare_path = remote
    state, port = tmp_path / "state", free_port()
    (tmp_path / "ana.tok").write_text("token-ana\n")
    config = tmp_path / "reconciler.yaml"
    config.write_text(f"repo: file://{bare_path}\nstate_dir: {state}\nusers:\n  ana: {{groups: [platform], token_file: ana.tok}}\ngroups:\n  platform: {{admin: true}}\n")
    p = start_daemon(bare_path, state, port, extra_args=("--lake-hold", "60s"))
    try:
        wait_for(lambda: http(port, "/readyz")[0] == 200, "the first reconcile (the workflow ran)")
        try:  # held: DuckDB's file lock refuses another process
            duckdb.connect(str(state / "lake.duckdb"), read_only=True).close()
            pytest.fail("the lake was not kept open after the run")
        except duckdb.Error as e:
            assert "lock" in str(e).lower()
        r = run_cli("query", "SELECT count(*) AS n FROM valid", "--as", "ana", "--config", config,
                    "--state-dir", state, "-o", "json")
        assert r.code == 0, r
        assert r.json["rows"] == [{"n": 2}] or r.json["rows"] == [[2]], r.json
        assert not (state / "lake.duckdb.wanted").exists()  # the request was taken
        p.send_signal(signal.SIGTERM)
        assert p.wait(60) == 0
    finally:
        if p.poll() is None:
            p.kill()
