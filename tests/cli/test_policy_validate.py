"""`reconciler validate` checks policies against the repository: dataset patterns, filters, subjects
(with an instance config) and allow/deny overlaps. Through the real CLI on real git repos."""
import re

from tests.cli import repos
from tests.conftest import run_cli

# line 5 holds the subjects, line 6 the datasets, line 7 access, line 8 the filter (when there is one)
POLICY = """
version: v1
type: policy
name: {name}
policy:
  subjects: {{groups: [{groups}], users: [{users}]}}
  datasets: [{datasets}]
  access: {access}
"""

CONFIG = """
repo: .
users:
  alice: {groups: [analysts], token_env: ALICE_TOKEN}
  bob: {groups: [], token_env: BOB_TOKEN}
groups:
  platform-admins: {admin: true}
"""


def policy(name="analysts", groups="analysts", users="", datasets='"lake://payments/*"', access="allow",
           filter=None) -> str:
    text = POLICY.format(name=name, groups=groups, users=users, datasets=datasets, access=access)
    return text + (f"  filter: {filter}\n" if filter else "")


def validate(repo, *args, env=None):
    return run_cli("validate", "--repo", repo.path, "--state-dir", repo.path.parent / "state", *args, env=env)


def lines(r, severity="error"):
    return [l for l in r.out.splitlines() if f": {severity}: " in l]


def assert_clean_failure(r):
    assert r.code == 1, r
    assert "Traceback" not in r.out + r.err, r


def test_a_pattern_matching_no_dataset_is_an_error_at_its_place_with_a_suggestion(git_repo):
    git_repo.commit(repos.basic(**{"policies/analysts.yaml": policy(
        datasets='"lake://payments/*", "lake://payment/*", "depot://raw/**", "depot://rw/x"')}))
    r = validate(git_repo)
    assert_clean_failure(r)
    errors = lines(r)
    assert len(errors) == 2, r
    assert re.match(r"policies/analysts\.yaml:6:35: error: policy 'analysts': dataset pattern 'lake://payment/\*' "
                    r"matches no dataset: no depot or workflow in the repo produces a dataset matching it", errors[0]), r
    assert errors[1].startswith("policies/analysts.yaml:6:73: error:") and "'depot://rw/x'" in errors[1], r
    assert "hint: did you mean 'lake://payments/*'?" in r.out and "did you mean 'depot://raw/*'?" in r.out, r
    assert "4 resource(s) valid" in r.out  # the broken policy is left out


def test_depot_listed_datasets_and_opaque_jobs(git_repo):
    depot = repos.DEPOT + "  datasets: [transactions]\n"
    shell = """
    version: v1
    type: workflow
    name: export
    workspace: payments
    workflow:
      dag:
        - {name: dump, stack: shell, spec: {command: "echo hi"}}
    """
    git_repo.commit(repos.basic(**{"depots/raw.yaml": depot, "policies/analysts.yaml": policy(
        datasets='"depot://raw/transactions", "depot://raw/refunds", "lake://payments/exported"')}))
    r = validate(git_repo)
    assert_clean_failure(r)
    assert [l.split("'")[3] for l in lines(r)] == ["depot://raw/refunds", "lake://payments/exported"], r
    # a shell job may write tables no spec declares: patterns over its workspace are not judged; the depot one is
    git_repo.commit({"workflows/export.yaml": shell})
    r = validate(git_repo)
    assert len(lines(r)) == 1 and "'depot://raw/refunds'" in lines(r)[0], r


def test_a_filter_that_is_not_one_boolean_expression_is_an_error_naming_the_policy(git_repo):
    cases = {
        "syntax": ('"region ="', "not valid SQL"),
        "statements": ("\"region = 'EU'; DROP TABLE payments.valid\"", "';'"),
        "subquery": ('"id IN (SELECT id FROM lake.payments.valid)"', "subquery"),
        "reads-files": ("\"read_csv('/etc/passwd') IS NOT NULL\"", "read_csv()"),
        "not-boolean": ('"amount + 1"', "not a boolean expression"),
    }
    files = {f"policies/{name}.yaml": policy(name=name, filter=text) for name, (text, _) in cases.items()}
    git_repo.commit(repos.basic(**files))
    r = validate(git_repo)
    assert_clean_failure(r)
    errors = lines(r)
    assert len(errors) == len(cases), r
    for name, (_, words) in cases.items():
        hit = [l for l in errors if l.startswith(f"policies/{name}.yaml:8:3: error: policy '{name}': filter ")]
        assert hit and words in hit[0], (name, r)
    assert "hint: write one boolean expression" in r.out


def test_unknown_subjects_are_errors_only_with_an_instance_config(git_repo, tmp_path):
    git_repo.commit(repos.basic(**{"policies/analysts.yaml": policy(groups="analysts, analyst, team-payments",
                                                                    users="alice, bobb")}))
    # without a config nobody can tell who exists: no error and no noise
    r = validate(git_repo)
    assert r.code == 0 and not lines(r, "warning"), r
    config = tmp_path / "reconciler.yaml"
    config.write_text(CONFIG)
    r = validate(git_repo, "--config", config)
    assert_clean_failure(r)
    errors = lines(r)
    assert len(errors) == 2, r  # analysts (alice's group) and team-payments (an owner team) are known
    assert errors[0].startswith("policies/analysts.yaml:5:33: error: policy 'analysts': unknown group 'analyst'"), r
    assert errors[1].startswith("policies/analysts.yaml:5:73: error: policy 'analysts': unknown user 'bobb'"), r
    assert "did you mean 'analysts'?" in r.out and "did you mean 'bob'?" in r.out
    # the same through $RECONCILER_CONFIG, and in JSON
    r = validate(git_repo, "-o", "json", env={"RECONCILER_CONFIG": str(config)})
    assert r.code == 1 and r.json["errors"] == 2, r
    assert {(d["file"], d["line"]) for d in r.json["diagnostics"] if d["severity"] == "error"} == \
        {("policies/analysts.yaml", 5)}
    git_repo.commit({"policies/analysts.yaml": policy(groups="analysts, team-payments, platform-admins",
                                                      users="alice, bob")})
    assert validate(git_repo, "--config", config).code == 0


def test_service_token_consumers_are_known_subjects(git_repo, tmp_path):
    service = """
    version: v1
    type: service
    name: api
    workspace: payments
    service:
      datasets: [{name: valid, dataset: "lake://payments/valid"}]
      tokens: [{name: reporting-tool, secret: api-token}]
    """
    git_repo.commit(repos.basic(**{"secret.yaml": repos.SECRET, "services/api.yaml": service,
                                   "policies/tool.yaml": policy(name="tool", groups="", users="reporting-tool")}))
    config = tmp_path / "reconciler.yaml"
    config.write_text(CONFIG)
    assert validate(git_repo, "--config", config).code == 0
    git_repo.commit({"policies/tool.yaml": policy(name="tool", groups="", users="reporting-tol")})
    r = validate(git_repo, "--config", config)
    assert r.code == 1 and "unknown user 'reporting-tol'" in r.out and "did you mean 'reporting-tool'?" in r.out, r


def test_a_config_that_cannot_be_read_is_a_clean_error(git_repo, tmp_path):
    git_repo.commit(repos.basic())
    r = validate(git_repo, "--config", tmp_path / "missing.yaml")
    assert_clean_failure(r)
    assert "missing.yaml" in r.err
    bad = tmp_path / "bad.yaml"
    bad.write_text("users:\n  alice: {groups: [a], token_file: t, colour: red}\n")
    r = validate(git_repo, "--config", bad)
    assert_clean_failure(r)
    assert re.search(r"bad\.yaml:2:\d+: error: users\.alice\.colour: unknown key", r.err), r


def test_overlapping_allow_and_deny_is_a_warning_naming_both_policies(git_repo):
    git_repo.commit(repos.basic(**{
        "policies/analysts.yaml": policy(),
        "policies/no-valid.yaml": policy(name="no-valid", groups="analysts, sales", datasets='"lake://payments/valid"',
                                         access="deny"),
        "policies/no-sales.yaml": policy(name="no-sales", groups="sales", access="deny"),
    }))
    r = validate(git_repo)
    assert r.code == 0, r
    warnings = lines(r, "warning")
    assert len(warnings) == 1, r  # no-sales shares no subject with the allow
    assert warnings[0].startswith("policies/no-valid.yaml:7:3: warning: policy 'no-valid' denies group 'analysts' on "
                                  "lake://payments/valid, which policy 'analysts' allows: deny wins"), r


def test_the_sample_repo_validates_with_and_without_its_subjects(sample_repo, tmp_path):
    assert validate(sample_repo).code == 0
    config = tmp_path / "reconciler.yaml"
    config.write_text("repo: .\nusers:\n  ana: {groups: [payments-analysts], token_env: ANA_TOKEN}\n")
    r = validate(sample_repo, "--config", config)
    assert r.code == 0, r


def test_plan_refuses_a_policy_in_error_and_apply_applies_nothing(git_repo, state_dir):
    git_repo.commit(repos.basic(**{"policies/analysts.yaml": policy(datasets='"lake://nowhere/*"')}))
    r = run_cli("plan", "--repo", git_repo.path, "--state-dir", state_dir)
    assert r.code == 1 and "policies/analysts.yaml:6:" in r.err and "policy:analysts" not in r.out, r
    r = run_cli("apply", "--auto-approve", "--repo", git_repo.path, "--state-dir", state_dir)
    assert r.code == 1 and "nothing was applied" in r.out, r


def test_the_daemons_warm_planner_checks_policies_like_a_cold_validate(git_repo, tmp_path):
    """Edits to policies and depots stay incremental; when a policy's errors change, a full resolve runs."""
    from reconciler.engine.operations import Target, load_desired
    from reconciler.engine.warm import WarmPlanner
    from reconciler.gitops.source import GitSource

    def rendered(diags):
        return sorted(d.render() for d in diags)

    def step(files, *, incremental: bool):
        commit = git_repo.commit(files)
        before = warm.incremental
        warm.plan(GitSource(git_repo.repo, commit), {}, serial=0)
        assert (warm.incremental == before + 1) is incremental, files
        cold = load_desired(Target(str(git_repo.path), commit, tmp_path / "cold", subjects=subjects))
        assert rendered(warm.resolver.out.diagnostics) == rendered(cold.resolution.diagnostics)
        return rendered(warm.resolver.out.diagnostics)

    from reconciler.engine.access_plan import InstanceSubjects

    subjects = InstanceSubjects((("alice", ("analysts",)),), frozenset({"analysts", "sales"}))
    first = git_repo.commit(repos.basic(**{
        "policies/analysts.yaml": policy(),
        "policies/deny.yaml": policy(name="no-valid", datasets='"lake://payments/valid"', access="deny"),
        "policies/raw.yaml": policy(name="raw", groups="analysts", datasets='"depot://raw/other"'),
    }))
    warm = WarmPlanner(tmp_path / "state", known_subjects=subjects.known_for_validation())
    warm.plan(GitSource(git_repo.repo, first), {}, serial=0)
    assert [d.severity for d in warm.resolver.out.diagnostics] == ["warning"]
    # the deny names someone else now: the overlap warning goes, incrementally
    assert step({"policies/deny.yaml": policy(name="no-valid", groups="sales", datasets='"lake://payments/valid"',
                                              access="deny")}, incremental=True) == []
    # back again, with a comment moving the lines: the warning is placed at its new line
    diags = step({"policies/deny.yaml": "# the valid table is for the owners only\n" + policy(
        name="no-valid", datasets='"lake://payments/valid"', access="deny").lstrip()}, incremental=True)
    assert len(diags) == 1 and diags[0].startswith("policies/deny.yaml:8:3: warning:")
    # the depot now lists its datasets: policy raw's pattern matches nothing, it must be left out: full resolve
    diags = step({"depots/raw.yaml": repos.DEPOT + "  datasets: [transactions]\n"}, incremental=False)
    assert any("'depot://raw/other' matches no dataset" in d for d in diags)
    assert "policy:raw" not in warm.resolver.out.resources
