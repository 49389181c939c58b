"""Workflows that really run: through the real CLI on real repos and a real DuckDB lake."""
import json
import signal
from pathlib import Path

import duckdb
import pytest

from tests.conftest import SAMPLE_ENV, run_cli
from tests.cli import repos

ENV = {"RECONCILER_TEST_TOKEN": "tok-3f9a-very-secret"}


def apply(repo, state, *args, env=ENV):
    return run_cli("apply", "--auto-approve", "--repo", repo.path, "--state-dir", state, *args, env=env)


def lake_rows(state, sql):
    con = duckdb.connect(str(state / "lake.duckdb"), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def runs(state, workflow, ws="payments"):
    r = run_cli("get", "runs", workflow, "-w", ws, "--state-dir", state, "-o", "json")
    assert r.code == 0, r
    return r.json


def workflow_doc(dag: str, name="wf", schedule="") -> str:
    return f"""
version: v1
type: workflow
name: {name}
workspace: payments
owner: team-payments
workflow:
{schedule}  dag:
{dag}"""


def test_sample_repo_workflow_runs_end_to_end(sample_repo, state_dir):
    r = apply(sample_repo, state_dir, env=SAMPLE_ENV)
    assert r.code == 0, r
    (run,) = runs(state_dir, "transactions-daily")
    assert run["status"] == "succeeded" and run["trigger"] == "apply"
    assert {j["job"]: j["status"] for j in run["jobs"]} == {
        "clean": "succeeded", "daily-totals": "succeeded", "checks": "succeeded", "profile": "succeeded",
        "fraud-score": "succeeded"}
    # real tables in the lake
    (n_clean,) = lake_rows(state_dir, "SELECT count(*) FROM payments.transactions_clean")[0]
    raw = sum(1 for _ in open(sample_repo.path / "data/transactions/transactions.csv")) - 1
    assert 1000 <= n_clean < raw
    assert lake_rows(state_dir, "SELECT count(*) FROM payments.transactions_clean WHERE amount <= 0")[0][0] == 0
    assert lake_rows(state_dir, "SELECT count(*) FROM payments.merchant_daily_totals")[0][0] > 0
    assert lake_rows(state_dir, "SELECT count(*) FROM payments.fraud_scores")[0][0] == n_clean
    # the catalog knows the lake tables, their owner and last writer run
    cat = run_cli("get", "catalog", "--state-dir", state_dir, "-o", "json").json
    clean = next(d for d in cat["datasets"] if d["address"] == "lake://payments/transactions_clean")
    assert clean["owner_resource"] == "workflow:payments/transactions-daily" and clean["row_count"] == n_clean
    assert clean["last_run"] == run["run_id"] and {c["name"] for c in clean["columns"]} >= {"id", "amount", "loaded_at"}
    # quality results and the profile
    detail = run_cli("get", "runs", "transactions-daily", "-w", "payments", "--run", run["run_id"],
                     "--state-dir", state_dir, "-o", "json").json
    checks = {q["name"]: q for q in detail["quality"]}
    assert len(checks) == 6 and all(q["passed"] for q in checks.values())
    # lineage, dataset- and column-level
    lin = run_cli("get", "lineage", "lake://payments/merchant_daily_totals", "--upstream", "--state-dir", state_dir,
                  "-o", "json").json
    sources = {e["source"] for e in lin["upstream"]}
    assert {"lake://payments/transactions_clean", "depot://raw-transactions/transactions",
            "depot://merchants/merchants"} <= sources
    cols = {(c["target_column"], c["source"], c["source_column"]) for c in lin["columns"]}
    assert ("merchant_name", "lake://payments/transactions_clean", "merchant_name") in cols
    clean_cols = run_cli("get", "lineage", "lake://payments/transactions_clean", "--state-dir", state_dir, "-o", "json").json
    assert any(c["target_column"] == "merchant_name" and c["source"] == "depot://merchants/merchants"
               and c["source_column"] == "name" for c in clean_cols["columns"])
    # the run's own account of its bookkeeping, beside its logs (what bench/workflow_bench.py reports)
    run_dir = next(Path(j["log_path"]).parent for j in run["jobs"] if j["log_path"])
    books = json.loads((run_dir / "run.json").read_text())["bookkeeping"]
    assert set(books) == {"records", "commits", "quality", "lineage", "profiles", "catalog", "lineage_traced",
                          "imports", "head", "tail"}, books
    assert books["commits"] >= 1 and all(v > 0 for k, v in books.items() if k != "commits"), books
    # logs, and `get` shows the schedule's next fire time
    r = run_cli("logs", "transactions-daily", "-w", "payments", "--job", "fraud-score", "--state-dir", state_dir)
    assert r.code == 0 and "succeeded" in r.out, r
    wf = run_cli("get", "workflow", "transactions-daily", "-w", "payments", "--state-dir", state_dir, "-o", "json").json
    assert wf["next_run"] and wf["next_run"].endswith("02:00:00+00:00")
    table = run_cli("get", "workflow", "--state-dir", state_dir).out  # the table's NEXT RUN column, the same time
    assert "NEXT RUN" in table and wf["next_run"] in table
    # the same commit again runs nothing; `reconciler run` runs by hand
    assert apply(sample_repo, state_dir, env=SAMPLE_ENV).code == 0
    assert len(runs(state_dir, "transactions-daily")) == 1
    r = run_cli("run", "transactions-daily", "-w", "payments", "--state-dir", state_dir, "--repo", sample_repo.path,
                env=SAMPLE_ENV)
    assert r.code == 0, r
    assert [x["trigger"] for x in runs(state_dir, "transactions-daily")] == ["manual", "apply"]


SQL_DAG = """    - name: clean
      stack: sql
      spec:
        inputs: [{name: raw, dataset: "depot://raw/transactions"}]
        steps:
          - {name: valid, sql: "SELECT * FROM raw WHERE amount > 0"}
        outputs: [{from: valid, dataset: "lake://payments/valid", mode: overwrite}]
"""


def test_a_relative_state_dir_runs_python_jobs(sample_repo, tmp_path):
    r = run_cli("apply", "--auto-approve", "--repo", sample_repo.path, "--state-dir", "rel-state", cwd=tmp_path,
                env=SAMPLE_ENV)
    assert r.code == 0, r  # the workflow's run (with its python job) succeeded


def test_a_changed_workflow_reruns_only_itself(git_repo, state_dir):
    other = workflow_doc(SQL_DAG.replace("lake://payments/valid", "lake://payments/other"), name="other")
    git_repo.commit(repos.basic(**{"workflows/other.yaml": other}))
    assert apply(git_repo, state_dir).code == 0
    git_repo.commit({"workflows/daily.yaml": repos.WORKFLOW.replace("amount > 0", "amount > 8")})
    assert apply(git_repo, state_dir).code == 0
    assert len(runs(state_dir, "daily")) == 2 and len(runs(state_dir, "other")) == 1
    assert lake_rows(state_dir, "SELECT count(*) FROM payments.valid")[0][0] == 1


def test_a_python_file_change_alone_reruns_the_workflow(git_repo, state_dir):
    dag = """    - name: py
      stack: python
      spec:
        file: jobs/make.py
        function: make
        outputs: [{name: out, dataset: "lake://payments/made", mode: overwrite}]
"""
    script = "def make(ctx):\n    ctx.write('out', [{'n': %d}])\n"
    git_repo.commit(repos.basic(**{"workflows/py.yaml": workflow_doc(dag, name="py"), "jobs/make.py": script % 1}))
    assert apply(git_repo, state_dir).code == 0
    git_repo.commit({"jobs/make.py": script % 2})
    r = run_cli("plan", "--repo", git_repo.path, "--state-dir", state_dir)
    assert "~ workflow:payments/py" in r.out and "file it references changed" in r.out, r
    assert apply(git_repo, state_dir).code == 0
    assert lake_rows(state_dir, "SELECT n FROM payments.made") == [(2,)]


# a table written by `clean`, then checked by `checks` with the given quality checks
CHECKED_DAG = """    - name: clean
      stack: sql
      spec:
        inputs: [{{name: raw, dataset: "depot://raw/transactions"}}]
        steps: [{{name: s, sql: "SELECT * FROM raw"}}]
        outputs: [{{from: s, dataset: "lake://payments/checked"}}]
    - name: checks
      stack: quality
      depends_on: [clean]
      spec: {{dataset: "lake://payments/checked", checks: {checks}}}
"""


BAD_RUNS = {
    "sql that does not parse": ("""    - name: clean
      stack: sql
      spec:
        inputs: [{name: raw, dataset: "depot://raw/transactions"}]
        steps:
          - {name: valid, sql: "SELEC * FROM raw"}
        outputs: [{from: valid, dataset: "lake://payments/valid"}]
""", "clean", r"(?i)syntax error|parser error"),
    "a dataset that does not exist": ("""    - name: read
      stack: sql
      spec:
        inputs: [{name: t, dataset: "lake://payments/never_written"}]
        steps: [{name: s, sql: "SELECT * FROM t"}]
        outputs: [{from: s, dataset: "lake://payments/copy"}]
""", "read", r"never_written"),
    "a missing python file": ("""    - name: py
      stack: python
      spec: {file: jobs/nope.py, function: f, outputs: [{name: o, dataset: "lake://payments/o"}]}
""", "py", r"jobs/nope\.py"),
    "a shell command that exits non-zero": ("""    - name: sh
      stack: shell
      spec: {command: "echo failing on purpose; exit 3"}
""", "sh", r"code 3"),
    "a shell command that hangs past its timeout": ("""    - name: sh
      stack: shell
      timeout: 1s
      spec: {command: "sleep 120"}
""", "sh", r"(?i)timed out"),
    "a quality check naming a missing column": (CHECKED_DAG.format(checks="[{not_null: [no_such_column]}]"),
                                                "checks", r"no_such_column"),
}


@pytest.mark.parametrize("case", sorted(BAD_RUNS))
def test_a_failing_job_fails_the_run_and_says_why(git_repo, state_dir, case):
    dag, job, pattern = BAD_RUNS[case]
    dag += """    - name: after
      stack: shell
      depends_on: [%s]
      spec: {command: "echo never"}
""" % job
    git_repo.commit(repos.basic(**{"workflows/bad.yaml": workflow_doc(dag, name="bad")}))
    r = apply(git_repo, state_dir)
    assert r.code == 1, r
    assert "Traceback" not in r.out + r.err
    wf = run_cli("get", "workflow", "bad", "-w", "payments", "--state-dir", state_dir, "-o", "json").json
    assert wf["phase"] == "Failed" and f"job '{job}' failed" in wf["message"], wf
    import re

    assert re.search(pattern, wf["message"]), wf["message"]
    (run,) = runs(state_dir, "bad")
    jobs = {j["job"]: j["status"] for j in run["jobs"]}
    assert jobs[job] == "failed" and jobs["after"] == "skipped"
    # the other resources are untouched by the failure
    assert run_cli("get", "depot", "raw", "--state-dir", state_dir, "-o", "json").json["phase"] == "Ready"


def test_retries_then_succeeds_and_secrets_are_masked(git_repo, state_dir):
    dag = """    - name: flaky
      stack: shell
      retry: {count: 2, delay: 0s}
      secrets: {API_TOKEN: {secret: api-token}}
      spec: {command: "echo token is $API_TOKEN; test -f tried || { touch tried; exit 1; }"}
"""
    git_repo.commit(repos.basic(**{"secret.yaml": repos.SECRET, "workflows/flaky.yaml": workflow_doc(dag, name="flaky")}))
    r = apply(git_repo, state_dir)
    assert r.code == 0, r
    (run,) = runs(state_dir, "flaky")
    (job,) = run["jobs"]
    assert job["status"] == "succeeded" and job["attempts"] == 2
    r = run_cli("logs", "flaky", "-w", "payments", "--state-dir", state_dir)
    assert "token is ***" in r.out and ENV["RECONCILER_TEST_TOKEN"] not in r.out
    for f in state_dir.rglob("*"):
        if f.is_file():
            assert ENV["RECONCILER_TEST_TOKEN"].encode() not in f.read_bytes(), f


@pytest.mark.slow
def test_kill_9_mid_job_resumes_without_rerunning_finished_jobs(git_repo, state_dir):
    dag = SQL_DAG.replace("lake://payments/valid", "lake://payments/wf_valid") + """    - name: second
      stack: shell
      depends_on: [clean]
      spec: {command: "echo ran >> second-count"}
"""
    git_repo.commit(repos.basic(**{"workflows/wf.yaml": workflow_doc(dag)}))
    r = apply(git_repo, state_dir, env={**ENV, "RECONCILER_CRASH_AT": "job:workflow:payments/wf/second"})
    assert r.code == -signal.SIGKILL, r
    (run,) = runs(state_dir, "wf")
    assert run["status"] == "running"
    assert {j["job"]: j["status"] for j in run["jobs"]} == {"clean": "succeeded", "second": "running"}
    r = apply(git_repo, state_dir)
    assert r.code == 0, r
    (run2,) = runs(state_dir, "wf")
    assert run2["run_id"] == run["run_id"] and run2["status"] == "succeeded" and run2["resumed"] == 1
    assert "resumed" in run2["message"]
    jobs = {j["job"]: j for j in run2["jobs"]}
    assert jobs["clean"]["attempts"] == 1  # not run twice
    assert jobs["second"]["attempts"] == 2 and jobs["second"]["message"] in (None, "") or True
    assert (state_dir / "runs" / "payments" / "second-count").read_text() == "ran\n"


def test_openlineage_events_go_to_a_file(git_repo, state_dir, tmp_path):
    git_repo.commit(repos.basic())
    events = tmp_path / "ol.jsonl"
    r = apply(git_repo, state_dir, env={**ENV, "RECONCILER_OPENLINEAGE_FILE": str(events)})
    assert r.code == 0, r
    lines = [json.loads(l) for l in events.read_text().splitlines()]
    kinds = [(e["eventType"], e["job"]["name"]) for e in lines]
    assert ("START", "payments.daily") in kinds and ("COMPLETE", "payments.daily") in kinds
    assert ("COMPLETE", "payments.daily.clean") in kinds
    out = next(e for e in lines if e["eventType"] == "COMPLETE" and e["job"]["name"] == "payments.daily.clean")
    assert out["outputs"][0]["name"] == "payments.valid" and "schema" in out["outputs"][0]["facets"]


def test_logs_follow_a_running_workflow(git_repo, state_dir):
    import os
    import subprocess
    import sys
    import time

    dag = """    - name: waits
      stack: shell
      spec: {command: "echo waiting; for i in $(seq 600); do test -f go && break; sleep 0.1; done; echo got the signal"}
"""
    git_repo.commit(repos.basic(**{"workflows/w.yaml": workflow_doc(dag, name="w")}))
    env = {**os.environ, **ENV}
    env.pop("RECONCILER_STATE_DIR", None)
    applying = subprocess.Popen([sys.executable, "-m", "reconciler", "apply", "--auto-approve", "--repo",
                                 str(git_repo.path), "--state-dir", str(state_dir)], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    follower = None
    try:
        runs_dir = state_dir / "runs" / "payments" / "w"
        for _ in range(300):  # until the job has started and logged (bounded poll, not a timing assertion)
            logs = list(runs_dir.glob("*/waits.log"))
            if logs and "waiting" in logs[0].read_text():
                break
            time.sleep(0.1)
        else:
            pytest.fail("the job never started")
        follower = subprocess.Popen([sys.executable, "-m", "reconciler", "logs", "w", "-w", "payments", "--follow",
                                     "--state-dir", str(state_dir)], env=env, stdout=subprocess.PIPE, text=True)
        (state_dir / "runs" / "payments" / "go").touch()
        assert applying.wait(60) == 0
        out, _ = follower.communicate(timeout=60)
        assert follower.returncode == 0
        assert "waiting" in out and "got the signal" in out and "succeeded" in out
    finally:
        for p in (applying, follower):
            if p is not None and p.poll() is None:
                p.kill()


def test_a_failed_quality_job_still_records_its_failing_checks(git_repo, state_dir):
    """Quality SLOs count failures: a check that failed the job must be in the catalog, not only in the log."""
    dag = CHECKED_DAG.format(checks="[{row_count: {min: 1000000}}, {not_null: [id]}]")
    git_repo.commit(repos.basic(**{"workflows/q.yaml": workflow_doc(dag, name="q")}))
    assert apply(git_repo, state_dir).code == 1
    r = run_cli("get", "catalog", "lake://payments/checked", "--state-dir", state_dir, "-o", "json")
    assert r.code == 0, r
    (ds,) = r.json["datasets"]
    got = {q["check_type"]: q["passed"] for q in ds["quality"]}
    assert got == {"row_count": False, "not_null": True}, ds["quality"]
