"""The status branch writer, on real repositories: a work tree, bare mirrors and a bare file:// remote."""
from __future__ import annotations

import random
from pathlib import Path

import pygit2
import pytest
import yaml
from pygit2.enums import CheckoutStrategy, FileMode

from reconciler.core.diagnostics import UserError
from reconciler.core.record import Record
from reconciler.gitops.status import StatusBranch, preview_path, status_files

SIG = pygit2.Signature("Test", "test@example.com")
SRC = "0123456789abcdef0123456789abcdef01234567"
STATUS_REF = "refs/heads/reconciler/status"


def commit_on(repo: pygit2.Repository, files: dict[str, str], branch: str = "main") -> str:
    ref = f"refs/heads/{branch}"
    parent = repo.references[ref].peel(pygit2.Commit) if ref in repo.references else None
    index = pygit2.Index()
    if parent is not None:
        index.read_tree(parent.tree)
    for path, text in files.items():
        index.add(pygit2.IndexEntry(path, repo.create_blob(text.encode()), FileMode.BLOB))
    return str(repo.create_commit(ref, SIG, SIG, "change", index.write_tree(repo), [parent.id] if parent else []))


def rec(rid: str, phase: str = "Ready", message: str = "", commit: str | None = SRC) -> Record:
    type_, rest = rid.split(":", 1)
    workspace, name = rest.split("/") if "/" in rest else (None, rest)
    return Record(id=rid, type=type_, name=name, workspace=workspace, spec={"x": 1}, hash="h-" + name,
                  phase=phase, message=message, commit=commit)


RECORDS = [
    rec("workspace:payments"),
    rec("depot:public/warehouse", "Failed", "cannot connect | port 5432 refused"),
    rec("workflow:payments/daily", "Applying"),
]
RUNS = {"workflow:payments/daily": {"run_id": "run-42", "status": "succeeded", "ended_at": "2024-01-01T00:00:00"}}


def tree_paths(repo: pygit2.Repository, ref: str = STATUS_REF) -> set[str]:
    return set(StatusBranch(repo, ref.removeprefix("refs/heads/")).files())


@pytest.fixture
def work_repo(tmp_path):
    repo = pygit2.init_repository(str(tmp_path / "work"), initial_head="main")
    commit_on(repo, {"a.yaml": "a: 1\n"})
    repo.checkout_head(strategy=CheckoutStrategy.FORCE)
    return repo


@pytest.fixture
def remote(tmp_path):
    """A bare remote with `main`, and its file:// URL."""
    repo = pygit2.init_repository(str(tmp_path / "remote.git"), bare=True, initial_head="main")
    commit_on(repo, {"a.yaml": "a: 1\n"})
    return repo, f"file://{tmp_path / 'remote.git'}"


def clone(url: str, dest) -> pygit2.Repository:
    return pygit2.clone_repository(url, str(dest), bare=True)


# ---- writing -----------------------------------------------------------------------------

def test_first_write_is_an_orphan_branch_and_leaves_main_head_index_and_work_tree_alone(work_repo):
    workdir = work_repo.workdir
    index_before = open(work_repo.path + "index", "rb").read()
    main_before = work_repo.references["refs/heads/main"].target
    sb = StatusBranch(work_repo)
    commit = sb.write(status_files(RECORDS, RUNS, SRC), f"Status at {SRC}")
    assert commit is not None
    tip = work_repo[commit]
    assert tip.parents == []
    assert tree_paths(work_repo) == {"STATUS.md", "status/workspace/_/payments.yaml",
                                     "status/depot/public/warehouse.yaml", "status/workflow/payments/daily.yaml"}
    assert work_repo.references["refs/heads/main"].target == main_before
    assert work_repo.head.name == "refs/heads/main"
    assert open(work_repo.path + "index", "rb").read() == index_before
    assert sorted(p.name for p in Path(workdir).iterdir()) == [".git", "a.yaml"]


def test_identical_write_makes_no_commit_and_a_change_makes_exactly_one(work_repo):
    sb = StatusBranch(work_repo)
    first = sb.write(status_files(RECORDS, RUNS, SRC), f"Status at {SRC}")
    assert sb.write(status_files(list(reversed(RECORDS)), RUNS, SRC), f"Status at {SRC}") is None
    assert str(sb.tip().id) == first
    changed = [rec("workspace:payments", "Failed", "boom")] + RECORDS[1:]
    new_src = "f" * 40
    second = sb.write(status_files(changed, RUNS, new_src), f"Status at {new_src}")
    tip = work_repo[second]
    assert [str(p) for p in tip.parent_ids] == [first]
    assert new_src in tip.message
    doc = yaml.load(sb.read("status/workspace/_/payments.yaml"), Loader=yaml.CSafeLoader)
    assert doc["phase"] == "Failed" and doc["health"] == "Degraded" and doc["message"] == "boom"


def test_removed_resource_loses_its_file_and_plans_survive(work_repo):
    sb = StatusBranch(work_repo)
    sb.write(status_files(RECORDS, RUNS, SRC), "s1")
    assert sb.write_preview("feature/x", "plan one\n", SRC) is not None
    assert sb.read("plans/feature/x.md") == b"plan one\n"
    assert sb.write_preview("feature/x", "plan one\n", SRC) is None
    preview = sb.write_preview("feature/x", "plan two\n", "e" * 40)
    assert "feature/x" in work_repo[preview].message and "e" * 40 in work_repo[preview].message
    sb.write(status_files(RECORDS[:2], RUNS, SRC), "s2")
    paths = tree_paths(work_repo)
    assert "status/workflow/payments/daily.yaml" not in paths
    assert "status/workspace/_/payments.yaml" in paths
    assert sb.read("plans/feature/x.md") == b"plan two\n"
    assert b"workflow:payments/daily" not in sb.read("STATUS.md")


def test_preview_paths_are_sanitised():
    assert preview_path("feature/x") == "plans/feature/x.md"
    assert preview_path("main") == "plans/main.md"
    assert preview_path("../evil/.git") == "plans/_../evil/_.git.md"
    assert preview_path("a b:c") == "plans/a-b-c.md"


def test_a_file_where_a_folder_goes_gives_way(work_repo):
    sb = StatusBranch(work_repo)
    sb.write({"plans/a.md": b"file\n"}, "file")
    sb.write({"plans/a.md/b.md": b"nested\n"}, "nested")
    assert sb.files() == {"plans/a.md/b.md": b"nested\n"}
    sb.write({"plans/a.md": b"file again\n"}, "file again")
    assert sb.files() == {"plans/a.md": b"file again\n"}


# ---- rendering ---------------------------------------------------------------------------

def test_status_markdown_lists_resources_health_errors_held_and_drift():
    errors = [{"file": "payments/depot.yaml", "line": 3, "col": 5, "message": "unknown field 'hots'"}]
    files = status_files(RECORDS, RUNS, SRC, errors=errors, held="would delete 12 resources (max_prune 10)",
                         drift={"depot:public/warehouse": "table orders missing"})
    md = files["STATUS.md"].decode()
    assert SRC in md
    assert "| `workspace:payments` | Ready | Healthy |" in md
    assert "| `depot:public/warehouse` | Failed | Degraded | cannot connect \\| port 5432 refused |" in md
    assert "| `workflow:payments/daily` | Applying | Progressing |" in md
    assert "run-42 succeeded" in md
    assert "**Held:** would delete 12 resources (max_prune 10)" in md
    assert "payments/depot.yaml:3:5: unknown field 'hots'" in md
    assert "## Drift" in md and "table orders missing" in md
    assert f"`{SRC[:12]}`" in md
    doc = yaml.load(files["status/workflow/payments/daily.yaml"], Loader=yaml.CSafeLoader)
    assert doc == {"id": "workflow:payments/daily", "type": "workflow", "name": "daily", "workspace": "payments",
                   "phase": "Applying", "health": "Progressing", "message": "", "applied_commit": SRC,
                   "spec_hash": "h-daily", "last_run": RUNS["workflow:payments/daily"]}
    assert "Held" not in status_files(RECORDS, RUNS, SRC)["STATUS.md"].decode()


def test_rendering_is_deterministic_and_messages_are_cut():
    long = rec("workspace:long", "Blocked", "x" * 500 + "\nsecond line")
    shuffled = RECORDS + [long]
    random.Random(7).shuffle(shuffled)
    assert status_files(RECORDS + [long], RUNS, SRC) == status_files(shuffled, dict(RUNS), SRC)
    row = next(line for line in status_files([long], None, SRC)["STATUS.md"].decode().splitlines()
               if "workspace:long" in line)
    assert len(row) < 220 and "…" in row and "second line" not in row


# ---- pushing -----------------------------------------------------------------------------

def test_push_to_a_bare_remote(remote, tmp_path):
    remote_repo, url = remote
    mirror = clone(url, tmp_path / "mirror.git")
    sb = StatusBranch(mirror)
    assert sb.push(url) is False  # nothing written yet
    commit = sb.write(status_files(RECORDS, RUNS, SRC), f"Status at {SRC}")
    assert sb.push(url) is True
    assert str(remote_repo.references[STATUS_REF].target) == commit
    assert str(remote_repo.references["refs/heads/main"].target) == str(mirror.references["refs/heads/main"].target)
    assert sb.push(url) is True  # already there


def test_push_after_someone_else_moved_the_branch_rebases_on_top(remote, tmp_path):
    remote_repo, url = remote
    ours, theirs = clone(url, tmp_path / "ours.git"), clone(url, tmp_path / "theirs.git")
    mine = StatusBranch(ours)
    mine.write(status_files(RECORDS, RUNS, SRC), "Status at one")
    assert mine.push(url)
    other = StatusBranch(theirs)
    other.write(status_files(RECORDS, RUNS, SRC), "Status at one")  # the same content, orphan of its own
    other.write_preview("feature/y", "their plan\n", SRC)
    assert other.push(url)
    changed = RECORDS[:2]
    mine.write(status_files(changed, RUNS, "b" * 40), f"Status at {'b' * 40}")
    assert mine.push(url)
    tip = remote_repo.references[STATUS_REF].peel(pygit2.Commit)
    remote_files = StatusBranch(remote_repo).files()
    assert remote_files["plans/feature/y.md"] == b"their plan\n"
    assert "status/workflow/payments/daily.yaml" not in remote_files
    assert remote_files["STATUS.md"] == status_files(changed, RUNS, "b" * 40)["STATUS.md"]
    assert tip.message == f"Status at {'b' * 40}"
    assert remote_repo.descendant_of(tip.id, theirs.references[STATUS_REF].target)
    assert ours.references[STATUS_REF].target == tip.id


def test_a_restarted_writer_replays_what_its_branch_changed(remote, tmp_path):
    remote_repo, url = remote
    ours, theirs = clone(url, tmp_path / "ours.git"), clone(url, tmp_path / "theirs.git")
    StatusBranch(theirs).write({"STATUS.md": b"theirs\n", "plans/p.md": b"p\n"}, "theirs")
    assert StatusBranch(theirs).push(url)
    StatusBranch(ours).write({"STATUS.md": b"ours\n", "status/a/_/b.yaml": b"b\n"}, "ours")
    restarted = StatusBranch(ours)  # nothing remembered: the branch's own changes are replayed
    assert restarted.push(url)
    assert StatusBranch(remote_repo).files() == {"STATUS.md": b"ours\n", "plans/p.md": b"p\n",
                                                 "status/a/_/b.yaml": b"b\n"}


def test_unreachable_remote_is_a_user_error_without_credentials(work_repo):
    sb = StatusBranch(work_repo)
    sb.write({"STATUS.md": b"x\n"}, "x")
    with pytest.raises(UserError) as info:
        sb.push("https://bot:s3cret-token@127.0.0.1:1/data/platform.git", attempts=1)
    assert "s3cret" not in info.value.message and "127.0.0.1" in info.value.message
    with pytest.raises(UserError):
        sb.push(f"file://{work_repo.workdir}missing.git")


def test_works_on_a_bare_mirror(remote, tmp_path):
    remote_repo, url = remote
    sb = StatusBranch(remote_repo, "ops/status")
    assert sb.write(status_files(RECORDS, None, SRC), "s") is not None
    assert remote_repo.head.name == "refs/heads/main"
    assert sb.write(status_files(RECORDS, None, SRC), "s") is None
    assert "status/depot/public/warehouse.yaml" in sb.files()


def test_invalid_branch_name_is_a_user_error(work_repo):
    with pytest.raises(UserError):
        StatusBranch(work_repo, "bad..name")


def test_incremental_tree_equals_a_tree_built_from_scratch(tmp_path):
    """Only changed folders are rebuilt; the result must be the very tree a full index would give."""
    import random

    from pygit2.enums import FileMode

    from reconciler.gitops.status import _build_tree, _flatten

    repo = pygit2.init_repository(str(tmp_path / "r.git"), bare=True)

    def full(flat):
        index = pygit2.Index()
        for path, (oid, mode) in flat.items():
            index.add(pygit2.IndexEntry(path, oid, mode))
        return index.write_tree(repo)

    rnd = random.Random(3)
    names = ["a", "b", "c", "d/e", "d/f", "d/g/h", "x/y/z", "x/w"]
    flat = {n: (repo.create_blob(n.encode()), FileMode.BLOB) for n in names}
    tree = repo[full(flat)]
    for step in range(60):
        new = dict(flat)
        for _ in range(rnd.randint(1, 4)):
            path = rnd.choice(names + ["d", "x/y", "n/m/o", "b/c", f"new{step}"])
            if path in new and rnd.random() < 0.4:
                del new[path]
            else:  # a file where a folder was (or the reverse) replaces it, as _place does
                for p in [p for p in new if p.startswith(path + "/") or path.startswith(p + "/")]:
                    del new[p]
                new[path] = (repo.create_blob(f"{path}{step}".encode()), FileMode.BLOB)
        changes = {p: new.get(p) for p in set(flat) | set(new) if flat.get(p) != new.get(p)}
        got = _build_tree(repo, tree, changes)
        assert got == full(new), (step, changes)
        assert _flatten(repo[got]) == new
        flat, tree = new, repo[got]
