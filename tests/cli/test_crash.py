"""kill -9 at chosen points of an apply, then the next apply converges with nothing recorded lost."""
import signal

import pytest

from tests.cli import repos
from tests.cli.test_plan_apply import ENV, apply, cli, get_json, phases

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("point", ["begin:depot:raw", "applied:depot:raw", "begin:workflow:payments/daily",
                                   "applied:policy:mask-cards"])
def test_kill_9_during_apply_then_the_next_apply_converges(git_repo, state_dir, point):
    git_repo.commit(repos.basic())
    first = apply(git_repo, state_dir, "--parallelism", "1", env={**ENV, "RECONCILER_CRASH_AT": point})
    assert first.code == -signal.SIGKILL, first
    crashed = point.split(":", 1)[1]
    before = {x["id"]: x for x in get_json(state_dir)}
    assert before[crashed]["phase"] == "Applying"
    # the state reader works and the plan says why the interrupted resource is applied again
    r = cli(git_repo, state_dir, "plan")
    assert crashed in r.out and "interrupted" in r.out, r
    second = apply(git_repo, state_dir)
    assert second.code == 0, second
    after = {x["id"]: x for x in get_json(state_dir)}
    assert {x["phase"] for x in after.values()} == {"Ready"}
    assert len(after) == 4
    # resources that were Ready before the crash kept their record (nothing lost)
    for rid, rec in before.items():
        if rec["phase"] == "Ready":
            assert after[rid]["applied_at"] == rec["applied_at"], rid
    assert cli(git_repo, state_dir, "plan", "--detailed-exitcode").code == 0


def test_kill_9_during_a_prune_then_the_next_apply_converges(git_repo, state_dir):
    git_repo.commit(repos.basic(**repos.depots(2)))
    assert apply(git_repo, state_dir).code == 0
    git_repo.commit({k: None for k in repos.depots(2)})
    r = apply(git_repo, state_dir, env={**ENV, "RECONCILER_CRASH_AT": "begin:depot:extra-1"})
    assert r.code == -signal.SIGKILL
    assert phases(state_dir)["depot:extra-1"] == "Deleting"
    assert apply(git_repo, state_dir).code == 0
    p = phases(state_dir)
    assert "depot:extra-0" not in p and "depot:extra-1" not in p and len(p) == 4
