"""`reconciler plan` shows who gains or loses access when a policy changes, in text, markdown and JSON.
Real git repos, real DuckDB state and catalog, the real CLI."""
import json

import pygit2
import pytest

from tests.cli import repos
from tests.conftest import GitRepo, run_cli

VALID = "lake://payments/valid"
RAW = "depot://raw/transactions"
# the workflow's lake table gets an owner team; the depot tags a column as PII
WORKFLOW = repos.WORKFLOW.replace("workspace: payments\n", "workspace: payments\nowner: team-payments\n", 1)
DEPOT = repos.DEPOT + "  column_tags: {transactions.currency: [pii]}\n"

ANALYSTS = """
version: v1
type: policy
name: analysts
policy:
  subjects: {groups: [analysts]}
  datasets: ["lake://payments/*", "depot://raw/*"]
  access: allow
  filter: "currency = 'USD'"
"""

CONFIG = """
repo: .
users:
  alice: {groups: [analysts], token_env: ALICE_TOKEN}
  root: {groups: [platform], token_env: ROOT_TOKEN}
groups:
  platform: {admin: true}
"""


def plan(repo, state, *args, env=None):
    return run_cli("plan", "--repo", repo.path, "--state-dir", state, *args, env=env)


def access_of(r) -> list[tuple[str, str, str]]:
    assert r.code in (0, 2), r
    return [(c["subject"], c["dataset"], c["change"]) for c in r.json["access"]]


@pytest.fixture(scope="module")
def applied(tmp_path_factory):
    """The basic repo with an owned workflow and a tagged depot, applied (the catalog knows the columns)."""
    root = tmp_path_factory.mktemp("access")
    repo = GitRepo(root / "repo")
    repo.commit(repos.basic(**{"workflows/daily.yaml": WORKFLOW, "depots/raw.yaml": DEPOT}))
    state = root / "state"
    r = run_cli("apply", "--auto-approve", "--repo", repo.path, "--state-dir", state)
    assert r.code == 0, r
    return repo, state


def on_branch(applied, files: dict, name: str) -> str:
    """Commit `files` on a branch of its own (the applied main stays as it is); returns the commit."""
    repo, _ = applied
    head = repo.repo.head.target
    branch = repo.repo.branches.local.create(name, repo.repo[head])
    repo.repo.checkout(branch)
    try:
        return repo.commit(files, message=name)
    finally:
        repo.repo.checkout(repo.repo.branches.local["main"])
        repo.repo.reset(head, pygit2.GIT_RESET_HARD)


def test_a_new_allow_shows_what_each_subject_gains_in_text_markdown_and_json(applied):
    repo, state = applied
    ref = on_branch(applied, {"policies/analysts.yaml": ANALYSTS}, "allow-analysts")
    r = plan(repo, state, "--ref", ref)
    assert r.code == 0, r
    assert "+ policy:analysts" in r.out
    section = r.out.split("Access changes", 1)[1]
    rows = [l.strip() for l in section.splitlines()[1:] if l.startswith("  ")]
    assert rows == [
        f"+ group:analysts  {RAW}: reads id, amount, currency; rows where currency = 'USD' (allowed by policy analysts)",
        f"+ group:analysts  {VALID}: reads id, amount, currency; rows where currency = 'USD' "
        f"(allowed by policy analysts)",
    ], r.out
    assert r.out.index("Access changes") > r.out.index("+ policy:analysts")  # after the resource changes
    assert r.out.rstrip().endswith("0 to delete.")

    md = plan(repo, state, "--ref", ref, "-o", "markdown")
    assert md.code == 0, md
    assert "#### Access changes (2)" in md.out
    assert f"| `+` | `group:analysts` | `{VALID}` | reads id, amount, currency; rows where currency = 'USD' " \
           f"(allowed by policy analysts) |" in md.out

    js = plan(repo, state, "--ref", ref, "-o", "json")
    assert access_of(js) == [("group:analysts", RAW, "gain"), ("group:analysts", VALID, "gain")]


def test_masks_filters_and_losses(applied):
    repo, state = applied
    repo_files = {
        # the mask policy now hashes PII (the depot's currency) for everyone, owners included
        "policies/mask.yaml": repos.POLICY.replace("{columns: [card_number], with: last4}",
                                                   "{tags: [pii], with: hash}").replace("lake://payments/*",
                                                                                        "depot://raw/*"),
        "policies/no-owners.yaml": ANALYSTS.replace("name: analysts", "name: no-owners")
                                           .replace("groups: [analysts]", "groups: [team-payments]")
                                           .replace("access: allow", "access: deny")
                                           .replace('["lake://payments/*", "depot://raw/*"]', f'["{VALID}"]')
                                           .replace("  filter: \"currency = 'USD'\"\n", ""),
    }
    ref = on_branch(applied, repo_files, "mask-and-deny")
    got = plan(repo, state, "--ref", ref, "-o", "json")
    access = {(c["subject"], c["dataset"], c["change"]): c["detail"] for c in got.json["access"]}
    # team-payments owns both; the deny takes the lake table away from it, the mask hashes its depot's PII
    assert set(access) == {("group:team-payments", VALID, "lose"), ("group:team-payments", RAW, "mask+")}, got.out
    assert "denied by policy no-owners" in access[("group:team-payments", VALID, "lose")]
    assert access[("group:team-payments", RAW, "mask+")] == "column currency now masked with hash"
    text = plan(repo, state, "--ref", ref)
    assert f"  - group:team-payments  {VALID}: denied by policy no-owners" in text.out, text
    assert f"  ~ group:team-payments  {RAW}: column currency now masked with hash" in text.out, text


def test_filter_change_and_configured_users(applied, tmp_path):
    repo, state = applied
    first = on_branch(applied, {"policies/analysts.yaml": ANALYSTS}, "analysts-first")
    # apply the allow, then change its filter (the module's state is applied back to main at the end)
    r = run_cli("apply", "--auto-approve", "--repo", repo.path, "--ref", first, "--state-dir", state)
    assert r.code == 0, r
    try:
        changed = on_branch(applied, {"policies/analysts.yaml": ANALYSTS.replace("'USD'", "'EUR'")}, "analysts-eur")
        config = tmp_path / "reconciler.yaml"
        config.write_text(CONFIG)
        got = plan(repo, state, "--ref", changed, "--config", config, "-o", "json")
        assert access_of(got) == [("alice", RAW, "filter"), ("group:analysts", RAW, "filter"),
                                  ("alice", VALID, "filter"), ("group:analysts", VALID, "filter")]
        assert got.json["access"][0]["detail"] == "rows currency = 'USD' -> currency = 'EUR'"
        # root is an admin: the policy's filter is not about root, so nothing changes for it
        removed = on_branch(applied, {"policies/analysts.yaml": None}, "analysts-gone")
        got = plan(repo, state, "--ref", removed, "--config", config, "-o", "json")
        assert access_of(got) == [("alice", RAW, "lose"), ("group:analysts", RAW, "lose"),
                                  ("alice", VALID, "lose"), ("group:analysts", VALID, "lose")]
    finally:  # the module's state goes back to main
        r = run_cli("apply", "--auto-approve", "--repo", repo.path, "--state-dir", state)
        assert r.code == 0, r


def test_plans_without_policy_changes_have_no_access_section(applied):
    repo, state = applied
    r = plan(repo, state)
    assert r.code == 0 and "No changes" in r.out and "Access changes" not in r.out, r
    ref = on_branch(applied, {"workflows/daily.yaml": WORKFLOW.replace("amount > 0", "amount > 1")}, "wf-edit")
    for output in ("text", "markdown"):
        r = plan(repo, state, "--ref", ref, "-o", output)
        assert r.code == 0 and "workflow:payments/daily" in r.out and "Access changes" not in r.out, r
    assert access_of(plan(repo, state, "--ref", ref, "-o", "json")) == []


def test_the_memoised_and_the_saved_plan_keep_the_access_diff(applied, tmp_path):
    repo, state = applied
    ref = on_branch(applied, {"policies/analysts.yaml": ANALYSTS}, "memo")
    saved = tmp_path / "plan.json"
    first = plan(repo, state, "--ref", ref, "--out", saved)
    again = plan(repo, state, "--ref", ref)  # answered by the plan memo
    assert first.code == 0 and "Access changes" in first.out, first
    assert again.out.split("Access changes")[1] == first.out.split("Access changes")[1].split("Saved the plan")[0]
    assert len(json.loads(saved.read_text())["access"]) == 2
    # the saved plan applies exactly; the access diff is for reviewers, apply ignores it
    r = run_cli("apply", saved, "--repo", repo.path, "--state-dir", state)
    try:
        assert r.code == 0 and "Apply complete: 1 Ready" in r.out, r
    finally:
        assert run_cli("apply", "--auto-approve", "--repo", repo.path, "--state-dir", state).code == 0


def test_a_preview_against_a_base_ref_shows_the_access_table(applied):
    """Pull-request previews (`--base`, the daemon's plans/<branch>.md) are markdown plans: the table is in them."""
    repo, state = applied
    ref = on_branch(applied, {"policies/analysts.yaml": ANALYSTS}, "preview")
    r = plan(repo, state, "--ref", ref, "--base", "main", "-o", "markdown")
    assert r.code == 0, r
    assert "against `main`" in r.out and "#### Access changes (2)" in r.out, r
    assert f"| `+` | `group:analysts` | `{RAW}` |" in r.out
