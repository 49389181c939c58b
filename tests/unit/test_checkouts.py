"""Materialised commits under the state dir are pruned to those records still name."""
from reconciler.engine.operations import prune_checkouts


def test_only_commits_no_record_names_are_removed(tmp_path):
    root = tmp_path / "checkouts"
    for name in ("a" * 40, "b" * 40, "c" * 40, "worktree"):
        (root / name / "data").mkdir(parents=True)
        (root / name / "data" / "f.csv").write_text("x\n")
    assert prune_checkouts(tmp_path, {"a" * 40, None}) == 2
    assert sorted(p.name for p in root.iterdir()) == ["a" * 40, "worktree"]
    assert (root / ("a" * 40) / "data" / "f.csv").read_text() == "x\n"


def test_no_checkouts_folder_is_fine(tmp_path):
    assert prune_checkouts(tmp_path, set()) == 0
