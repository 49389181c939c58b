"""Sources: git commits (work tree, sub-folder, bare, file:// mirror) and plain folders, on real repositories."""
from __future__ import annotations

import os
from pathlib import Path

import pygit2
import pytest
from pygit2.enums import FileMode

from reconciler.core.diagnostics import UserError
from reconciler.gitops.source import (
    COMPLETE_MARK, GitSource, WorkTreeSource, is_url, mirror_path, open_source, redact_url,
)
from tests.conftest import write_files

SIG = pygit2.Signature("Test", "test@example.com")


def commit_files(repo: pygit2.Repository, files: dict[str, str | bytes | None], branch: str = "main",
                 message: str = "change", modes: dict[str, int] | None = None) -> str:
    """Commit `files` (None deletes) on top of `branch` without touching any work tree; returns the commit id."""
    ref = f"refs/heads/{branch}"
    parent = repo.references[ref].peel(pygit2.Commit) if ref in repo.references else None
    index = pygit2.Index()
    if parent is not None:
        index.read_tree(parent.tree)
    for path, content in files.items():
        if content is None:
            index.remove(path)
            continue
        data = content.encode() if isinstance(content, str) else content
        index.add(pygit2.IndexEntry(path, repo.create_blob(data), (modes or {}).get(path, FileMode.BLOB)))
    tree = index.write_tree(repo)
    return str(repo.create_commit(ref, SIG, SIG, message, tree, [parent.id] if parent is not None else []))


def work_tree(path: Path, files: dict[str, str]) -> pygit2.Repository:
    """A git work tree on `main` holding `files`, committed and checked out."""
    repo = pygit2.init_repository(str(path), initial_head="main")
    commit_files(repo, files)
    repo.checkout_head(strategy=pygit2.enums.CheckoutStrategy.FORCE)
    return repo


def listing(source) -> dict[str, str]:
    return dict(source.list_files())


def blob_id(text: str) -> str:
    return str(pygit2.hash(text.encode()))


FILES = {"a.yaml": "a: 1\n", "sub/b.yml": "b: 2\n", "sub/deeper/c.txt": "c\n"}


def test_work_tree_repo_reads_the_head_commit(tmp_path):
    repo = work_tree(tmp_path / "repo", FILES)
    (tmp_path / "repo" / "a.yaml").write_text("a: uncommitted\n")

    source = open_source(str(tmp_path / "repo"), None, tmp_path / "state")

    assert isinstance(source, GitSource)
    assert source.commit == str(repo.head.target)
    assert listing(source) == {path: blob_id(text) for path, text in FILES.items()}
    assert source.read("a.yaml") == b"a: 1\n"  # the commit, not the edited file on disk
    assert source.size("sub/b.yml") == 5
    assert source.exists("sub/b.yml") and not source.exists("sub") and not source.exists("nope.yaml")
    with pytest.raises(FileNotFoundError):
        source.read("nope.yaml")


def test_folder_inside_a_work_tree_reads_that_subtree(tmp_path):
    work_tree(tmp_path / "project", {"sample-repo/x.yaml": "x: 1\n", "sample-repo/d/y.yaml": "y: 2\n",
                                     "other.yaml": "o: 1\n"})

    source = open_source(str(tmp_path / "project" / "sample-repo"), None, tmp_path / "state")

    assert isinstance(source, GitSource) and source.prefix == "sample-repo"
    assert sorted(listing(source)) == ["d/y.yaml", "x.yaml"]
    assert source.read("d/y.yaml") == b"y: 2\n"
    assert not source.exists("other.yaml")


def test_uncommitted_folder_inside_a_work_tree_is_read_from_disk(tmp_path):
    work_tree(tmp_path / "project", {"other.yaml": "o: 1\n"})
    (tmp_path / "project" / "new-product").mkdir()
    (tmp_path / "project" / "new-product" / "bundle.yaml").write_text("n: 1\n")

    source = open_source(str(tmp_path / "project" / "new-product"), None, tmp_path / "state")

    assert isinstance(source, WorkTreeSource)
    assert list(listing(source)) == ["bundle.yaml"]
    with pytest.raises(UserError, match="folder 'new-product' does not exist at ref 'main'"):
        open_source(str(tmp_path / "project" / "new-product"), "main", tmp_path / "state")


def test_bare_repository_reads_its_default_branch(tmp_path):
    repo = pygit2.init_repository(str(tmp_path / "bare.git"), bare=True, initial_head="trunk")
    commit_files(repo, {"a.yaml": "a: 1\n"}, branch="trunk")
    commit_files(repo, {"b.yaml": "b: 1\n"}, branch="other")

    source = open_source(str(tmp_path / "bare.git"), None, tmp_path / "state")

    assert list(listing(source)) == ["a.yaml"]
    assert list(listing(open_source(str(tmp_path / "bare.git"), "other", tmp_path / "state"))) == ["b.yaml"]


def test_refs_branch_tag_sha_and_remote_branch(tmp_path):
    repo = work_tree(tmp_path / "repo", {"a.yaml": "v: 1\n"})
    first = str(repo.head.target)
    second = commit_files(repo, {"a.yaml": "v: 2\n"})
    feature = commit_files(repo, {"a.yaml": "v: 3\n"}, branch="feature")
    repo.create_tag("v1.0", pygit2.Oid(hex=first), pygit2.enums.ObjectType.COMMIT, SIG, "release")
    repo.references.create("refs/tags/light", pygit2.Oid(hex=second))
    repo.references.create("refs/remotes/origin/feature", pygit2.Oid(hex=feature))
    state = tmp_path / "state"
    path = str(tmp_path / "repo")

    def commit_at(ref):
        return open_source(path, ref, state).commit

    assert commit_at(None) == second
    assert commit_at("main") == second
    assert commit_at("feature") == feature
    assert commit_at("origin/feature") == feature
    assert commit_at("v1.0") == first  # annotated tag, peeled to its commit
    assert commit_at("light") == second
    assert commit_at(first) == first
    assert commit_at(first[:8]) == first
    assert open_source(path, "v1.0", state).read("a.yaml") == b"v: 1\n"


def test_unknown_ref_names_it_and_lists_branches(tmp_path):
    work_tree(tmp_path / "repo", {"a.yaml": "a: 1\n"})
    with pytest.raises(UserError) as caught:
        open_source(str(tmp_path / "repo"), "no-such-branch", tmp_path / "state")
    assert "unknown ref 'no-such-branch'" in caught.value.message
    assert "main" in caught.value.hint


def test_empty_repository_is_a_user_error(tmp_path):
    pygit2.init_repository(str(tmp_path / "empty"), initial_head="main")
    with pytest.raises(UserError, match="has no commits yet"):
        open_source(str(tmp_path / "empty"), None, tmp_path / "state")


def test_plain_folder_missing_path_and_ref_without_git(tmp_path):
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "a.yaml").write_text("a: 1\n")

    source = open_source(str(tmp_path / "plain"), None, tmp_path / "state")

    assert isinstance(source, WorkTreeSource) and source.commit is None
    with pytest.raises(UserError, match="--ref needs a git repository"):
        open_source(str(tmp_path / "plain"), "main", tmp_path / "state")
    with pytest.raises(UserError, match="does not exist"):
        open_source(str(tmp_path / "missing"), None, tmp_path / "state")
    with pytest.raises(UserError, match="not a folder"):
        open_source(str(tmp_path / "plain" / "a.yaml"), None, tmp_path / "state")


def test_file_url_is_mirrored_then_fetched(tmp_path):
    remote = pygit2.init_repository(str(tmp_path / "remote.git"), bare=True, initial_head="trunk")
    first = commit_files(remote, {"a.yaml": "a: 1\n"}, branch="trunk")
    url = (tmp_path / "remote.git").as_uri()
    state = tmp_path / "state"

    source = open_source(url, None, state)

    assert source.commit == first and source.root_label == url
    assert list(listing(source)) == ["a.yaml"]
    assert (mirror_path(url, state) / "HEAD").exists()
    assert [p.name for p in (state / "mirrors").iterdir()] == [mirror_path(url, state).name]  # no temp left

    second = commit_files(remote, {"b.yaml": "b: 1\n"}, branch="trunk")
    feature = commit_files(remote, {"f.yaml": "f: 1\n"}, branch="feature")
    remote.create_tag("v2", pygit2.Oid(hex=second), pygit2.enums.ObjectType.COMMIT, SIG, "v2")

    again = open_source(url, None, state)
    assert again.commit == second
    assert sorted(listing(again)) == ["a.yaml", "b.yaml"]
    assert open_source(url, "feature", state).commit == feature
    assert open_source(url, "origin/feature", state).commit == feature
    assert open_source(url, "v2", state).commit == second

    remote.references.delete("refs/heads/feature")
    with pytest.raises(UserError, match="unknown ref 'feature'"):
        open_source(url, "feature", state)  # pruned from the mirror


def test_unreachable_url_is_a_user_error_and_leaves_nothing(tmp_path):
    url = (tmp_path / "nowhere.git").as_uri()
    with pytest.raises(UserError, match="cannot fetch"):
        open_source(url, None, tmp_path / "state")
    assert not mirror_path(url, tmp_path / "state").exists()
    assert list((tmp_path / "state" / "mirrors").iterdir()) == []


def test_changed_paths_between_commits(tmp_path):
    repo = pygit2.init_repository(str(tmp_path / "r.git"), bare=True, initial_head="main")
    first = commit_files(repo, {"keep.yaml": "k\n", "edit.yaml": "1\n", "gone.yaml": "g\n", "sub/x.yaml": "x\n"})
    second = commit_files(repo, {"edit.yaml": "2\n", "gone.yaml": None, "new/n.yaml": "n\n", "sub/x.yaml": "y\n"})

    source = GitSource(repo, second)

    assert source.changed_paths(first) == {"edit.yaml", "gone.yaml", "new/n.yaml", "sub/x.yaml"}
    assert source.changed_paths(second) == set()
    assert GitSource(repo, second, prefix="sub").changed_paths(first) == {"x.yaml"}
    assert GitSource(repo, second, prefix="new").changed_paths(first) == {"n.yaml"}  # absent before
    with pytest.raises(UserError, match="is not in"):
        source.changed_paths("0" * 40)



@pytest.mark.parametrize("seed", range(6))
def test_changed_paths_agree_with_libgit2s_tree_diff(tmp_path, seed):
    """The pruned tree walk against libgit2's own diff, over random commits: edits, new and removed files and
    folders, an executable bit flipped, a file that becomes a folder (and back) and symbolic links."""
    import random

    rng = random.Random(seed)
    repo = pygit2.init_repository(str(tmp_path / "r.git"), bare=True, initial_head="main")
    names = ["a.yaml", "b.yml", "d/x.yaml", "d/e/y.yaml", "d/e/f/z.yaml", "g/h.yaml", "link", "d/run.sh"]
    files: dict[str, tuple[str, int]] = {}
    commits = [commit_files(repo, {"seed.yaml": "s\n"})]
    for n in range(14):
        if rng.random() < 0.3:  # a file where a folder was, or a folder where a file was: a commit of its own
            swap = {k: None for k in files if k.startswith("d/") or k == "d"}
            swap.update({"d/x.yaml": "back\n"} if "d" in files else {"d": "now a file\n"})  # in the same commit
            for k, v in swap.items():
                files.pop(k, None) if v is None else files.__setitem__(k, (v, FileMode.BLOB))
            commits.append(commit_files(repo, swap))
        change: dict = {}
        modes: dict = {}
        for name in rng.sample([x for x in names if not (x.startswith("d/") and "d" in files)], 3):
            roll = rng.random()
            if name in files and roll < 0.3:
                change[name] = None
                files.pop(name)
            else:
                mode = FileMode.LINK if name == "link" else rng.choice([FileMode.BLOB, FileMode.BLOB_EXECUTABLE])
                change[name], modes[name] = rng.choice(["1\n", "2\n", f"{n}\n"]), mode
                files[name] = (change[name], mode)
        commits.append(commit_files(repo, change, modes=modes))
    for old in rng.sample(commits, 6):
        for new in rng.sample(commits, 6):
            got = GitSource(repo, new).changed_paths(old)
            diff = repo[old].peel(pygit2.Commit).tree.diff_to_tree(repo[new].peel(pygit2.Commit).tree)
            want = {p for d in diff.deltas for p in (d.old_file.path, d.new_file.path) if p}
            assert got == want, (old, new)
            for prefix in ("d", "d/e"):
                sub = GitSource(repo, new, prefix=prefix) if _has(repo, new, prefix) else None
                if sub is not None:
                    assert sub.changed_paths(old) == _diff_under(repo, old, new, prefix)


def _has(repo, commit: str, prefix: str) -> bool:
    try:
        return repo[commit].peel(pygit2.Commit).tree[prefix].filemode == FileMode.TREE
    except KeyError:
        return False


def _diff_under(repo, old: str, new: str, prefix: str) -> set[str]:
    def sub(commit):
        return repo[commit].peel(pygit2.Commit).tree[prefix] if _has(repo, commit, prefix) else None

    a, b = sub(old), sub(new)
    diff = b.diff_to_tree() if a is None else a.diff_to_tree(b)  # b exists (the caller checked)
    return {p for d in diff.deltas for p in (d.old_file.path, d.new_file.path) if p}

def test_materialise_writes_the_subtree_once(tmp_path):
    repo = pygit2.init_repository(str(tmp_path / "r.git"), bare=True, initial_head="main")
    repo_files = {"p/run.sh": "#!/bin/sh\necho hi\n", "p/d/a.yaml": "a: 1\n", "p/link": "d/a.yaml", "top.yaml": "t\n"}
    commit_files(repo, repo_files, modes={"p/run.sh": FileMode.BLOB_EXECUTABLE, "p/link": FileMode.LINK})
    source = GitSource(repo, str(repo.head.target), prefix="p")
    dest = tmp_path / "checkouts" / source.commit

    assert source.materialise(dest) == dest
    assert (dest / "d" / "a.yaml").read_text() == "a: 1\n"
    assert os.access(dest / "run.sh", os.X_OK)
    assert os.readlink(dest / "link") == "d/a.yaml" and (dest / "link").read_text() == "a: 1\n"
    assert not (dest / "top.yaml").exists()
    assert (dest / COMPLETE_MARK).read_text().strip() == source.commit
    assert sorted(p.name for p in dest.parent.iterdir()) == [dest.name]  # the temp folder was renamed

    (dest / "d" / "a.yaml").unlink()
    source.materialise(dest)  # complete already: left alone
    assert not (dest / "d" / "a.yaml").exists()


def test_work_tree_source_hashes_like_git_and_skips_state_and_links(tmp_path):
    root = tmp_path / "plain"
    write_files(root, {"a.yaml": "a: 1\n", "d/b.yml": "b: 2\n", ".reconciler/cache/x.yaml": "x\n",
                       "d/.git/config.yaml": "g\n", "sub/.reconciler/y.yaml": "y\n"})
    os.symlink(root / "a.yaml", root / "link.yaml")
    os.symlink(root / "d", root / "linked-dir")

    source = WorkTreeSource(root)

    assert listing(source) == {"a.yaml": blob_id("a: 1\n"), "d/b.yml": blob_id("b: 2\n")}
    assert source.read("d/b.yml") == b"b: 2\n" and source.size("d/b.yml") == 5
    assert source.exists("a.yaml") and not source.exists("link.yaml") and not source.exists("d")
    assert not source.exists("../plain/a.yaml")
    with pytest.raises(FileNotFoundError):
        source.read("../outside.yaml")
    assert source.materialise(tmp_path / "elsewhere") == root.resolve()

    (root / "a.yaml").write_text("a: changed\n")
    assert listing(source)["a.yaml"] == blob_id("a: changed\n")


def test_tokens_in_urls_never_show():
    assert redact_url("https://bot:s3cret@git.example.com/data/platform.git") == "https://***@git.example.com/data/platform.git"
    assert redact_url("git@github.com:data/platform.git") == "git@github.com:data/platform.git"
    assert is_url("git@github.com:data/platform.git") and is_url("file:///srv/repo.git") and not is_url("/srv/repo")


def test_a_new_commit_shares_unchanged_files_with_the_last_checkout(tmp_path):
    repo = pygit2.init_repository(str(tmp_path / "r.git"), bare=True, initial_head="main")
    commit_files(repo, {"p/a.yaml": "a: 1\n", "p/d/b.yaml": "b: 1\n", "p/gone.yaml": "g\n"})
    first = GitSource(repo, str(repo.head.target), prefix="p")
    old = first.materialise(tmp_path / "checkouts" / first.commit)
    commit_files(repo, {"p/a.yaml": "a: 2\n", "p/gone.yaml": None, "p/new.yaml": "n\n"})
    second = GitSource(repo, str(repo.head.target), prefix="p")
    new = second.materialise(tmp_path / "checkouts" / second.commit)

    assert (new / "a.yaml").read_text() == "a: 2\n" and (old / "a.yaml").read_text() == "a: 1\n"
    assert (new / "d" / "b.yaml").read_text() == "b: 1\n"
    assert (new / "d" / "b.yaml").stat().st_ino == (old / "d" / "b.yaml").stat().st_ino  # shared, not copied
    assert (new / "a.yaml").stat().st_ino != (old / "a.yaml").stat().st_ino
    assert not (new / "gone.yaml").exists() and (new / "new.yaml").read_text() == "n\n"
    assert (new / COMPLETE_MARK).read_text().strip() == second.commit
