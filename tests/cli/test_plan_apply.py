"""plan / apply / get through the real CLI on real git repos and real DuckDB state."""
import json
import subprocess
import sys

import pygit2
import pytest

from tests.conftest import run_cli
from tests.cli import repos

ENV = {"RECONCILER_TEST_TOKEN": "s3cr3t-value-never-shown"}


def cli(repo, state, *args, env=ENV):
    return run_cli(*args, "--repo", repo.path, "--state-dir", state, env=env)


def apply(repo, state, *args, env=ENV):
    return cli(repo, state, "apply", "--auto-approve", *args, env=env)


def get_json(state, *args):
    r = run_cli("get", *args, "--state-dir", state, "-o", "json")
    assert r.code == 0, r
    return r.json


def phases(state) -> dict:
    return {x["id"]: x["phase"] for x in get_json(state)}


def test_plan_apply_get_and_idempotence(git_repo, state_dir):
    commit = git_repo.commit(repos.basic(**{"secret.yaml": repos.SECRET}))
    r = cli(git_repo, state_dir, "plan", "--detailed-exitcode")
    assert r.code == 2, r
    assert "+ workspace:payments" in r.out and "Plan: 5 to create" in r.out
    r = apply(git_repo, state_dir)
    assert r.code == 0, r
    got = {x["id"]: x for x in get_json(state_dir)}
    assert set(got) == {"workspace:payments", "depot:raw", "workflow:payments/daily", "policy:mask-cards",
                        "secret:payments/api-token"}
    assert all(x["phase"] == "Ready" and x["commit"] == commit for x in got.values())
    # same commit twice changes nothing
    r = cli(git_repo, state_dir, "plan", "--detailed-exitcode")
    assert r.code == 0, r
    assert "No changes" in r.out
    r = apply(git_repo, state_dir)
    assert r.code == 0 and "Apply complete" not in r.out
    # the depot was introspected into the catalog
    cat = run_cli("get", "catalog", "--state-dir", state_dir, "-o", "json").json
    ds = {d["address"]: d for d in cat["datasets"]}
    assert "depot://raw/transactions" in ds
    assert [c["name"] for c in ds["depot://raw/transactions"]["columns"]] == ["id", "amount", "currency"]


def test_secret_values_never_show(git_repo, state_dir):
    git_repo.commit(repos.basic(**{"secret.yaml": repos.SECRET}))
    outputs = [apply(git_repo, state_dir, "-o", "json"), apply(git_repo, state_dir)]
    outputs += [run_cli("get", "--state-dir", state_dir, "-o", o) for o in ("json", "yaml", "table")]
    outputs += [cli(git_repo, state_dir, "plan", "-o", o) for o in ("json", "markdown", "text")]
    for r in outputs:
        assert ENV["RECONCILER_TEST_TOKEN"] not in r.out + r.err
    for f in state_dir.rglob("*"):
        if f.is_file():
            assert ENV["RECONCILER_TEST_TOKEN"].encode() not in f.read_bytes(), f
    sec = get_json(state_dir, "secret", "api-token", "-w", "payments")
    assert sec["phase"] == "Ready" and len(sec["outputs"]["fingerprint"]) == 16


def test_missing_secret_value_fails_that_resource_only(git_repo, state_dir):
    git_repo.commit(repos.basic(**{"secret.yaml": repos.SECRET}))
    r = apply(git_repo, state_dir, env={})
    assert r.code == 1
    assert "RECONCILER_TEST_TOKEN" in r.out
    p = phases(state_dir)
    assert p["secret:payments/api-token"] == "Failed" and p["depot:raw"] == "Ready"


def test_update_shows_a_field_level_diff(git_repo, state_dir):
    git_repo.commit(repos.basic())
    assert apply(git_repo, state_dir).code == 0
    git_repo.commit({"workflows/daily.yaml": repos.WORKFLOW.replace("amount > 0", "amount >= 1")})
    r = cli(git_repo, state_dir, "plan", "--detailed-exitcode")
    assert r.code == 2
    assert "~ workflow:payments/daily" in r.out
    assert 'workflow.dag[0].spec.steps[0].sql: "SELECT * FROM raw WHERE amount > 0" -> "SELECT * FROM raw WHERE amount >= 1"' in r.out
    j = cli(git_repo, state_dir, "plan", "-o", "json").json
    (action,) = [a for a in j["actions"] if a["action"] != "keep"]
    assert action["action"] == "update" and action["changes"][0]["path"] == "workflow.dag[0].spec.steps[0].sql"
    md = cli(git_repo, state_dir, "plan", "-o", "markdown").out
    assert md.startswith("### Reconciler plan") and "| `~` | `workflow:payments/daily` |" in md


def test_changing_a_depot_kind_replaces_it(git_repo, state_dir, tmp_path):
    import sqlite3

    git_repo.commit(repos.basic())
    assert apply(git_repo, state_dir).code == 0
    db = git_repo.path / "data" / "raw.sqlite"
    with sqlite3.connect(db) as c:
        c.execute("CREATE TABLE transactions (id INTEGER, amount REAL)")
    git_repo.commit({"depots/raw.yaml": repos.DEPOT.replace("kind: file", "kind: sqlite")
                    .replace("path: data/tx", "path: data/raw.sqlite").replace("  format: csv\n", "")})
    r = cli(git_repo, state_dir, "plan")
    assert "-/+ depot:raw" in r.out and "forces replacement: depot.kind" in r.out, r
    assert apply(git_repo, state_dir).code == 0
    assert phases(state_dir)["depot:raw"] == "Ready"


def test_saved_plan_applies_exactly_or_is_refused_as_stale(git_repo, state_dir, tmp_path):
    git_repo.commit(repos.basic())
    plan_file = tmp_path / "p.json"
    r = cli(git_repo, state_dir, "plan", "--out", plan_file)
    assert r.code == 0 and plan_file.exists()
    # the branch moves on after the plan was saved: the saved plan still applies what it showed
    git_repo.commit(repos.depots(1))
    r = run_cli("apply", plan_file, "--state-dir", state_dir)
    assert r.code == 0, r
    assert "depot:extra-0" not in phases(state_dir)
    # state moved since this second plan was saved: refused, nothing applied
    stale = tmp_path / "stale.json"
    assert cli(git_repo, state_dir, "plan", "--out", stale).code == 0
    git_repo.commit(repos.depots(2))
    assert apply(git_repo, state_dir).code == 0
    before = phases(state_dir)
    r = run_cli("apply", stale, "--state-dir", state_dir)
    assert r.code == 1 and "stale" in r.err, r
    assert phases(state_dir) == before
    r = run_cli("apply", tmp_path / "nope.json", "--state-dir", state_dir)
    assert r.code == 1 and "does not exist" in r.err


def test_apply_without_a_terminal_needs_auto_approve(git_repo, state_dir):
    git_repo.commit(repos.basic())
    r = cli(git_repo, state_dir, "apply")
    assert r.code == 1 and "--auto-approve" in r.err
    assert run_cli("get", "--state-dir", state_dir, "-o", "json").json == []


def test_prune_deletes_what_left_git_but_never_for_a_broken_file(git_repo, state_dir):
    git_repo.commit(repos.basic(**repos.depots(2)))
    assert apply(git_repo, state_dir).code == 0
    # a broken file keeps its resources
    git_repo.commit({"depots/extra-0.yaml": "version: v1\ntype: depot\nname: extra-0\ndepot: {kind: file, path: [\n"})
    r = cli(git_repo, state_dir, "plan")
    assert r.code == 1
    assert "= depot:extra-0" in r.out and "never pruned" in r.out, r
    r = apply(git_repo, state_dir)
    assert r.code == 1 and "nothing was applied" in r.out
    assert "depot:extra-0" in phases(state_dir)
    # a removed file prunes; prune: "false" keeps
    annotated = repos.DEPOT.replace("name: raw", "name: extra-1") + "annotations: {reconciler/prune: \"false\"}\n"
    git_repo.commit({"depots/extra-1.yaml": annotated, **repos.depots(1)})
    assert apply(git_repo, state_dir).code == 0
    git_repo.commit({"depots/extra-0.yaml": None, "depots/extra-1.yaml": None})
    r = cli(git_repo, state_dir, "plan")
    assert "- depot:extra-0" in r.out and "= depot:extra-1" in r.out and "prune" in r.out, r
    assert apply(git_repo, state_dir).code == 0
    p = phases(state_dir)
    assert "depot:extra-0" not in p and p["depot:extra-1"] == "Ready"


def test_a_plan_over_max_prune_is_held(git_repo, state_dir):
    git_repo.commit(repos.basic(**repos.depots(11)))
    assert apply(git_repo, state_dir).code == 0
    git_repo.commit({k: None for k in repos.depots(11)})
    r = cli(git_repo, state_dir, "plan")
    assert "Held" in r.out and "max_prune" in r.out
    r = apply(git_repo, state_dir)
    assert r.code == 1 and "--allow-prune" in r.err
    assert len(phases(state_dir)) == 15
    r = apply(git_repo, state_dir, "--allow-prune")
    assert r.code == 0, r
    assert len(phases(state_dir)) == 4


def test_a_failed_depot_blocks_its_dependents_only(git_repo, state_dir):
    files = repos.basic()
    files.pop("data/tx/transactions.csv")
    git_repo.commit(files)
    r = apply(git_repo, state_dir)
    assert r.code == 1
    assert "data/tx" in r.out and "does not exist" in r.out
    p = phases(state_dir)
    assert p["depot:raw"] == "Failed"
    assert p["workflow:payments/daily"] == "Blocked"
    assert p["workspace:payments"] == "Ready" and p["policy:mask-cards"] == "Ready"
    msg = get_json(state_dir, "workflow", "daily", "-w", "payments")["message"]
    assert "depot:raw" in msg
    # fixing the data converges
    git_repo.commit({"data/tx/transactions.csv": repos.CSV})
    assert apply(git_repo, state_dir).code == 0
    assert set(phases(state_dir).values()) == {"Ready"}


def test_base_plans_a_preview_against_another_ref(git_repo, state_dir):
    git_repo.commit(repos.basic())
    git_repo.repo.branches.local.create("feature", git_repo.repo.head.peel())
    git_repo.repo.checkout("refs/heads/feature")
    git_repo.commit(repos.depots(1))
    r = cli(git_repo, state_dir, "plan", "--base", "main", "-o", "markdown")
    assert r.code == 0, r
    assert "against `main`" in r.out and "| `+` | `depot:extra-0` |" in r.out
    assert "workspace:payments" not in r.out
    assert not (state_dir / "state.duckdb").exists()


def test_second_apply_is_refused_while_the_lock_is_held(git_repo, state_dir):
    git_repo.commit(repos.basic())
    state_dir.mkdir(parents=True)
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys; from pathlib import Path; from reconciler.store.lock import StateLock\n"
         f"with StateLock(Path({str(state_dir)!r}), 'apply'):\n"
         "    print('locked', flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        r = apply(git_repo, state_dir)
        assert r.code == 1
        assert "locked" in r.err and str(holder.pid) in r.err
    finally:
        holder.stdin.close()
        holder.wait(10)
    assert apply(git_repo, state_dir).code == 0


def test_delete_refuses_dependents_unless_cascade(git_repo, state_dir):
    git_repo.commit(repos.basic())
    assert apply(git_repo, state_dir).code == 0
    r = run_cli("delete", "depot", "raw", "--state-dir", state_dir, "--auto-approve")
    assert r.code == 1 and "workflow:payments/daily" in r.err and "--cascade" in r.err
    assert "depot:raw" in phases(state_dir)
    r = run_cli("delete", "depot", "raw", "--state-dir", state_dir, "--auto-approve", "--cascade")
    assert r.code == 0, r
    p = phases(state_dir)
    assert "depot:raw" not in p and "workflow:payments/daily" not in p and "workspace:payments" in p
    r = run_cli("delete", "-f", git_repo.path / "policies" / "mask.yaml", "--state-dir", state_dir, "--auto-approve")
    assert r.code == 0, r
    assert "policy:mask-cards" not in phases(state_dir)
    r = run_cli("delete", "depot", "nope", "--state-dir", state_dir, "--auto-approve")
    assert r.code == 1 and "not applied" in r.err


def test_get_filters_and_formats(git_repo, state_dir):
    git_repo.commit(repos.basic())
    assert apply(git_repo, state_dir).code == 0
    r = run_cli("get", "workflows", "--state-dir", state_dir)
    assert r.code == 0 and "daily" in r.out and "Ready" in r.out and "raw" not in r.out
    r = run_cli("get", "depot", "raw", "--state-dir", state_dir, "-o", "yaml")
    assert r.code == 0 and "phase: Ready" in r.out
    r = run_cli("get", "wrkflow", "--state-dir", state_dir)
    assert r.code == 1 and "did you mean 'workflow'" in r.err
    r = run_cli("get", "depot", "nope", "--state-dir", state_dir)
    assert r.code == 1


def test_init_scaffolds_a_product_that_validates(tmp_path):
    r = run_cli("init", tmp_path / "my-product", "--template", "dataproduct", "--name", "card-payments")
    assert r.code == 0, r
    r = run_cli("validate", "--repo", tmp_path / "my-product")
    assert r.code == 0, r
    r = run_cli("apply", "--auto-approve", "--repo", tmp_path / "my-product", "--state-dir", tmp_path / "st")
    assert r.code == 0, r
    r = run_cli("init", tmp_path / "my-product", "--name", "card-payments")
    assert r.code == 1 and "not empty" in r.err
    r = run_cli("init", tmp_path / "x", "--name", "Card Payments")
    assert r.code == 1


def test_a_remembered_plan_is_never_served_after_the_state_moved(git_repo, state_dir):
    git_repo.commit(repos.basic())
    assert apply(git_repo, state_dir).code == 0
    for _ in range(2):  # the second run is answered from the plan memo
        assert cli(git_repo, state_dir, "plan", "--detailed-exitcode").code == 0
    assert list((state_dir / "cache" / "plans").glob("*.plan"))
    r = run_cli("delete", "policy", "mask-cards", "--state-dir", state_dir, "--auto-approve")
    assert r.code == 0, r
    r = cli(git_repo, state_dir, "plan", "--detailed-exitcode")
    assert r.code == 2 and "+ policy:mask-cards" in r.out, r


def test_apply_on_a_terminal_shows_the_plan_and_asks(git_repo, state_dir):
    import os
    import pty

    git_repo.commit(repos.basic())

    def run_on_tty(answer: str) -> str:
        pid, fd = pty.fork()
        if pid == 0:  # child: the real CLI with a terminal for stdin and stdout
            os.execvpe(sys.executable, [sys.executable, "-m", "reconciler", "apply", "--repo", str(git_repo.path),
                                        "--state-dir", str(state_dir)], {**os.environ, **ENV, "COLUMNS": "200"})
        seen = b""
        answered = False
        while True:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            seen += chunk
            if not answered and b"Only 'yes' will be accepted" in seen:
                os.write(fd, answer.encode() + b"\r")
                answered = True
        os.waitpid(pid, 0)
        return seen.decode(errors="replace")

    text = run_on_tty("no")
    assert "+ depot:raw" in text and "cancelled" in text
    assert run_cli("get", "--state-dir", state_dir, "-o", "json").json == []
    text = run_on_tty("yes")
    assert "Apply complete" in text
    assert set(phases(state_dir).values()) == {"Ready"}


def test_removing_a_depot_that_a_workflow_still_reads_is_an_error_not_a_prune(git_repo, state_dir):
    git_repo.commit(repos.basic())
    assert apply(git_repo, state_dir).code == 0
    git_repo.commit({"depots/raw.yaml": None})
    r = cli(git_repo, state_dir, "plan")
    assert r.code == 1
    assert "unknown depot 'raw'" in r.err
    assert "- depot:raw" not in r.out
    r = apply(git_repo, state_dir)
    assert r.code == 1 and "depot:raw" in phases(state_dir)


def test_plan_leaves_its_caches_written_when_it_exits(git_repo, state_dir):
    """plan writes the next process's snapshot and document cache from forked children and leaves without
    tearing down (store/writebehind.py): once it has exited, both are there and its output is whole."""
    from reconciler.engine.warm import WarmPlanner
    from reconciler.gitops.source import GitSource

    commit = git_repo.commit(repos.basic())
    r = cli(git_repo, state_dir, "plan", "--detailed-exitcode")
    assert r.code == 2, r
    assert r.out.rstrip().endswith("0 to delete."), r  # flushed before the process left
    warm = WarmPlanner(state_dir)
    assert warm.restore(GitSource(git_repo.repo, commit))  # the snapshot a child wrote
    assert warm.cache.get(str(git_repo.repo.revparse_single(f"{commit}:workspace.yaml").id)) is not None
    r = cli(git_repo, state_dir, "validate", "-o", "json")
    assert r.code == 0 and r.json["valid"] and r.json["resources"] == 4, r


def _generated(repo) -> int:
    """A bench repository (bench/gen_repo.py) with enough files for the cold load's worker; its size."""
    import importlib.util
    from pathlib import Path

    from reconciler.engine.coldload import MIN_FILES

    root = Path(__file__).resolve().parents[2]
    spec = importlib.util.spec_from_file_location("bench_gen_repo", root / "bench" / "gen_repo.py")
    gen_repo = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = gen_repo  # its dataclasses look their module up
    spec.loader.exec_module(gen_repo)
    size = MIN_FILES + 100
    gen_repo.generate(repo, size, 20)
    return size


def _commit_all(repo, message: str) -> None:
    """Commit every file of the work tree at `repo` on top of HEAD."""
    g = pygit2.Repository(str(repo))
    g.index.add_all()
    g.index.write()
    sig = pygit2.Signature("t", "t@example.com")
    g.create_commit("HEAD", sig, sig, message, g.index.write_tree(), [g.head.target])


@pytest.mark.slow
@pytest.mark.parametrize("twist", ["as generated", "a duplicate policy"])
def test_a_cold_plan_on_two_cores_equals_the_plan_on_one(tmp_path, twist):
    """A cold plan forks a worker that also works out the access diff from its guess of the plan
    (engine/access_ahead.py); with the guess right or wrong (a duplicate id: the resolver drops one), the plan
    equals the one a single process makes (RECONCILER_NO_FORK=1), access diff included."""
    import json

    repo = tmp_path / "repo"
    _generated(repo)
    if twist == "a duplicate policy":
        policy = sorted(repo.glob("teams/*/policy-*.yaml"))[0]
        (repo / "zz-copy.yaml").write_text(policy.read_text())
        _commit_all(repo, "copy")
    plans = []
    for env in ({}, {"RECONCILER_NO_FORK": "1"}):
        r = run_cli("plan", "--repo", repo, "--state-dir", tmp_path / f"state{len(plans)}", "-o", "json", env=env)
        assert r.code == (1 if twist == "a duplicate policy" else 0), r
        plan = json.loads(r.out)
        plan.pop("created_at")
        plans.append(plan)
    assert plans[0] == plans[1] and plans[0]["access"]


@pytest.mark.slow
@pytest.mark.parametrize("twist", ["as generated", "an invalid workflow"])
def test_a_cold_validate_on_two_cores_equals_the_validate_on_one(tmp_path, twist):
    """A cold validate forks a worker that also checks the policies and places what they find
    (engine/policy_ahead.py); whether the resolver takes that answer (as generated: 800 overlap warnings) or
    not (an invalid workflow makes the tables it may write unknown), every diagnostic, position included,
    equals what a single process reports (RECONCILER_NO_FORK=1)."""
    import json

    repo = tmp_path / "repo"
    _generated(repo)
    if twist == "an invalid workflow":
        flow = sorted(repo.glob("teams/*/workflow-*.yaml"))[0]
        flow.write_text(flow.read_text().replace("dag:", "dagg:"))
        _commit_all(repo, "break one")
    outs = []
    for env in ({}, {"RECONCILER_NO_FORK": "1"}):
        r = run_cli("validate", "--repo", repo, "--state-dir", tmp_path / f"state{len(outs)}", "-o", "json", env=env)
        assert r.code == (1 if twist == "an invalid workflow" else 0), r
        outs.append(json.loads(r.out))
    warnings = [d for d in outs[0]["diagnostics"] if d["severity"] == "warning" and "deny wins" in d["message"]]
    assert outs[0] == outs[1] and warnings and all(d["line"] and d["col"] for d in warnings)


def test_a_large_plan_is_memoised_with_its_access_diff(tmp_path):
    """A one-shot plan's memo is written by a detached child after the command has answered
    (store/writebehind.py, store/planmemo.py): the memo holds the whole plan, access included, and the
    next plan of the same commit and state, started at once, waits for it and answers from it."""
    import json
    import marshal

    repo, state = tmp_path / "repo", tmp_path / "state"
    size = _generated(repo)
    outs = []
    for _ in range(2):
        r = run_cli("plan", "--repo", repo, "--state-dir", state, "-o", "json")
        assert r.code == 0, r
        plan = json.loads(r.out)
        plan.pop("created_at")
        outs.append(plan)
    assert outs[0] == outs[1] and len(outs[0]["actions"]) == size and outs[0]["access"]
    [memo] = (state / "cache" / "plans").glob("*.plan")
    with open(memo, "rb") as f:
        _, body = marshal.load(f)
        access = marshal.load(f)
    assert access == outs[0]["access"] and len(body["actions"]) == size


def test_a_cold_validates_worker_writes_its_cache_share_after_the_command_and_readers_wait_for_it(tmp_path):
    """A one-shot cold load's worker writes its share of the document cache once the command no longer needs
    it, possibly after the command has exited (engine/coldload.py), holding the cache's writers lock from
    before it tells the command it is done: a reader opening the cache right away, as the next command does,
    finds every file the load parsed (when the worker is slower than this test, the reader waits for it)."""
    from reconciler.gitops.source import GitSource
    from reconciler.store.doccache import DocCache

    repo, state = tmp_path / "repo", tmp_path / "state"
    _generated(repo)
    r = run_cli("validate", "--repo", repo, "--state-dir", state, "-o", "json")
    assert r.code == 0 and r.json["valid"], r
    cache = DocCache(state)
    g = pygit2.Repository(str(repo))
    blobs = [blob for path, blob in GitSource(g, str(g.head.target)).list_files() if path.endswith(".yaml")]
    missing = [blob for blob in blobs if not cache.has(blob)]
    assert not missing, f"{len(missing)} of {len(blobs)} files not in the cache"


def test_a_second_edit_after_an_apply_diffs_against_the_applied_spec_without_opening_the_state(git_repo, state_dir):
    """Apply, edit a file and apply again, then edit it once more: the plan's field diff is against the spec of
    the second apply, found in the document cache (the validated file at the applied commit) rather than read
    from the state database, which a one-file plan would otherwise import DuckDB and open for (~0.1 s)."""
    git_repo.commit(repos.basic())
    assert apply(git_repo, state_dir).code == 0
    git_repo.commit({"workflows/daily.yaml": repos.WORKFLOW.replace("amount > 0", "amount > 1")})
    assert apply(git_repo, state_dir).code == 0
    assert cli(git_repo, state_dir, "plan", "--detailed-exitcode").code == 0  # reads (and remembers) the records
    git_repo.commit({"workflows/daily.yaml": repos.WORKFLOW.replace("amount > 0", "amount > 2")})
    r = run_cli("plan", "--repo", git_repo.path, "--state-dir", state_dir, "--detailed-exitcode", env=ENV,
                python_flags=("-X", "importtime"))
    assert r.code == 2, r
    assert "amount > 1" in r.out and "amount > 2" in r.out, r.out
    imported = {line.rsplit("|", 1)[-1].strip() for line in r.err.splitlines() if line.startswith("import time:")}
    assert "reconciler.core.planner" in imported  # the flag works
    assert "duckdb" not in imported, "the plan opened the state database"


def test_plans_after_a_cached_one_on_a_working_tree_a_bad_ref_and_no_change(git_repo, state_dir, tmp_path):
    """Once a document cache exists, `plan` forks its validation helper before it opens the repository
    (engine/operations.py make_plan). A ref that does not resolve, a plain working tree (no snapshot to build
    on) and a plan answered from its memo let it go; the output is what a plan in a fresh state dir gives."""
    from tests.conftest import write_files

    def actions(r):
        assert r.code in (0, 2), r
        return sorted((a["action"], a["id"], (a.get("resource") or {}).get("hash"),
                       json.dumps(a["changes"], sort_keys=True)) for a in r.json["actions"])

    commit = git_repo.commit(repos.basic())
    assert cli(git_repo, state_dir, "plan").code == 0  # fills the document cache and the plan's memo
    r = cli(git_repo, state_dir, "plan", "--ref", "no-such-branch")
    assert r.code == 1 and "no-such-branch" in r.err and "Traceback" not in r.err, r
    again = cli(git_repo, state_dir, "plan", "-o", "json")  # answered from the memo
    assert actions(again) == actions(run_cli("plan", "--repo", git_repo.path, "--ref", commit, "--state-dir",
                                             tmp_path / "fresh-git", "-o", "json"))

    plain = tmp_path / "plain"
    write_files(plain, repos.basic())
    state = tmp_path / "plain-state"
    assert run_cli("plan", "--repo", plain, "--state-dir", state).code == 0
    write_files(plain, {"workflows/daily.yaml": repos.WORKFLOW.replace("amount > 0", "amount > 5")})
    edited = run_cli("plan", "--repo", plain, "--state-dir", state, "-o", "json")
    assert actions(edited) == actions(run_cli("plan", "--repo", plain, "--state-dir", tmp_path / "fresh", "-o", "json"))
    assert any("amount > 5" in json.dumps(a["resource"]["spec"]) for a in edited.json["actions"] if "resource" in a)


def _workflows(n: int, threshold: int = 0) -> dict:
    """n copies of the basic workflow, each writing lake tables of its own."""
    return {f"workflows/w{i}.yaml": repos.WORKFLOW.replace("name: daily", f"name: w{i}")
            .replace("lake://payments/valid", f"lake://payments/out_{i}").replace("amount > 0", f"amount > {threshold}")
            for i in range(n)}


def test_a_snapshot_saved_after_a_wide_update_holds_every_resource(git_repo, state_dir, tmp_path):
    """A plan restores the last snapshot and updates it to its commit; once 64 files or more changed since that
    snapshot, it saves the updated one. That snapshot must hold every resource, also the ones nothing looked
    at: it held only the changed files' (a restored resolver exported what it had read), and the next plan
    failed with an internal error (KeyError) or, worse, would have planned without the others."""
    git_repo.commit(repos.basic(**_workflows(70)))
    assert cli(git_repo, state_dir, "plan").code == 0  # cold: saves the first snapshot
    git_repo.commit(_workflows(70, threshold=1))  # 70 files edited: the snapshot updated, then saved again
    wide = cli(git_repo, state_dir, "plan", "-o", "json")
    assert wide.code == 0 and len(wide.json["actions"]) == 74, wide  # nothing applied: every resource a create
    git_repo.commit({"workflows/w0.yaml": _workflows(1, threshold=2)["workflows/w0.yaml"]})
    after = cli(git_repo, state_dir, "plan", "-o", "json")
    cold = cli(git_repo, tmp_path / "cold", "plan", "-o", "json")
    assert after.code == 0 and cold.code == 0, after
    summary = lambda r: sorted((a["action"], a["id"]) for a in r.json["actions"])  # noqa: E731
    assert summary(after) == summary(cold) and len(summary(after)) == 74
