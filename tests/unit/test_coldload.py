"""The cold load on several processes reads exactly what the sequential load reads, and fills the cache."""
import os

import pytest

from reconciler.core.loader import load
from reconciler.core.resolve import filter_key
from reconciler.engine import coldload
from reconciler.gitops.source import GitSource
from reconciler.store.doccache import DocCache
from tests.cli import repos
from tests.conftest import GitRepo, unreadable_in_children


@pytest.fixture
def repo(tmp_path):
    files = repos.basic(**repos.depots(40))
    files["broken/dup.yaml"] = "version: v1\ntype: depot\nname: a\nname: b\n"
    files["broken/syntax.yaml"] = "version: v1\ntype: [\n"
    files["multi.yaml"] = repos.DEPOT.replace("name: raw", "name: m1") + "---\n" + repos.DEPOT.replace("name: raw", "name: m2")
    files["invalid.yaml"] = repos.DEPOT.replace("kind: file", "kind: nosuchkind")
    files["notes.yaml"] = "just: data\n"
    files["policies/eu.yaml"] = repos.POLICY.replace("name: mask-cards", "name: eu-only").replace(
        "  mask:\n    - {columns: [card_number], with: last4}", "  filter: \"currency = 'EUR'\"")
    g = GitRepo(tmp_path / "repo")
    g.commit(files)
    return g


def source_of(g):
    return GitSource(g.repo, str(g.repo.head.target))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_workers_load_what_one_process_loads_and_fill_the_cache(repo, tmp_path, monkeypatch):
    monkeypatch.setattr(coldload, "MIN_FILES", 1)
    sequential = load(source_of(repo), None, cache=DocCache(tmp_path / "one"))
    cache = DocCache(tmp_path / "three")
    parallel = coldload.load_cold(source_of(repo), None, cache, tmp_path / "three", workers=3)
    assert parallel.files == sequential.files
    assert parallel.diagnostics == sequential.diagnostics
    cache.save()
    # every file and every artefact's validation is in the cache for the next process, children's shares too
    again = DocCache(tmp_path / "three")
    for path, result in sequential.files.items():
        assert again.get(result.blob_id) == result, path
        for doc in result.documents:
            if doc.is_artefact and not result.broken:
                assert again.get_validated((doc.blob_id, doc.index)) is not None, path
    # policies' row filters were checked by the workers too: resolving needs no SQL parser here
    assert again.get_validated(filter_key("currency = 'EUR'")) == ""


FailsInChildren = unreadable_in_children(GitSource)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_failed_worker_share_is_loaded_by_this_process(repo, tmp_path, monkeypatch):
    monkeypatch.setattr(coldload, "MIN_FILES", 1)
    sequential = load(source_of(repo), None)
    source = FailsInChildren(repo.repo, str(repo.repo.head.target))
    parallel = coldload.load_cold(source, None, DocCache(tmp_path / "s"), tmp_path / "s", workers=2)
    assert parallel.files == sequential.files


def test_few_files_or_one_cpu_load_in_this_process(repo, tmp_path, monkeypatch):
    forks = []
    monkeypatch.setattr(os, "fork", lambda: forks.append(1) or pytest.fail("forked"))
    coldload.load_cold(source_of(repo), None, DocCache(tmp_path / "a"), tmp_path / "a", workers=4)  # < MIN_FILES
    monkeypatch.setattr(coldload, "MIN_FILES", 1)
    coldload.load_cold(source_of(repo), None, DocCache(tmp_path / "b"), tmp_path / "b", workers=1)
    assert forks == []


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_workers_results_are_taken_as_each_record_completes(tmp_path):
    """The parent takes a worker's chunks while the worker still writes: a record only once it is whole, none
    after one that does not load, and its reads never move the offset the worker writes at."""
    import marshal
    import struct
    import tempfile

    from reconciler.core.yamlload import parse_file
    from reconciler.store.doccache import entry_of

    def record(n: int) -> bytes:
        result = parse_file(f"d{n}.yaml", f"version: v1\ntype: depot\nname: d{n}\n".encode(), f"blob{n}")
        data = marshal.dumps((True, [(result.path, result.blob_id, entry_of(result), [])]))
        return struct.pack("<Q", len(data)) + data

    out = tempfile.TemporaryFile()
    go_r, go_w = os.pipe()  # parent -> child: write the next piece
    ack_r, ack_w = os.pipe()  # child -> parent: written
    second = record(2)
    pieces = [record(1), second[:20], second[20:], struct.pack("<Q", 3) + b"xyz", record(4)]
    pid = os.fork()
    if pid == 0:
        try:
            for piece in pieces:
                os.read(go_r, 1)
                out.write(piece)
                out.flush()
                os.write(ack_w, b".")
        finally:
            os._exit(0)
    cache = DocCache(tmp_path / "c")
    results = coldload._Results(out)
    taken = []
    for piece in pieces:
        os.write(go_w, b".")
        os.read(ack_r, 1)
        results.take_ready(cache)
        taken.append(sorted(b for b in ("blob1", "blob2", "blob4") if cache.has(b)))
    os.waitpid(pid, 0)
    assert taken == [["blob1"], ["blob1"], ["blob1", "blob2"], ["blob1", "blob2"], ["blob1", "blob2"]]
    assert results.bad
    out.seek(0)
    assert out.read() == b"".join(pieces)  # the child's writes all landed where it meant them
    results.close()
