"""Stacks that run a subprocess: shell, python (the sample's fraud_score.py), custom (YAML-defined)."""
from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import duckdb
import yaml

from reconciler.core.resources import normalise, validate_document
from reconciler.stacks.base import JobContext
from reconciler.stacks.custom import CustomStack
from reconciler.stacks.process import run_process
from reconciler.stacks.python import PythonStack
from reconciler.stacks.shell import ShellStack
from tests.conftest import SAMPLE_REPO, write_files


class TestLake:
    """The run's lake as the runner gives it: one DuckDB connection, a cursor per caller."""

    __test__ = False  # not a test class

    def __init__(self, path: Path):
        self.path = path
        self.conn = duckdb.connect(str(path))

    def cursor(self):
        return self.conn.cursor()


class Log(list):
    """The job log: lines in order, appended from the output-reader thread."""

    def __call__(self, line: str) -> None:
        self.append(line)

    def text(self) -> str:
        return "\n".join(self)


def make_ctx(tmp_path: Path, stack: str, spec: dict, *, repo_dir: Path | None = None, lake: TestLake | None = None,
             timeout: float | None = None, **extra) -> JobContext:
    return JobContext(
        workflow="transactions-daily", workflow_id="workflow:payments/transactions-daily", workspace="payments",
        job="job-a", stack=stack, spec=spec, run_id="run-0001", attempt=1, commit="c0ffee",
        state_dir=tmp_path / "state", repo_dir=repo_dir or tmp_path / "repo",
        job_dir=tmp_path / "state" / "runs" / "run-0001" / "job-a" / "1", run_dir=tmp_path / "state" / "work" / "payments",
        lake=lake or TestLake(tmp_path / "lake.duckdb"), depots={},
        environ={"PATH": os.environ["PATH"], "HOME": str(tmp_path), "DAEMON_ONLY": "leaks"},
        log=Log(), deadline=None if timeout is None else time.monotonic() + timeout, **extra)


def alive(pid: int) -> bool:
    """Running, as opposed to gone or a zombie waiting for init to reap it."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2] not in "ZX"


def wait_gone(pid: int, limit: float = 10.0) -> bool:
    give_up = time.monotonic() + limit
    while time.monotonic() < give_up:
        if not alive(pid):
            return True
        time.sleep(0.05)
    return not alive(pid)


def pid_after(log: list[str], prefix: str) -> int:
    return int(next(line for line in log if line.startswith(prefix)).split()[-1])


# ---- run_process -------------------------------------------------------------------------------

def test_process_streams_stdout_and_stderr_in_order(tmp_path):
    lines = []
    out = run_process(["sh", "-c", "echo one; echo two >&2; echo three"], cwd=tmp_path, env={"PATH": os.environ["PATH"]},
                      log=lines.append, deadline=None, cancel=threading.Event())
    assert (out.returncode, out.timed_out, out.cancelled) == (0, False, False)
    assert lines == ["one", "two", "three"]


def test_process_timeout_kills_the_grandchild_too(tmp_path):
    lines = []
    out = run_process(["sh", "-c", "sleep 60 & echo grandchild $!; sleep 60"], cwd=tmp_path,
                      env={"PATH": os.environ["PATH"]}, log=lines.append, deadline=time.monotonic() + 0.5,
                      cancel=threading.Event())
    assert out.timed_out and not out.cancelled
    assert out.seconds < 30  # not the 60 s of the sleeps
    assert wait_gone(pid_after(lines, "grandchild"))


def test_process_kills_what_ignores_sigterm(tmp_path):
    lines = []
    # children inherit the ignored SIGTERM: only the SIGKILL that follows can stop them
    out = run_process(["sh", "-c", "trap '' TERM; sleep 60 & echo grandchild $!; sleep 60"], cwd=tmp_path,
                      env={"PATH": os.environ["PATH"]}, log=lines.append, deadline=time.monotonic() + 0.5,
                      cancel=threading.Event())
    assert out.timed_out
    assert wait_gone(pid_after(lines, "grandchild"))


def test_process_cancel_stops_the_tree(tmp_path):
    cancel = threading.Event()
    lines = []

    def log(line):
        lines.append(line)
        if line.startswith("grandchild"):
            cancel.set()

    out = run_process(["sh", "-c", "sleep 60 & echo grandchild $!; sleep 60"], cwd=tmp_path,
                      env={"PATH": os.environ["PATH"]}, log=log, deadline=None, cancel=cancel)
    assert out.cancelled and not out.timed_out
    assert wait_gone(pid_after(lines, "grandchild"))


def test_process_leaves_no_background_process_behind(tmp_path):
    lines = []
    out = run_process(["sh", "-c", "sleep 60 & echo background $!"], cwd=tmp_path, env={"PATH": os.environ["PATH"]},
                      log=lines.append, deadline=None, cancel=threading.Event())
    assert out.returncode == 0 and out.seconds < 30
    assert wait_gone(pid_after(lines, "background"))


def test_process_missing_executable(tmp_path):
    lines = []
    out = run_process(["no-such-program-4711", "x"], cwd=tmp_path, env={"PATH": "/usr/bin:/bin"},
                      log=lines.append, deadline=None, cancel=threading.Event())
    assert out.returncode is None
    assert lines == ["cannot run 'no-such-program-4711': no such executable (searched PATH=/usr/bin:/bin)"]


# ---- shell -------------------------------------------------------------------------------------

def test_shell_runs_in_the_run_dir(tmp_path):
    ctx = make_ctx(tmp_path, "shell", {"command": "echo hello; pwd; echo oops >&2"})
    result = ShellStack().run(ctx)
    assert result.ok, result.message
    assert ctx.log[:3] == ["hello", str(ctx.run_dir), "oops"]
    assert ctx.run_dir.is_dir()


def test_shell_non_zero_exit(tmp_path):
    ctx = make_ctx(tmp_path, "shell", {"command": ["sh", "-c", "echo failing; exit 3"]})
    result = ShellStack().run(ctx)
    assert not result.ok and result.retryable
    assert result.message == "command exited with code 3"
    assert "failing" in ctx.log


def test_shell_timeout_kills_the_process_tree(tmp_path):
    ctx = make_ctx(tmp_path, "shell", {"command": "sleep 60 & echo grandchild $!; sleep 60"}, timeout=0.5)
    result = ShellStack().run(ctx)
    assert not result.ok and result.retryable
    assert result.message.startswith("timed out after ") and result.message.endswith("; the process tree was killed")
    assert wait_gone(pid_after(ctx.log, "grandchild"))


def test_shell_env_is_small_and_has_spec_env_and_secrets(tmp_path):
    ctx = make_ctx(tmp_path, "shell", {"command": ["sh", "-c", "env | sort"], "env": {"GREETING": "hi"}},
                   secret_env={"PAYMENTS_API_TOKEN": "tok-123"})
    result = ShellStack().run(ctx)
    assert result.ok, result.message
    env = dict(line.split("=", 1) for line in ctx.log if "=" in line)
    assert env["GREETING"] == "hi" and env["PAYMENTS_API_TOKEN"] == "tok-123"
    assert env["RECONCILER_RUN_ID"] == "run-0001" and env["HOME"] == str(tmp_path)
    assert "DAEMON_ONLY" not in env  # the daemon's own environment does not leak into jobs


def test_shell_missing_executable(tmp_path):
    ctx = make_ctx(tmp_path, "shell", {"command": ["dbt-that-is-not-installed", "run"]})
    result = ShellStack().run(ctx)
    assert not result.ok and not result.retryable
    assert result.message.startswith("cannot run 'dbt-that-is-not-installed': no such executable")


# ---- python ------------------------------------------------------------------------------------

def sample_job_spec(job: str) -> dict:
    data = yaml.load((SAMPLE_REPO / "workflows" / "transactions-daily.yaml").read_text(), Loader=yaml.CSafeLoader)
    model, problems = validate_document(data)
    assert not problems, problems
    return next(j for j in normalise(model)["workflow"]["dag"] if j["name"] == job)["spec"]


def lake_with_transactions(tmp_path: Path) -> TestLake:
    lake = TestLake(tmp_path / "lake.duckdb")
    lake.conn.execute("CREATE SCHEMA payments")
    lake.conn.execute("""
        CREATE TABLE payments.transactions_clean AS
        SELECT * FROM (VALUES
            (1, TIMESTAMP '2026-01-05 02:00:00', '4111111111111111', 10.00::DECIMAL(12,2), 'USD', 'm1', 'Acme',
             'US', 'NA', 'approved'),
            (2, TIMESTAMP '2026-01-05 02:10:00', '4111111111111111', 10.00, 'USD', 'm1', 'Acme', 'US', 'NA', 'approved'),
            (3, TIMESTAMP '2026-01-05 02:20:00', '4111111111111111', 10.00, 'USD', 'm1', 'Acme', 'US', 'NA', 'approved'),
            (4, TIMESTAMP '2026-01-05 02:30:00', '4111111111111111', 10.00, 'USD', 'm1', 'Acme', 'US', 'NA', 'approved'),
            (5, TIMESTAMP '2026-01-05 02:40:00', '4111111111111111', 100.00, 'USD', 'm1', 'Acme', 'US', 'NA',
             'approved'),
            (6, TIMESTAMP '2026-01-05 14:00:00', '5500000000000004', 20.00, 'EUR', 'm2', 'Bolt', 'DE', 'EU', 'approved')
        ) AS t(id, ts, card_number, amount, currency, merchant_id, merchant_name, country, region, status)
    """)
    return lake


def test_python_runs_the_sample_fraud_score_unchanged(tmp_path):
    lake = lake_with_transactions(tmp_path)
    ctx = make_ctx(tmp_path, "python", sample_job_spec("fraud-score"), repo_dir=SAMPLE_REPO, lake=lake)
    result = PythonStack().run(ctx)
    assert result.ok, f"{result.message}\n{ctx.log.text()}"
    assert "scored 6 transactions; 1 flagged at threshold 0.6" in ctx.log
    assert (result.rows_in, result.rows_out) == (6, 6)
    assert result.inputs == ["lake://payments/transactions_clean"]
    [out] = result.outputs
    assert out.address == "lake://payments/fraud_scores" and out.row_count == 6
    assert ("flagged", "BOOLEAN") in out.columns and ("score", "DOUBLE") in out.columns
    flagged = lake.conn.execute("SELECT transaction_id, card_last4, reasons FROM payments.fraud_scores "
                                "WHERE flagged").fetchall()
    assert flagged == [(5, "1111", "amount_5x_merchant_median,night_time,card_burst")]
    assert not list(SAMPLE_REPO.rglob("__pycache__"))  # the repository tree is left as it was


def python_repo(tmp_path: Path, files: dict[str, str]) -> Path:
    repo = tmp_path / "repo"
    write_files(repo, files)
    return repo


def test_python_missing_file(tmp_path):
    ctx = make_ctx(tmp_path, "python", {"file": "scripts/x.py", "function": "run"},
                   repo_dir=python_repo(tmp_path, {"README.md": "x"}))
    result = PythonStack().run(ctx)
    assert not result.ok and not result.retryable
    assert result.message == "python file scripts/x.py does not exist in the repository"


def test_python_missing_function(tmp_path):
    lake = lake_with_transactions(tmp_path)
    spec = {**sample_job_spec("fraud-score"), "function": "scor"}
    ctx = make_ctx(tmp_path, "python", spec, repo_dir=SAMPLE_REPO, lake=lake)
    result = PythonStack().run(ctx)
    assert not result.ok and not result.retryable
    assert result.message == "function 'scor' not found in scripts/fraud_score.py; it defines score_rows, score"


def test_python_user_exception(tmp_path):
    repo = python_repo(tmp_path, {"jobs/boom.py": """
        def run(ctx):
            ctx.log("about to fail")
            raise ValueError(f"threshold {ctx.params['threshold']} is too high")
    """})
    ctx = make_ctx(tmp_path, "python", {"file": "jobs/boom.py", "function": "run", "params": {"threshold": 7}},
                   repo_dir=repo)
    result = PythonStack().run(ctx)
    assert not result.ok and result.retryable
    assert result.message == "boom.run raised ValueError: threshold 7 is too high"
    log = ctx.log.text()
    assert "about to fail" in log and "Traceback (most recent call last)" in log
    assert "boom.py\", line 3, in run" in log and "python_child" not in log  # the user's frames only


def test_python_output_not_written(tmp_path):
    repo = python_repo(tmp_path, {"jobs/lazy.py": "def run(ctx):\n    ctx.log('nothing to do')\n"})
    spec = {"file": "jobs/lazy.py", "function": "run",
            "outputs": [{"name": "result", "dataset": "lake://payments/result", "mode": "overwrite"}]}
    ctx = make_ctx(tmp_path, "python", spec, repo_dir=repo)
    result = PythonStack().run(ctx)
    assert not result.ok and not result.retryable
    assert result.message.startswith("output 'result' was not written: call ctx.write('result', rows)")


def test_python_returned_tables_siblings_secrets_and_merge(tmp_path):
    repo = python_repo(tmp_path, {
        "jobs/helpers.py": "def double(x):\n    return 2 * x\n",
        "jobs/enrich.py": """
            import os
            import pyarrow as pa
            from helpers import double            # a sibling, like `python jobs/enrich.py`
            from jobs.helpers import double as d2  # from the repository root (PYTHONPATH)

            def run(ctx):
                table = ctx.read_arrow("transactions")
                ctx.log(f"token={os.environ['API_TOKEN']} inputs={ctx.inputs} run={ctx.run_id}")
                ids = table.column("id").to_pylist()
                return {"doubled": pa.table({"id": ids, "twice": [double(i) + d2(0) for i in ids],
                                             "factor": [ctx.params["factor"]] * len(ids)})}
        """})
    lake = lake_with_transactions(tmp_path)
    lake.conn.execute("CREATE TABLE payments.doubled AS SELECT 1 AS id, 0 AS twice, 0 AS factor "
                      "UNION ALL SELECT 99, 0, 0")
    spec = {"file": "jobs/enrich.py", "function": "run", "params": {"factor": 3},
            "inputs": [{"name": "transactions", "dataset": "lake://payments/transactions_clean"}],
            "outputs": [{"name": "doubled", "dataset": "lake://payments/doubled", "mode": "merge", "keys": ["id"]}]}
    ctx = make_ctx(tmp_path, "python", spec, repo_dir=repo, lake=lake, secret_env={"API_TOKEN": "tok-9"})
    result = PythonStack().run(ctx)
    assert result.ok, f"{result.message}\n{ctx.log.text()}"
    assert "token=tok-9 inputs=['transactions'] run=run-0001" in ctx.log
    assert result.rows_out == 6 and result.outputs[0].row_count == 7  # 6 merged in, row 99 kept
    assert lake.conn.execute("SELECT id, twice, factor FROM payments.doubled WHERE id IN (1, 99) ORDER BY id"
                             ).fetchall() == [(1, 2, 3), (99, 0, 0)]


def test_python_write_to_an_undeclared_output(tmp_path):
    repo = python_repo(tmp_path, {"jobs/typo.py": "def run(ctx):\n    ctx.write('scores', [{'a': 1}])\n"})
    spec = {"file": "jobs/typo.py", "function": "run",
            "outputs": [{"name": "fraud_scores", "dataset": "lake://payments/fraud_scores", "mode": "overwrite"}]}
    ctx = make_ctx(tmp_path, "python", spec, repo_dir=repo)
    result = PythonStack().run(ctx)
    assert not result.ok
    assert result.message == ("typo.run raised JobApiError: ctx.write('scores', ...): this job has no output "
                              "called 'scores' (outputs: fraud_scores); declare it under the job's spec.outputs")


def test_python_timeout_kills_the_child(tmp_path):
    repo = python_repo(tmp_path, {"jobs/slow.py": """
        import time
        def run(ctx):
            ctx.log("started")
            time.sleep(60)
    """})
    ctx = make_ctx(tmp_path, "python", {"file": "jobs/slow.py", "function": "run"}, repo_dir=repo, timeout=2)
    result = PythonStack().run(ctx)
    assert not result.ok
    assert result.message.startswith("timed out after ") and "the process tree was killed" in result.message
    assert "started" in ctx.log


# ---- custom stacks -----------------------------------------------------------------------------

def stack_document(command: list[str], env: dict | None = None) -> dict:
    data = {"version": "v1", "type": "stack", "name": "dbt-run", "stack": {
        "command": command, "env": env or {},
        "schema": {"type": "object", "required": ["project"],
                   "properties": {"project": {"type": "string"}, "select": {"type": "string", "default": "*"},
                                  "vars": {"type": "object", "default": {"day": "today"}}}}}}
    model, problems = validate_document(data)
    assert not problems, problems
    return normalise(model)


def test_custom_stack_renders_command_and_env_with_defaults(tmp_path):
    document = stack_document(
        ["sh", "-c", "echo \"$0 $1 $2\"; echo \"profiles=$DBT_PROFILES_DIR token=$DBT_TOKEN\"",
         "--project-dir={{ spec.project }}", "--select={{ spec.select }}", "--vars={{ spec.vars | tojson }}"],
        env={"DBT_PROFILES_DIR": "{{ run_dir }}/profiles", "DBT_TOKEN": "{{ secrets.DBT_TOKEN }}"})
    ctx = make_ctx(tmp_path, "dbt-run", {"project": "analytics"}, runtime_spec=document,
                   secret_env={"DBT_TOKEN": "tok-dbt"})
    result = CustomStack().run(ctx)
    assert result.ok, f"{result.message}\n{ctx.log.text()}"
    assert '--project-dir=analytics --select=* --vars={"day": "today"}' in ctx.log
    assert f"profiles={ctx.run_dir}/profiles token=tok-dbt" in ctx.log


def test_custom_stack_missing_variable_names_the_template(tmp_path):
    document = stack_document(["dbt", "run", "--target", "{{ spec.target }}"])
    ctx = make_ctx(tmp_path, "dbt-run", {"project": "analytics"}, runtime_spec=document)
    result = CustomStack("dbt-run").run(ctx)
    assert not result.ok and not result.retryable
    assert result.message == ("stack 'dbt-run': cannot render command[3] '{{ spec.target }}': "
                              "'dict object' has no attribute 'target'")


def test_custom_stack_checks_the_spec_against_its_schema(tmp_path):
    document = stack_document(["true"])
    ctx = make_ctx(tmp_path, "dbt-run", {"select": "tag:daily"}, runtime_spec=document)
    result = CustomStack().run(ctx)
    assert not result.ok and not result.retryable
    assert "does not match the stack's schema" in result.message and "'project' is a required property" in result.message


def test_custom_stack_sandbox_refuses_unsafe_templates(tmp_path):
    document = stack_document(["echo", "{{ spec.__class__.__mro__ }}"])
    ctx = make_ctx(tmp_path, "dbt-run", {"project": "p"}, runtime_spec=document)
    result = CustomStack().run(ctx)
    assert not result.ok and "cannot render command[1]" in result.message
