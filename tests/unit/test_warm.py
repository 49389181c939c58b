"""The warm planner must plan exactly what a cold plan would, while reading only what changed."""
import dataclasses
import json
import random
import sqlite3
import uuid

import pytest

from reconciler.core.planner import make_plan
from reconciler.engine.operations import Target, load_desired
from reconciler.engine.warm import WarmPlanner
from reconciler.gitops.source import GitSource
from reconciler.core.record import FAILED, READY, Record
from tests.cli import repos
from tests.conftest import GitRepo


def cold_plan(repo: GitRepo, commit: str, state, records):
    """The plan from nothing: a state dir of its own, so no cache or snapshot of `state` is used."""
    cold = state.parent / f"cold-{uuid.uuid4().hex[:8]}"
    desired = load_desired(Target(str(repo.path), commit, cold), records)
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


def resolution_facts(resolution) -> tuple:
    """What a plan and everything after it read of a resolution."""
    return (sorted((r.id, r.hash, r.file, r.doc_index, r.line, tuple(sorted(r.depends_on)), r.prune, r.bundle,
                    json.dumps(r.spec, sort_keys=True)) for r in resolution.resources.values()),
            list(resolution.order), sorted(d.render() for d in resolution.diagnostics),
            sorted(resolution.invalid_ids), sorted(resolution.broken_files), sorted(resolution.member_files))


EDITS = [
    lambda n: {"workflows/daily.yaml": repos.WORKFLOW.replace("amount > 0", f"amount > {n}")},
    lambda n: {"policies/mask.yaml": repos.POLICY.replace("last4", "redact" if n % 2 else "hash")},
    lambda n: {f"depots/extra-{n % 3}.yaml": repos.DEPOT.replace("name: raw", f"name: extra-{n % 3}")
               .replace("Raw card", f"Edit {n}")},
    lambda n: {f"depots/new-{n}.yaml": repos.DEPOT.replace("name: raw", f"name: new-{n}")},  # a new id
    lambda n: {"depots/extra-1.yaml": "version: v1\ntype: depot\nname: [\n" if n % 2 else
               repos.DEPOT.replace("name: raw", "name: extra-1")},  # breaks, then mends
    lambda n: {"README.md": f"notes {n}\n"},  # nothing the loader reads
    lambda n: {"workflows/daily.yaml": repos.WORKFLOW.replace("lake://payments/valid", f"lake://payments/v{n}")},
]


@pytest.mark.parametrize("seed", range(4))
def test_a_fresh_process_restores_the_snapshot_and_plans_what_a_cold_plan_does(repo, tmp_path, seed):
    """Every step is a new WarmPlanner on the same state dir (a new `reconciler plan` process): it restores
    the saved snapshot, updates it to the new commit and must agree with a cold resolve in everything."""
    state = tmp_path / "state"
    rng = random.Random(seed)
    first = WarmPlanner(state)
    src = GitSource(repo.repo, str(repo.repo.head.target))
    records = applied(first.plan(src, {}, serial=0))
    assert first.save(force=True)
    restored_and_incremental = 0
    for n in range(12):
        commit = repo.commit(rng.choice(EDITS)(n))
        warm = WarmPlanner(state)
        assert warm.restore(GitSource(repo.repo, commit))
        got = warm.plan(GitSource(repo.repo, commit), records, serial=1)
        restored_and_incremental += warm.incremental
        cold = cold_plan(repo, commit, state, records)
        assert summary(got) == summary(cold)
        cold_res = load_desired(Target(str(repo.path), commit, state.parent / f"c{n}"), records).resolution
        assert resolution_facts(warm.resolver.out) == resolution_facts(cold_res)
        warm.save()
        if rng.random() < 0.5:  # applied: the next step plans against the new records
            records = {**records, **applied(got)}
    assert restored_and_incremental > 0  # the point: most steps did not resolve everything


def test_a_snapshot_whose_cached_validations_are_gone_falls_back_to_a_full_resolve(repo, tmp_path):
    state = tmp_path / "state"
    first = WarmPlanner(state)
    records = applied(first.plan(GitSource(repo.repo, str(repo.repo.head.target)), {}, serial=0))
    first.save(force=True)
    conn = sqlite3.connect(state / "cache" / "documents.sqlite")
    conn.execute("DELETE FROM validated")
    conn.commit()
    conn.close()
    commit = repo.commit({"workflows/daily.yaml": repos.WORKFLOW.replace("lake://payments/valid", "lake://payments/x")})
    warm = WarmPlanner(state)
    assert warm.restore(GitSource(repo.repo, commit))
    got = warm.plan(GitSource(repo.repo, commit), records, serial=1)
    assert warm.full_resolves == 1
    assert summary(got) == summary(cold_plan(repo, commit, state, records))


def test_a_snapshot_of_a_commit_no_longer_in_the_repository_is_not_used(tmp_path):
    state = tmp_path / "state"
    one = GitRepo(tmp_path / "one")
    one.commit(repos.basic())
    warm = WarmPlanner(state)
    warm.plan(GitSource(one.repo, str(one.repo.head.target)), {}, serial=0)
    warm.save(force=True)
    two = GitRepo(tmp_path / "two")  # another repository, same state dir: another snapshot key
    two.commit(repos.basic())
    assert not WarmPlanner(state).restore(GitSource(two.repo, str(two.repo.head.target)))


@pytest.mark.parametrize("seed", range(3))
def test_a_compact_daemon_planner_plans_what_a_cold_plan_does(repo, tmp_path, seed):
    """The daemon's planner keeps no parsed documents or specs after a full resolve (they are read back from
    the document cache when needed); across pushes it must still agree with a cold resolve."""
    state = tmp_path / "state"
    rng = random.Random(100 + seed)
    warm = WarmPlanner(state, compact=True)
    records = applied(warm.plan(GitSource(repo.repo, str(repo.repo.head.target)), {}, serial=0))
    assert warm.last_load is None and not warm.cache._docs  # nothing parsed kept
    for n in range(10):
        commit = repo.commit(rng.choice(EDITS)(n))
        got = warm.plan(GitSource(repo.repo, commit), records, serial=1)
        assert summary(got) == summary(cold_plan(repo, commit, state, records))
        cold_res = load_desired(Target(str(repo.path), commit, state.parent / f"c{n}"), records).resolution
        assert resolution_facts(warm.resolver.out) == resolution_facts(cold_res)
        if rng.random() < 0.5:
            records = {**records, **applied(got)}
    assert warm.incremental > 0


def test_an_isolated_planner_resolves_in_a_child_process_and_plans_what_a_cold_plan_does(repo, tmp_path):
    """The daemon resolves everything in a child process (its memory never holds the parsed repository) and
    restores the snapshot the child saved."""
    state = tmp_path / "state"
    warm = WarmPlanner(state, compact=True, isolate=True)
    head = GitSource(repo.repo, str(repo.repo.head.target))
    assert not warm.restore(head)  # as the daemon starts: no snapshot yet (and no cache file)
    records = applied(warm.plan(head, {}, serial=0))
    assert warm.restored and warm.full_resolves == 1 and not warm.cache._docs
    edits = [EDITS[0](1), EDITS[3](2), EDITS[4](1), EDITS[4](2), EDITS[1](3)]  # incremental, new id, breaks, mends
    for n, files in enumerate(edits):
        commit = repo.commit(files)
        got = warm.plan(GitSource(repo.repo, commit), records, serial=1)
        assert summary(got) == summary(cold_plan(repo, commit, state, records)), files
        cold_res = load_desired(Target(str(repo.path), commit, state.parent / f"c{n}"), records).resolution
        assert resolution_facts(warm.resolver.out) == resolution_facts(cold_res)
        records = {**records, **applied(got)}
    assert warm.full_resolves >= 3 and warm.incremental >= 1


def test_letting_go_of_the_specs_an_apply_read_keeps_every_plan_the_same(repo, tmp_path):
    """An apply reads every resource's spec, which a restored resource then keeps; the daemon lets them go when
    idle (WarmPlanner.let_go). Afterwards no spec is in memory and plans still agree with a cold plan."""
    state = tmp_path / "state"
    warm = WarmPlanner(state, compact=True, isolate=True)
    head = str(repo.repo.head.target)
    records = applied(warm.plan(GitSource(repo.repo, head), {}, serial=0))  # the apply reads every spec
    assert all(r.spec_in_memory for r in warm.resolver.out.resources.values())
    warm.let_go()
    assert not any(r.spec_in_memory for r in warm.resolver.out.resources.values())
    assert summary(warm.plan(GitSource(repo.repo, head), records, serial=1)) == []  # nothing to do, as before
    commit = repo.commit(EDITS[0](1))
    got = warm.plan(GitSource(repo.repo, commit), records, serial=1)
    assert summary(got) == summary(cold_plan(repo, commit, state, records)) != []


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs fork")
@pytest.mark.parametrize("seed", range(2))
def test_a_helper_validates_the_changed_files_and_the_plan_is_the_same(repo, tmp_path, monkeypatch, seed):
    """A fresh `plan` process forks a helper that validates the changed files while the snapshot is restored
    (engine/coldload.py Helper): this process never validates them itself, and plans what a cold plan does."""
    import os

    from reconciler.core import resolve
    from reconciler.engine import coldload
    from reconciler.store import writebehind

    monkeypatch.setattr(writebehind, "_one_shot", True)  # as `reconciler plan` runs
    monkeypatch.setattr(writebehind, "can_fork", lambda: True)  # also when an earlier test left a thread
    monkeypatch.setattr(coldload, "workers_available", lambda: 2)
    here, real_validate = os.getpid(), resolve.validate

    def validate_elsewhere(*args, **kwargs):  # the helper (a child) validates; this process must not
        assert os.getpid() != here, "this process validated a changed file itself"
        return real_validate(*args, **kwargs)

    state = tmp_path / "state"
    rng = random.Random(seed)
    first = WarmPlanner(state)
    records = applied(first.plan(GitSource(repo.repo, str(repo.repo.head.target)), {}, serial=0))
    assert first.save(force=True)
    writebehind.settle()  # a one-shot process writes its snapshot in a child: wait for it, as the next one would
    helped = 0
    for n in range(6):
        commit = repo.commit(rng.choice(EDITS[:5])(n))  # edits the loader reads
        source = GitSource(repo.repo, commit)
        warm = WarmPlanner(state)
        assert warm.restore(source)
        warm.helper = coldload.Helper.start(source, state)
        assert warm.helper is not None
        with monkeypatch.context() as m:
            m.setattr(resolve, "validate", validate_elsewhere)
            got = warm.plan(source, records, serial=1)
        helped += warm.helper is None and warm.incremental
        assert summary(got) == summary(cold_plan(repo, commit, state, records))
        cold_res = load_desired(Target(str(repo.path), commit, state.parent / f"c{n}"), records).resolution
        assert resolution_facts(warm.resolver.out) == resolution_facts(cold_res)
        warm.save()
        writebehind.settle()
    assert helped  # the helper was handed changed files, not only let go


def test_a_helper_is_only_started_where_it_can_help(repo, tmp_path, monkeypatch):
    from reconciler.engine import coldload
    from reconciler.store import writebehind

    source = GitSource(repo.repo, str(repo.repo.head.target))
    state = tmp_path / "state"
    monkeypatch.setattr(coldload, "workers_available", lambda: 2)
    monkeypatch.setattr(writebehind, "can_fork", lambda: True)
    assert coldload.Helper.start(source, state) is None  # not a one-shot command (a daemon, a library caller)
    monkeypatch.setattr(writebehind, "_one_shot", True)
    assert coldload.Helper.start(source, state) is None  # no document cache yet: a cold load forks its own
    WarmPlanner(state).plan(source, {}, serial=0)
    monkeypatch.setattr(coldload, "workers_available", lambda: 1)
    assert coldload.Helper.start(source, state) is None  # one CPU
    monkeypatch.setattr(coldload, "workers_available", lambda: 2)
    helper = coldload.Helper.start(source, state)
    assert helper is not None
    pid = helper.pid
    helper.dismiss()  # let go while it may still be importing: killed and reaped
    with pytest.raises(ChildProcessError):
        __import__("os").waitpid(pid, 0)
    writebehind.settle()


def test_a_helper_forked_before_the_repository_is_opened_hands_back_before_it_writes_the_cache(repo, tmp_path,
                                                                                              monkeypatch):
    """`plan` forks its helper before it opens the repository (Helper.start(None, ...)); the helper hands its
    results back as soon as they are in its output file and writes them to the document cache after, holding
    the cache's writers lock: the parent takes them at once, and the next command finds them stored."""
    import os

    from reconciler.core.loader import select_files
    from reconciler.engine import coldload
    from reconciler.store import writebehind
    from reconciler.store.doccache import DocCache

    monkeypatch.setattr(writebehind, "_one_shot", True)
    monkeypatch.setattr(writebehind, "can_fork", lambda: True)
    monkeypatch.setattr(coldload, "workers_available", lambda: 2)
    state = tmp_path / "state"
    WarmPlanner(state).plan(GitSource(repo.repo, str(repo.repo.head.target)), {}, serial=0)  # a cache to build on
    writebehind.settle()
    commit = repo.commit({"workflows/daily.yaml": repos.WORKFLOW.replace("amount > 0", "amount > 7")})
    source = GitSource(repo.repo, commit)
    changed = [(p, b) for p, b in select_files(source) if p == "workflows/daily.yaml"]
    assert changed and not DocCache(state).has(changed[0][1])

    helper = coldload.Helper.start(None, state)  # before the source is known
    assert helper is not None
    pid = helper.pid
    cache = DocCache(state)
    helper.validate(cache, changed, source)
    blob = changed[0][1]
    assert cache.get(blob) is not None and cache.get(blob).documents  # taken from the helper, not parsed here
    os.kill(pid, 0)  # the helper may still be writing: it was not waited for (no ChildProcessError)
    writebehind.wait_until_written(state / "cache")  # as the next command's reader waits
    assert DocCache(state).has(blob)  # written by the helper after it handed back
    helper.dismiss()  # used: nothing left to let go


@pytest.mark.parametrize("seed", range(4))
def test_plans_that_look_only_at_what_moved_equal_plans_that_look_at_everything(tmp_path, seed):
    """With the records' changes reported (as the daemon's LiveRecords does), a plan after an incremental update
    compares only the resources the last plan found out of sync, the ones the update changed and the ones whose
    records were written since; it must equal the plan that compares every resource."""
    g = GitRepo(tmp_path / "repo")
    g.commit(repos.basic(**repos.depots(40)))
    warm = WarmPlanner(tmp_path / "state")
    rng = random.Random(seed)
    src = GitSource(g.repo, str(g.repo.head.target))
    records: dict = {}
    serial, written = 0, {}  # serial -> ids written at it

    def changed_since(s):
        return {rid for at, ids in written.items() if at > s for rid in ids}

    last = warm.plan(src, records, serial=serial, records_changed=changed_since)
    for n in range(24):
        step = rng.choice(["edit", "edit", "apply", "apply", "fail", "same"])
        if step == "edit":
            src = GitSource(g.repo, g.commit(rng.choice(EDITS[:3] + EDITS[5:6])(n)))
        elif step == "apply":  # what the last plan changed, recorded as applied
            ids = {a.id for a in last.actions if a.resource is not None}
            records.update({rid: rec for rid, rec in applied(last).items() if rid in ids})
            serial += 1
            written[serial] = ids
        elif step == "fail" and records:  # a record written by something else: a failed run, a drift check
            rid = rng.choice(sorted(records))
            records[rid] = dataclasses.replace(records[rid], phase=FAILED, message="run failed")
            serial += 1
            written[serial] = {rid}
        last = warm.plan(src, records, serial=serial, records_changed=changed_since)
        whole = make_plan(warm.resolver.out, records, commit=src.commit, serial=serial)
        assert summary(last) == summary(whole), (n, step)
    assert warm.narrowed > 0 and warm.full_resolves == 1


def test_without_the_records_changes_every_resource_is_compared(repo, tmp_path):
    warm = WarmPlanner(tmp_path / "state")
    records = applied(warm.plan(GitSource(repo.repo, str(repo.repo.head.target)), {}, serial=0))
    commit = repo.commit(EDITS[0](1))
    records["depot:raw"] = dataclasses.replace(records["depot:raw"], phase=FAILED)  # written, but not reported
    got = warm.plan(GitSource(repo.repo, commit), records, serial=1)
    assert warm.narrowed == 0
    assert {a.id for a in got.actions} == {"depot:raw", "workflow:payments/daily"}
