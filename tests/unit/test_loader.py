"""The loader: which files count, ignore rules as git has them, the parse cache, bundle member paths."""
from __future__ import annotations

import pickle
import sqlite3
import shutil
import subprocess
from pathlib import Path

import pygit2
import pytest

from reconciler.core.documents import Document, FileResult
from reconciler.core import loader, yamlload
from reconciler.core.loader import IgnoreRules, load, load_files, read_member
from reconciler.gitops.source import GitSource, WorkTreeSource
from reconciler.store.doccache import DocCache
from tests.conftest import write_files

DEPOT = "version: v1\ntype: depot\nname: {name}\n"


def write(root: Path, files: dict[str, str | bytes]) -> Path:
    write_files(root, files)
    return root


class RecordingSource(WorkTreeSource):
    """A real folder source that notes which files were read."""

    def __init__(self, root):
        super().__init__(root)
        self.reads: list[str] = []

    def read(self, path):
        self.reads.append(path)
        return super().read(path)


def test_loads_yaml_files_in_path_order_and_keeps_only_artefacts(tmp_path):
    source = WorkTreeSource(write(tmp_path / "repo", {
        "z.yaml": DEPOT.format(name="z"),
        "a/b.yml": DEPOT.format(name="b") + "---\n" + DEPOT.format(name="b2"),
        "a/values.yaml": "replicas: 3\n",  # other YAML, not an artefact
        "a/half.yaml": "type: depot\nname: h\n",  # one of the two keys: the resolver's error, so kept
        "notes.txt": "version: v1\n",
        "data.json": "{}",
        ".reconciler/cache/x.yaml": DEPOT.format(name="state"),
    }))

    result = load(source)

    assert list(result.files) == ["a/b.yml", "a/half.yaml", "a/values.yaml", "z.yaml"]
    assert [(d.file, d.index, d.data["name"]) for d in result.documents] == [
        ("a/b.yml", 0, "b"), ("a/b.yml", 1, "b2"), ("a/half.yaml", 0, "h"), ("z.yaml", 0, "z")]
    assert result.diagnostics == [] and result.broken_files == set()


def test_broken_files_and_their_diagnostics(tmp_path):
    source = WorkTreeSource(write(tmp_path / "repo", {
        "good.yaml": DEPOT.format(name="good"),
        "tabs.yaml": "version: v1\n\ttype: depot\n",
        "dup.yaml": "version: v1\nversion: v2\n",
    }))

    result = load(source)

    assert result.broken_files == {"tabs.yaml", "dup.yaml"}
    assert [d.data["name"] for d in result.documents] == ["good"]
    assert sorted((d.file, d.line) for d in result.diagnostics) == [("dup.yaml", 2), ("tabs.yaml", 2)]


def test_paths_limit_the_tree(tmp_path):
    source = WorkTreeSource(write(tmp_path / "repo", {
        "teams/a/x.yaml": DEPOT.format(name="x"), "teams/ab/y.yaml": DEPOT.format(name="y"),
        "other/z.yaml": DEPOT.format(name="z"), "top.yaml": DEPOT.format(name="t"),
    }))

    assert list(load(source, ["teams/a"]).files) == ["teams/a/x.yaml"]
    assert list(load(source, ["./teams/a/", "top.yaml"]).files) == ["teams/a/x.yaml", "top.yaml"]
    assert len(load(source, ["."]).files) == len(load(source, None).files) == 4


def test_oversized_file_is_refused_before_it_is_read(tmp_path):
    source = RecordingSource(write(tmp_path / "repo", {"big.yaml": "a: 1\n" * 100, "small.yaml": "a: 1\n"}))

    result = load(source, max_bytes=100)

    assert result.broken_files == {"big.yaml"}
    assert result.diagnostics[0].message == "file is 500 bytes, over the 100 bytes limit"
    assert source.reads == ["small.yaml"]


class BatchSource(RecordingSource):
    """Notes, at each read, how many files were parsed before it (parse_file is watched too)."""

    def __init__(self, root, parsed):
        super().__init__(root)
        self.parsed = parsed
        self.parsed_at_read: list[int] = []

    def read(self, path):
        self.parsed_at_read.append(len(self.parsed))
        return super().read(path)


def test_files_are_read_in_batches_then_parsed_with_the_bytes_held_bounded(tmp_path, monkeypatch):
    """load_files reads a batch, then parses it: a batch ends at READ_BATCH files or once it holds
    READ_BATCH_BYTES. What is too large is refused unread and, like a parse, kept in file order; only
    parsed files go into the cache."""
    files = {f"f{i:02}.yaml": DEPOT.format(name=f"d{i:02}") + "description: " + "x" * 60 + "\n" for i in range(7)}
    files["f03.yaml"] = "a: 1\n" * 100  # over the limit below
    parsed = []
    real_parse = yamlload.parse_file  # load_files imports it when it first parses
    monkeypatch.setattr(yamlload, "parse_file", lambda path, *a, **k: parsed.append(path) or real_parse(path, *a, **k))
    monkeypatch.setattr(loader, "READ_BATCH", 3)
    monkeypatch.setattr(loader, "READ_BATCH_BYTES", 150)  # two of these files
    source = BatchSource(write(tmp_path / "repo", files), parsed)
    share = sorted(source.list_files())
    cache = DocCache(tmp_path / "state")

    results = load_files(source, share, max_bytes=300, cache=cache)

    assert [r.path for r in results] == [path for path, _ in share]
    assert source.reads == ["f00.yaml", "f01.yaml", "f02.yaml", "f04.yaml", "f05.yaml", "f06.yaml"]
    # f00+f01 reach the byte budget; f02, f03 (refused unread) and f04 fill three files; f05+f06
    assert source.parsed_at_read == [0, 0, 2, 2, 4, 4]
    assert results[3].broken and "over the 300 bytes limit" in results[3].diagnostics[0].message
    assert [r.documents[0].data["name"] for r in results if not r.broken] == ["d00", "d01", "d02", "d04", "d05", "d06"]
    assert cache.get(share[3][1]) is None and all(cache.get(blob) for path, blob in share if path != "f03.yaml")
    # the same as file by file
    assert results == [loader.load_file(source, path, blob, max_bytes=300) for path, blob in share]


def test_a_git_blob_is_sized_from_its_loose_file_or_its_header(tmp_path):
    """A fresh local commit stores loose objects: a small one is vouched for by its compressed file's size
    (one stat, no header inflated); a file that compresses well enough to hide a large size is asked for its
    size, and refused before it is read; in a packed repository every file is sized from its header."""
    repo = pygit2.init_repository(str(tmp_path / "r"), initial_head="main")
    sig = pygit2.Signature("T", "t@example.com")
    index = pygit2.Index()
    big = "a: 1\n" * 100_000  # 500 kB that zlib squeezes to ~1 kB
    for path, text in {"small.yaml": DEPOT.format(name="s"), "big.yaml": big}.items():
        index.add(pygit2.IndexEntry(path, repo.create_blob(text.encode()), pygit2.enums.FileMode.BLOB))
    commit = str(repo.create_commit("refs/heads/main", sig, sig, "m", index.write_tree(repo), []))

    def loaded(source):
        reads = []
        real = source.read
        source.read = lambda path: (reads.append(path), real(path))[1]
        return load(source, max_bytes=100_000), reads

    loose = GitSource(repo, commit)
    assert loose.fits("small.yaml", 100_000) and not loose.fits("big.yaml", 100_000)
    assert not loose.fits("nowhere.yaml", 100_000)
    result, reads = loaded(loose)
    assert result.broken_files == {"big.yaml"} and reads == ["small.yaml"]
    assert result.diagnostics[0].message == "file is 0.5 MB, over the 100000 bytes limit"
    assert [d.data["name"] for d in result.documents] == ["s"]

    subprocess.run(["git", "-C", str(tmp_path / "r"), "gc", "-q"], check=True)
    packed = GitSource(pygit2.Repository(str(tmp_path / "r")), commit)
    assert not packed.fits("small.yaml", 100_000)  # no loose file: its header tells
    result, reads = loaded(packed)
    assert result.broken_files == {"big.yaml"} and reads == ["small.yaml"]


def test_loads_from_a_git_commit(tmp_path):
    repo = pygit2.init_repository(str(tmp_path / "r.git"), bare=True, initial_head="main")
    sig = pygit2.Signature("T", "t@example.com")
    index = pygit2.Index()
    for path, text in {"p/a.yaml": DEPOT.format(name="a"), "p/.reconcilerignore": "skip/\n",
                       "p/skip/b.yaml": DEPOT.format(name="b"), "c.yaml": DEPOT.format(name="c")}.items():
        index.add(pygit2.IndexEntry(path, repo.create_blob(text.encode()), pygit2.enums.FileMode.BLOB))
    commit = repo.create_commit("refs/heads/main", sig, sig, "m", index.write_tree(repo), [])

    result = load(GitSource(repo, str(commit), prefix="p"))

    assert [(d.file, d.data["name"]) for d in result.documents] == [("a.yaml", "a")]
    assert result.files["a.yaml"].blob_id == str(pygit2.hash(DEPOT.format(name="a").encode()))


IGNORE_PATTERNS = """\
# comments and blank lines are ignored

*.yml
!keep.yml
build/
/anchored.yaml
**/gen/*.yaml
docs/**/draft*.yaml
secret
!secret/ok.yaml
nested/deep/x.yaml
logs/
!logs/important.yaml
tmp*/
\\#hash.yaml
space\\ name.yaml
a/**/b
*.bak.yaml
!/sub/*.bak.yaml
trailing.yaml\\ \\ 
"""

IGNORE_CANDIDATES = [
    "a.yaml", "a.yml", "keep.yml", "sub/keep.yml", "build/x.yaml", "sub/build/y.yaml", "anchored.yaml",
    "sub/anchored.yaml", "gen/a.yaml", "x/gen/b.yaml", "x/gen/c/d.yaml", "docs/draft1.yaml",
    "docs/a/b/draft2.yaml", "docs/final.yaml", "secret/ok.yaml", "secret/no.yaml", "nested/deep/x.yaml",
    "other/nested/deep/x.yaml", "logs/important.yaml", "logs/a.yaml", "tmp1/a.yaml", "tmpfile.yaml",
    "#hash.yaml", "space name.yaml", "a/b", "a/x/y/b/c.yaml", "q.bak.yaml", "sub/q.bak.yaml",
    "sub/d/q.bak.yaml", "trailing.yaml  ",
]


@pytest.mark.skipif(shutil.which("git") is None, reason="the git command is needed to compare with check-ignore")
def test_ignore_rules_agree_with_git_check_ignore(tmp_path):
    root = tmp_path / "repo"
    pygit2.init_repository(str(root))
    write(root, {".gitignore": IGNORE_PATTERNS, ".reconcilerignore": IGNORE_PATTERNS})
    write(root, {path: "a: 1\n" for path in IGNORE_CANDIDATES})
    proc = subprocess.run(["git", "check-ignore", "--stdin", "-z"], cwd=root, capture_output=True,
                          input="\0".join(IGNORE_CANDIDATES).encode() + b"\0")
    assert proc.returncode in (0, 1), proc.stderr
    git_ignored = set(proc.stdout.decode().split("\0")) - {""}

    rules = IgnoreRules(IGNORE_PATTERNS.splitlines())
    ours = {path for path in IGNORE_CANDIDATES if rules.ignored(path)}

    assert ours == git_ignored
    assert 8 < len(ours) < len(IGNORE_CANDIDATES) - 5  # the comparison says something both ways


def test_reconcilerignore_applies_to_loading(tmp_path):
    source = WorkTreeSource(write(tmp_path / "repo", {
        ".reconcilerignore": "drafts/\n*.local.yaml\n!keep.local.yaml\n",
        "drafts/a.yaml": DEPOT.format(name="a"), "b.local.yaml": DEPOT.format(name="b"),
        "keep.local.yaml": DEPOT.format(name="k"), "c.yaml": DEPOT.format(name="c"),
    }))
    assert list(load(source).files) == ["c.yaml", "keep.local.yaml"]


def test_cache_hit_skips_parsing_and_moves_results_to_the_new_path(tmp_path):
    text = DEPOT.format(name="a") + "bad: [\n"
    source = RecordingSource(write(tmp_path / "repo", {"old/a.yaml": text}))
    cache = DocCache(tmp_path / "state")
    first = load(source, cache=cache)
    assert first.broken_files == {"old/a.yaml"} and source.reads == ["old/a.yaml"]

    shutil.move(tmp_path / "repo" / "old", tmp_path / "repo" / "new")  # same blob, another path
    source.reads.clear()
    second = load(source, cache=cache)

    assert source.reads == []
    assert second.broken_files == {"new/a.yaml"}
    assert [(d.file, d.line) for d in second.diagnostics] == [("new/a.yaml", first.diagnostics[0].line)]


def test_cache_result_is_what_the_loader_uses(tmp_path):
    source = RecordingSource(write(tmp_path / "repo", {"a.yaml": DEPOT.format(name="real")}))
    blob = dict(source.list_files())["a.yaml"]
    cache = DocCache(tmp_path / "state")
    cache.put(blob, FileResult("elsewhere.yaml", blob, [Document("elsewhere.yaml", 0, 1, {"version": "v1", "type": "depot",
                                                                                          "name": "cached"}, blob)]))
    result = load(source, cache=cache)
    assert source.reads == []
    assert [(d.file, d.data["name"]) for d in result.documents] == [("a.yaml", "cached")]


def test_doc_cache_round_trip(tmp_path):
    state = tmp_path / "state"
    source = WorkTreeSource(write(tmp_path / "repo", {
        "a.yaml": DEPOT.format(name="a") + "---\n" + DEPOT.format(name="b"), "bad.yaml": "a: 1\na: 2\n"}))
    cache = DocCache(state)
    fresh = load(source, cache=cache)
    assert cache.save() is True
    assert cache.save() is False  # nothing new

    reloaded = DocCache(state)
    assert len(reloaded) == 2
    again = load(source, cache=reloaded)
    assert again.files == fresh.files
    assert reloaded.save() is False  # hits only: nothing to write
    assert {p.name for p in (state / "cache").iterdir()} <= {"documents.sqlite", "documents.sqlite-wal",
                                                            "documents.sqlite-shm"}


def test_doc_cache_ignores_corrupt_and_outdated_files(tmp_path):
    state = tmp_path / "state"
    (state / "cache").mkdir(parents=True)
    cache_file = state / "cache" / "documents.sqlite"
    cache_file.write_bytes(b"certainly not a database" * 100)
    assert len(DocCache(state)) == 0 and DocCache(state).get("x") is None

    cache = DocCache(state)  # written over the corrupt file
    cache.put("blob", FileResult("a.yaml", "blob"))
    assert cache.save()
    assert DocCache(state).get("blob") == FileResult("a.yaml", "blob")

    conn = sqlite3.connect(cache_file)  # another format (an older release, another Python): read as empty
    conn.execute("UPDATE meta SET v = 'old' WHERE k = 'format'")
    conn.commit()
    conn.close()
    assert DocCache(state).get("blob") is None
    cache = DocCache(state)
    cache.put("other", FileResult("b.yaml", "other"))
    assert cache.save()
    assert DocCache(state).get("blob") is None and DocCache(state).get("other") == FileResult("b.yaml", "other")

    conn = sqlite3.connect(cache_file)  # a damaged entry reads as a miss
    conn.execute("UPDATE docs SET v = X'00ff'")
    conn.commit()
    conn.close()
    assert DocCache(state).get("other") is None


def test_doc_cache_keeps_no_code(tmp_path):
    """Entries are marshalled plain data: a cache file someone else wrote cannot run code when read."""
    cache = DocCache(tmp_path)
    cache.put("blob", FileResult("a.yaml", "blob", [Document("a.yaml", 0, 1, {"version": "v1"}, "blob")]))
    cache.save()
    conn = sqlite3.connect(tmp_path / "cache" / "documents.sqlite")
    conn.execute("UPDATE docs SET v = ?", (pickle.dumps(("a.yaml", (), ())),))
    conn.commit()
    conn.close()
    assert DocCache(tmp_path).get("blob") is None


def test_doc_cache_drops_unused_entries_past_its_limit(tmp_path):
    old = DocCache(tmp_path, max_entries=2)
    for blob in ("b1", "b2", "b3"):
        old.put(blob, FileResult(f"{blob}.yaml", blob))
    old.save()
    assert len(DocCache(tmp_path)) == 3  # all used in that run

    cache = DocCache(tmp_path, max_entries=2)
    cache.get("b1")
    cache.put("b4", FileResult("b4.yaml", "b4"))
    cache.save()
    kept = DocCache(tmp_path)
    assert [b for b in ("b1", "b2", "b3", "b4") if kept.get(b) is not None] == ["b1", "b4"]


@pytest.mark.parametrize("base, rel, expected, message", [
    ("bundles/p/bundle.yaml", "depot.yaml", "bundles/p/depot.yaml", None),
    ("bundles/p/bundle.yaml", "./sub/../depot.yaml", "bundles/p/depot.yaml", None),
    ("bundles/p/bundle.yaml", "../shared/wf.yaml", "bundles/shared/wf.yaml", None),
    ("bundle.yaml", "bundles/p/depot.yaml", "bundles/p/depot.yaml", None),
    ("bundles/p/bundle.yaml", "../../../etc/passwd", None, "bundle member '../../../etc/passwd' resolves outside the repository"),
    ("bundles/p/bundle.yaml", "/etc/passwd", None, "bundle member '/etc/passwd' is an absolute path"),
    ("bundles/p/bundle.yaml", "C:\\x.yaml", None, "is an absolute path"),
    ("bundles/p/bundle.yaml", "missing.yaml", None,
     "bundle member file 'missing.yaml' does not exist (looked for bundles/p/missing.yaml)"),
    ("bundles/p/bundle.yaml", "..", None, "does not exist"),
    ("bundles/p/bundle.yaml", "", None, "bundle member file name is empty"),
])
def test_read_member(tmp_path, base, rel, expected, message):
    source = WorkTreeSource(write(tmp_path / "repo", {
        "bundles/p/bundle.yaml": "x: 1\n", "bundles/p/depot.yaml": "x: 1\n", "bundles/shared/wf.yaml": "x: 1\n",
        "bundle.yaml": "x: 1\n"}))
    path, diagnostic = read_member(source, base, rel)
    assert path == expected
    if message is None:
        assert diagnostic is None
    else:
        assert message in diagnostic.message and diagnostic.file == base and diagnostic.is_error
