"""The cold load's worker checks the policies ahead (engine/policy_ahead.py); the resolver takes its findings and
positions only when they were worked out on the facts it holds, and otherwise checks them itself."""
from __future__ import annotations

import os

import pytest

from reconciler.core.loader import load
from reconciler.core.locate import YamlLocator
from reconciler.core.policy_checks import DatasetUniverse, check_policies
from reconciler.core.resolve import Resolver, validate
from reconciler.engine import coldload
from reconciler.engine.policy_ahead import PolicyAhead
from reconciler.gitops.source import WorkTreeSource
from reconciler.store.doccache import DocCache
from tests.conftest import unreadable_in_children

WORKFLOW = """version: v1
type: workflow
name: daily
workspace: payments
workflow:
  dag:
    - name: clean
      stack: sql
      spec:
        steps: [{name: v, sql: "SELECT 1 AS id"}]
        outputs: [{from: v, dataset: "lake://payments/valid"}]
"""
WORKSPACE = "version: v1\ntype: workspace\nname: payments\n"
ALLOW = """version: v1
type: policy
name: analysts-read
policy:
  subjects: {groups: [analysts]}
  datasets: ["lake://payments/*"]
  access: allow
"""
DENY = """version: v1
type: policy
name: no-analysts
# a comment, so that the position is not just the document's first lines
policy:
  subjects:
    groups: [analysts]
  datasets: ["lake://payments/valid"]
  access: deny
"""
BAD = ALLOW.replace("analysts-read", "typo").replace("lake://payments/*", "lake://paymnts/*")
FILES = {"a-workspace.yaml": WORKSPACE, "b-flow.yaml": WORKFLOW, "c-allow.yaml": ALLOW, "d-deny.yaml": DENY,
         "e-bad.yaml": BAD}


def source_with(tmp_path, files):
    tmp_path.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    return WorkTreeSource(str(tmp_path))


def worked_out(source, files):
    """The worker's side: every document collected in loader order, then run."""
    job = PolicyAhead(source, None)
    items = []
    for path in sorted(files):
        for index, doc in enumerate(load(source, None).files[path].documents):
            items.append(job.collect(path, index, validate(doc.data)))
    return job, job.run([i for i in items if i is not None])


class Answered(PolicyAhead):
    """This process's side with the worker's answer in hand (no fork in a unit test)."""

    def __init__(self, source, answer):
        super().__init__(source, None)
        self._answer = answer

    def answer(self):
        return self._answer


def resolver_of(source, hook=None) -> Resolver:
    loaded = load(source, None)
    resolver = Resolver(source, YamlLocator(source.read))
    resolver.policies_ahead = hook
    resolver.resolve(loaded.files, loaded.documents)
    return resolver


def resolve(source, hook=None):
    return resolver_of(source, hook).out


def noting(hook, taken: list):
    """`hook`, noting in `taken` whether each answer it gave was taken (not None)."""
    def noted(*facts):
        got = hook(*facts)
        taken.append(got is not None)
        return got
    return noted


def taking(source, answer, taken: list):
    """A hook that answers with the worker's `answer` and notes whether it was taken."""
    return noting(Answered(source, answer).findings, taken)


def checked_policies(source) -> list:
    """The policies the resolver's checks saw, in its order (the one with an error is dropped afterwards)."""
    resolver = resolver_of(source)
    policies = [r for r in resolver.out.resources.values() if r.type == "policy"]
    return sorted(policies + list(resolver._failed_policies.values()), key=lambda p: p.file)


def policy_diagnostics(resolution):
    return [(d.severity, d.message, d.file, d.line, d.col, d.hint) for d in resolution.diagnostics
            if d.message.startswith("policy ")]


def test_the_workers_findings_and_positions_are_what_the_resolver_works_out_itself(tmp_path):
    source = source_with(tmp_path, FILES)
    _, answer = worked_out(source, FILES)
    mine = policy_diagnostics(resolve(source))
    assert {d[0] for d in mine} == {"error", "warning"}  # the bad pattern, and deny overriding allow
    assert ("warning", "d-deny.yaml", 9, 3) in {(d[0], d[2], d[3], d[4]) for d in mine}
    taken = []
    assert policy_diagnostics(resolve(source, taking(source, answer, taken))) == mine
    assert taken == [True]


def test_the_resolver_places_the_findings_where_the_answer_says(tmp_path):
    source = source_with(tmp_path, FILES)
    _, (facts, rows) = worked_out(source, FILES)
    moved = (facts, [row[:5] + ((99, 7),) for row in rows])
    placed = policy_diagnostics(resolve(source, Answered(source, moved).findings))
    assert placed and {(d[3], d[4]) for d in placed} == {(99, 7)}
    # a finding the worker could not place (it could not read the file) is placed here, as without the answer
    unplaced = (facts, [row[:5] + (None,) for row in rows])
    assert policy_diagnostics(resolve(source, Answered(source, unplaced).findings)) == policy_diagnostics(resolve(source))


def test_other_resources_refuse_the_answer(tmp_path):
    source = source_with(tmp_path, FILES)
    _, answer = worked_out(source, FILES)
    seen = []

    def hook(resources, validated_hash):
        seen.append((dict(resources), {rid: validated_hash(rid) for rid in resources}))
        return None
    resolve(source, hook)
    [(resources, hashes)] = seen
    assert Answered(source, answer).findings(resources, hashes.get) is not None
    assert Answered(source, answer).findings(resources, lambda rid: "another spec") is None
    assert Answered(source, answer).findings(dict(reversed(resources.items())), hashes.get) is None
    more = dict(resources, **{"secret:payments/extra": None})
    assert Answered(source, answer).findings(more, dict(hashes, **{"secret:payments/extra": "h"}).get) is None
    assert Answered(source, None).findings(resources, hashes.get) is None


def test_duplicate_ids_give_no_answer_and_an_invalid_document_none_that_fits(tmp_path):
    files = dict(FILES, **{"f-copy.yaml": DENY})
    _, answer = worked_out(source_with(tmp_path / "dup", files), files)
    assert answer is None
    files = dict(FILES, **{"f-broken.yaml": WORKFLOW.replace("name: daily", "name: other").replace("dag:", "dog:")})
    source = source_with(tmp_path / "invalid", files)
    _, answer = worked_out(source, files)
    taken = []
    # an invalid workflow may write any table: the resolver's universe is unsure, so it does not ask
    assert policy_diagnostics(resolve(source, taking(source, answer, taken))) == policy_diagnostics(resolve(source))
    assert taken == []


def test_the_workers_checks_are_check_policies(tmp_path):
    source = source_with(tmp_path, FILES)
    _, (facts, rows) = worked_out(source, FILES)
    expected = check_policies(checked_policies(source), DatasetUniverse.of([], ["lake://payments/valid"]), None)
    assert [row[:5] for row in rows] == [(f.policy_id, f.severity, f.message, f.path, f.hint) for f in expected]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
@pytest.mark.parametrize("worker", ["answers", "fails"])
def test_a_forked_workers_answer_is_taken_and_a_failed_one_leaves_the_checks_here(tmp_path, monkeypatch, worker):
    """Through a real cold load on two processes: the worker's answer reaches the resolver. A worker that cannot
    read the files dies with its share (no answer: the resolver checks the policies itself) or, when this
    process took every chunk, answers without positions (found here): the same diagnostics every way."""
    monkeypatch.setattr(coldload, "MIN_FILES", 1)
    source_with(tmp_path / "repo", FILES)
    source_class = WorkTreeSource if worker == "answers" else unreadable_in_children(WorkTreeSource)
    source = source_class(str(tmp_path / "repo"))
    job = PolicyAhead(source, None)
    cache = DocCache(tmp_path / "state")
    loaded = coldload.load_cold(source, None, cache, tmp_path / "state", workers=2, side=job)
    assert job.started
    taken = []
    resolver = Resolver(source, YamlLocator(source.read), memo=cache.validation_memo())
    resolver.policies_ahead = noting(job.resolver_hook(), taken)
    resolver.resolve(loaded.files, loaded.documents)
    assert policy_diagnostics(resolver.out) == policy_diagnostics(resolve(WorkTreeSource(str(tmp_path / "repo"))))
    if worker == "answers":
        assert taken == [True]
    else:  # asked once, answered or not
        assert len(taken) == 1
