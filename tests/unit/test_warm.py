"""The warm planner must plan exactly what a cold plan would, while reading only what changed."""
import pytest

from reconciler.core.planner import make_plan
from reconciler.engine.operations import Target, load_desired
from reconciler.engine.warm import WarmPlanner
from reconciler.gitops.source import GitSource
from reconciler.core.record import READY, Record
from tests.cli import repos
from tests.conftest import GitRepo


def cold_plan(repo: GitRepo, commit: str, state, records):
    desired = load_desired(Target(str(repo.path), commit, state), records)
    return make_plan(desired.resolution, records, commit=commit)


def applied(plan) -> dict:
    """Records as if the plan had been applied."""
    return {a.id: Record(id=a.id, type=a.type, name=a.name, workspace=a.workspace, spec=a.resource.spec,
                         hash=a.resource.hash, phase=READY, file=a.file, depends_on=sorted(a.resource.depends_on))
            for a in plan.actions if a.resource is not None}


def summary(plan):
    return sorted((a.action, a.id, a.reason, tuple((c.path, str(c.before), str(c.after)) for c in a.changes))
                  for a in plan.actions)


@pytest.fixture
def repo(tmp_path):
    g = GitRepo(tmp_path / "repo")
    g.commit(repos.basic(**repos.depots(3)))
    return g


def test_a_spec_edit_is_planned_incrementally_and_equals_the_cold_plan(repo, tmp_path):
    state = tmp_path / "state"
    warm = WarmPlanner(state)
    src = GitSource(repo.repo, str(repo.repo.head.target))
    first = warm.plan(src, {}, serial=0)
    records = applied(first)
    edits = [
        {"workflows/daily.yaml": repos.WORKFLOW.replace("amount > 0", "amount > 1")},
        {"policies/mask.yaml": repos.POLICY.replace("last4", "redact")},
        {"depots/extra-0.yaml": repos.DEPOT.replace("name: raw", "name: extra-0").replace("Raw card", "Some")},
    ]
    for files in edits:
        commit = repo.commit(files)
        src = GitSource(repo.repo, commit)
        before = warm.incremental
        got = warm.plan(src, records, serial=1)
        assert warm.incremental == before + 1, files
        assert summary(got) == summary(cold_plan(repo, commit, state, records))
        assert len(got.changes) == 1
        records.update(applied(got))
    assert warm.full_resolves == 1


@pytest.mark.parametrize("files", [
    {"depots/extra-9.yaml": repos.DEPOT.replace("name: raw", "name: extra-9")},           # a new id
    {"depots/extra-0.yaml": None},                                                            # an id goes
    {"depots/raw.yaml": repos.DEPOT.replace("name: raw", "name: raw2")},                     # renamed: readers break
    {"workflows/daily.yaml": repos.WORKFLOW.replace("lake://payments/valid", "lake://payments/v2")},  # writes change
    {"depots/extra-1.yaml": "version: v1\ntype: depot\nname: [\n"},                         # a file breaks
    {".reconcilerignore": "depots/\n"},                                                      # ignore rules
])
def test_wider_changes_fall_back_to_a_full_resolve_with_the_same_result(repo, tmp_path, files):
    state = tmp_path / "state"
    warm = WarmPlanner(state)
    first = warm.plan(GitSource(repo.repo, str(repo.repo.head.target)), {}, serial=0)
    records = applied(first)
    commit = repo.commit(files)
    got = warm.plan(GitSource(repo.repo, commit), records, serial=1)
    assert warm.full_resolves == 2 and warm.incremental == 0
    assert summary(got) == summary(cold_plan(repo, commit, state, records))


def test_two_documents_with_one_id_in_a_changed_file_are_not_missed(repo, tmp_path):
    warm = WarmPlanner(tmp_path / "state")
    first = warm.plan(GitSource(repo.repo, str(repo.repo.head.target)), {}, serial=0)
    records = applied(first)
    doubled = repos.DEPOT.replace("name: raw", "name: extra-0")
    commit = repo.commit({"depots/extra-0.yaml": doubled + "---\n" + doubled})
    got = warm.plan(GitSource(repo.repo, commit), records, serial=1)
    assert warm.incremental == 0
    assert any("duplicate resource depot:extra-0" in d["message"] for d in got.diagnostics)
