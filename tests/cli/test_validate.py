"""`reconciler validate` on good and bad repositories, through the real CLI."""
import re

import pytest

from tests.conftest import SHARED, run_cli, write_files
from tests.cli import repos


def validate(repo, *args):
    return run_cli("validate", "--repo", repo.path, *args)


def test_valid_repo_reads_the_committed_head(git_repo):
    git_repo.commit(repos.basic())
    r = validate(git_repo)
    assert r.code == 0, r
    assert "Valid: 4 resources" in r.out
    # an uncommitted broken edit is not what validate reads by default: the branch head is
    (git_repo.path / "workspace.yaml").write_text("version: v1\ntype: workspace\nname: Bad Name\n")
    assert validate(git_repo).code == 0


def test_plain_directory_is_read_as_a_working_tree(tmp_path):
    write_files(tmp_path / "plain", repos.basic())
    r = run_cli("validate", "--repo", tmp_path / "plain", "-o", "json")
    assert r.code == 0, r
    assert r.json["valid"] is True and r.json["resources"] == 4 and r.json["commit"] is None


def test_ref_selects_an_older_commit(git_repo):
    first = git_repo.commit(repos.basic())
    git_repo.commit({"workspace.yaml": "version: v1\ntype: workspace\nname: Bad_Name\n"})
    assert validate(git_repo).code == 1
    assert validate(git_repo, "--ref", first[:10]).code == 0
    r = validate(git_repo, "--ref", "no-such-branch")
    assert r.code == 1 and "no-such-branch" in r.err and "Traceback" not in r.err


def test_file_url_of_a_bare_remote(tmp_path, git_repo):
    import pygit2

    git_repo.commit(repos.basic())
    bare = tmp_path / "remote.git"
    pygit2.clone_repository(str(git_repo.path), str(bare), bare=True)
    r = run_cli("validate", "--repo", f"file://{bare}", "--state-dir", tmp_path / "st")
    assert r.code == 0, r
    assert "Valid: 4 resources" in r.out


BAD_INPUTS = {
    # name: (files to add, expected file, expected line, message regex)
    "tab indentation": ({"bad.yaml": "version: v1\ntype: workspace\nname: x\ndescription:\n\t- a\n"},
                        "bad.yaml", 5, r"tab|indent"),
    "unclosed quote": ({"bad.yaml": "version: v1\ntype: workspace\nname: \"x\ndescription: y\n"},
                       "bad.yaml", None, r"quot|scalar"),
    "duplicate key": ({"bad.yaml": "version: v1\ntype: workspace\nname: x\nname: y\n"},
                      "bad.yaml", 4, r"duplicate key 'name'"),
    "type without version": ({"bad.yaml": "type: workspace\nname: x\n"}, "bad.yaml", 1, r"version"),
    "unknown type": ({"bad.yaml": "version: v1\ntype: wrkflow\nname: x\n"}, "bad.yaml", 2, r"did you mean 'workflow'"),
    "unknown version": ({"bad.yaml": "version: v9\ntype: workspace\nname: x\n"}, "bad.yaml", 1, r"v9"),
    "unknown field": ({"bad.yaml": "version: v1\ntype: workspace\nname: x\ncolour: red\n"}, "bad.yaml", 4, r"colour"),
    "misspelt field": ({"workflows/daily.yaml": repos.WORKFLOW.replace("  dag:", "  dagg:")},
                       "workflows/daily.yaml", 6, r"did you mean 'dag'"),
    "bad name": ({"bad.yaml": "version: v1\ntype: workspace\nname: Payments_EU\n"}, "bad.yaml", 3, r"name"),
    "depends_on to nothing": ({"bad.yaml": "version: v1\ntype: workspace\nname: x\ndepends_on: ['depot:nope']\n"},
                              "bad.yaml", 4, r"unknown resource 'depot:nope'"),
    "unknown depot in a dataset": ({"workflows/daily.yaml": repos.WORKFLOW.replace("depot://raw/", "depot://rw/")},
                                   "workflows/daily.yaml", None, r"unknown depot 'rw'.*did you mean 'raw'"),
    "job depends on unknown job": ({"workflows/daily.yaml": repos.WORKFLOW.replace("depends_on: [clean]", "depends_on: [load]")},
                                   "workflows/daily.yaml", None, r"unknown job 'load'"),
    "bundle file escaping the repo": ({"b.yaml": "version: v1\ntype: bundle\nname: b\nbundle:\n  resources:\n    - {id: x, file: ../../etc/passwd}\n"},
                                      "b.yaml", 6, r"outside the repository"),
    "bundle file missing": ({"b.yaml": "version: v1\ntype: bundle\nname: b\nbundle:\n  resources:\n    - {id: x, file: nope.yaml}\n"},
                            "b.yaml", 6, r"does not exist"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_reported_with_its_place(git_repo, case):
    files, file, line, pattern = BAD_INPUTS[case]
    git_repo.commit(repos.basic(**files))
    r = validate(git_repo)
    assert r.code == 1, r
    assert "Traceback" not in r.out + r.err
    errors = [l for l in r.out.splitlines() if ": error: " in l]
    assert errors, r
    hit = [l for l in errors if l.startswith(file + ":")]
    assert hit, r
    if line is not None:
        assert any(re.match(rf"{re.escape(file)}:{line}:\d+: error:", l) for l in hit), r
    assert re.search(pattern, r.out, re.I), r


def test_two_documents_with_one_id_name_both_files(git_repo):
    git_repo.commit(repos.basic(**{"more/ws.yaml": repos.WORKSPACE}))
    r = validate(git_repo)
    assert r.code == 1
    assert "duplicate resource workspace:payments" in r.out
    assert "workspace.yaml" in r.out and "more/ws.yaml" in r.out


def test_dependency_cycle_names_the_whole_cycle(git_repo):
    a = "version: v1\ntype: workspace\nname: a\ndepends_on: ['workspace:b']\n"
    b = "version: v1\ntype: workspace\nname: b\ndepends_on: ['workspace:c']\n"
    c = "version: v1\ntype: workspace\nname: c\ndepends_on: ['workspace:a']\n"
    git_repo.commit(repos.basic(**{"a.yaml": a, "b.yaml": b, "c.yaml": c}))
    r = validate(git_repo)
    assert r.code == 1
    line = next(l for l in r.out.splitlines() if "cycle" in l)
    for x in ("workspace:a", "workspace:b", "workspace:c"):
        assert x in line


def test_custom_stack_schema_rejects_a_job_spec(git_repo):
    stack = """
    version: v1
    type: stack
    name: dbt-run
    stack:
      command: ["dbt", "run", "--select", "{{ spec.select }}"]
      schema:
        type: object
        required: [project]
        properties: {project: {type: string}, select: {type: string}}
    """
    wf = """
    version: v1
    type: workflow
    name: dbt
    workspace: payments
    workflow:
      dag:
        - name: run
          stack: dbt-run
          spec: {select: 42}
    """
    git_repo.commit(repos.basic(**{"stack.yaml": stack, "workflows/dbt.yaml": wf}))
    r = validate(git_repo)
    assert r.code == 1
    assert re.search(r"workflows/dbt\.yaml:\d+:\d+: error: .*'project' is a required property", r.out), r
    assert re.search(r"42 is not of type 'string'", r.out), r


def test_every_error_is_printed_not_the_first(git_repo):
    git_repo.commit(repos.basic(**{
        "a.yaml": "version: v1\ntype: workspace\nname: A\n",
        "b.yaml": "version: v1\ntype: wrkspace\nname: b\n",
        "c.yaml": "key: [unclosed\n",
    }))
    r = validate(git_repo)
    assert r.code == 1
    for f in ("a.yaml", "b.yaml", "c.yaml"):
        assert any(l.startswith(f + ":") for l in r.out.splitlines()), r


def test_alias_bomb_is_refused_quickly(git_repo):
    bomb = "version: v1\ntype: workspace\nname: x\nlabels:\n  a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n"
    prev = "a"
    for i, n in enumerate("bcdefghi"):
        bomb += f"  {n}: &{n} [" + ",".join([f"*{prev}"] * 9) + "]\n"
        prev = n
    git_repo.commit(repos.basic(**{"bomb.yaml": bomb}))
    r = validate(git_repo)
    assert r.code == 1
    assert "alias" in r.out.lower() and "bomb.yaml" in r.out


@pytest.mark.slow
def test_a_100_mb_file_hits_a_clear_limit(tmp_path):
    files = repos.basic()
    write_files(tmp_path / "plain", files)
    with open(tmp_path / "plain" / "huge.yaml", "w") as f:
        line = "# " + "x" * 98 + "\n"
        for _ in range(1_050_000):
            f.write(line)
    r = run_cli("validate", "--repo", tmp_path / "plain")
    assert r.code == 1
    assert "huge.yaml" in r.out and "limit" in r.out


def test_reconcilerignore_and_state_dir_are_skipped(git_repo):
    git_repo.commit(repos.basic(**{
        ".reconcilerignore": "drafts/\n",
        "drafts/broken.yaml": "version: v1\ntype: nope\n",
        ".reconciler/junk.yaml": "version: v1\ntype: nope\n",
        "other/ci.yaml": "jobs: {build: {runs-on: ubuntu}}\n",
    }))
    r = validate(git_repo)
    assert r.code == 0, r


@pytest.mark.slow
def test_yaml_test_suite_never_crashes_the_loader(tmp_path):
    corpus = SHARED / "corpora" / "yaml-test-suite"
    if not corpus.exists():
        pytest.skip(f"the shared YAML corpus is not at {corpus}")
    import shutil

    shutil.copytree(corpus, tmp_path / "fuzz")
    r = run_cli("validate", "--repo", tmp_path / "fuzz", "-o", "json", timeout=300)
    assert r.code in (0, 1), r
    assert "Traceback" not in r.err and "internal error" not in r.err
    for d in r.json["diagnostics"]:
        if d["severity"] == "error":
            assert d["file"] and d["line"], d


def test_validate_after_a_cached_one_on_a_working_tree_a_bad_ref_and_an_edit(git_repo, tmp_path):
    """Once a document cache exists, `validate` forks its validation helper before it opens the repository
    (engine/operations.py load_desired): a ref that does not resolve and a plain working tree let it go; an
    edited file is validated (by the helper) as a fresh state dir validates it."""
    state = tmp_path / "state"
    git_repo.commit(repos.basic())
    # a plan fills the document cache and saves the snapshot a later validate builds on (validate saves none)
    assert run_cli("plan", "--repo", git_repo.path, "--state-dir", state).code == 0
    r = validate(git_repo, "--state-dir", state, "--ref", "no-such-branch")
    assert r.code == 1 and "no-such-branch" in r.err and "Traceback" not in r.err, r
    git_repo.commit({"workspace.yaml": "version: v1\ntype: workspace\nname: Bad Name\n"})
    cached, fresh = (validate(git_repo, "--state-dir", s, "-o", "json") for s in (state, tmp_path / "fresh"))
    assert cached.code == fresh.code == 1 and cached.json["diagnostics"] == fresh.json["diagnostics"], cached

    write_files(tmp_path / "plain", repos.basic())
    plain_state = tmp_path / "plain-state"
    assert run_cli("plan", "--repo", tmp_path / "plain", "--state-dir", plain_state).code == 0
    write_files(tmp_path / "plain", {"workspace.yaml": "version: v1\ntype: workspace\nname: Bad Name\n"})
    r = run_cli("validate", "--repo", tmp_path / "plain", "--state-dir", plain_state)
    assert r.code == 1 and "workspace.yaml:3" in r.out + r.err, r
