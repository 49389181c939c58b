"""Another process reading the lake (a `reconciler query` beside the daemon, say) holds DuckDB's file
lock; a workflow run waits for it instead of failing."""
import subprocess
import sys

from tests.cli import repos
from tests.conftest import run_cli


def test_a_run_waits_for_another_process_reading_the_lake(git_repo, state_dir):
    git_repo.commit(repos.basic())
    r = run_cli("apply", "--auto-approve", "--repo", git_repo.path, "--state-dir", state_dir)
    assert r.code == 0, r
    reader = subprocess.Popen([sys.executable, "-c", (
        "import duckdb, sys, time; c = duckdb.connect(sys.argv[1], read_only=True); "
        "print('open', flush=True); time.sleep(2); c.close()"), str(state_dir / "lake.duckdb")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert reader.stdout.readline().strip() == "open"
        r = run_cli("run", "daily", "-w", "payments", "--state-dir", state_dir, "-o", "json")
        assert r.code == 0, r
    finally:
        reader.wait(30)
