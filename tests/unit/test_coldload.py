"""The cold load on several processes reads exactly what the sequential load reads, and fills the cache."""
import os

import pytest

from reconciler.core.loader import load
from reconciler.core.resolve import filter_key
from reconciler.engine import coldload
from reconciler.gitops.source import GitSource
from reconciler.store.doccache import DocCache
from tests.cli import repos
from tests.conftest import GitRepo


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


class FailsInChildren(GitSource):
    """Reading fails in any process but the test's own: the children die, the parent must cover for them."""

    parent = os.getpid()

    def read(self, path):
        if os.getpid() != self.parent:
            raise RuntimeError("no reading here")
        return super().read(path)


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
