"""The parse cache: a fresh process reads only the entries it asks for; a large load reads them in one query."""
from reconciler.core.documents import Document, FileResult
from reconciler.core.resolve import Validated
from reconciler.core.resource import JobSpec, Ref
from reconciler.core.diagnostics import warning
from reconciler.store.doccache import DocCache


def result(i: int) -> FileResult:
    return FileResult(f"f{i}.yaml", f"blob{i}", [Document(f"f{i}.yaml", 0, 1, {"version": "v1", "n": i}, f"blob{i}")])


def test_entries_survive_a_new_process_and_are_read_one_by_one_or_all_at_once(tmp_path):
    cache = DocCache(tmp_path)
    for i in range(300):
        cache.put(f"blob{i}", result(i))
    assert cache.save()

    one = DocCache(tmp_path)
    assert one.get("blob7").documents[0].data == {"version": "v1", "n": 7}
    assert len(one._docs) == 1  # only what was asked for was read

    many = DocCache(tmp_path)
    many.prefetch([f"blob{i}" for i in range(300)] + ["unknown"])
    assert len(many._docs) == 300
    assert many.get("blob299").documents[0].data["n"] == 299 and many.get("unknown") is None

    many.put("blob-new", result(1000))  # a small change writes only its entry
    assert many.save() and not many.save()
    assert DocCache(tmp_path).get("blob-new").documents[0].data["n"] == 1000
    assert len(DocCache(tmp_path)) == 301


def test_validation_results_round_trip_with_their_refs_and_diagnostics(tmp_path):
    v = Validated({"type": "workflow", "name": "w"}, "abc", (Ref("read", "depot://d/x", ("a", 0)),),
                  (JobSpec("stack", "s", "j", {"k": 1}, ("workflow", "dag", 0, "spec")),),
                  (warning("careful", path=("name",)),), ("workflow", "default", "w"))
    cache = DocCache(tmp_path)
    cache.put_validated(("blob", 0), v)
    cache.put_validated(("policy-filter", 1, "x = 1"), "")
    cache.save()
    again = DocCache(tmp_path)
    assert again.get_validated(("blob", 0)) == v
    assert again.get_validated(("policy-filter", 1, "x = 1")) == ""
    assert again.get_validated(("blob", 1)) is None


def test_snapshots_are_kept_by_key_and_only_the_newest_few(tmp_path):
    cache = DocCache(tmp_path)
    for i in range(6):
        assert cache.put_snapshot(f"s{i}", bytes([i]))
    again = DocCache(tmp_path)
    assert again.get_snapshot("s5") == b"\x05" and again.get_snapshot("s0") is None


def test_a_cache_file_another_process_is_writing_is_not_taken_for_a_corrupt_one(tmp_path, monkeypatch):
    """Creating a cache whose file holds another format (an older release's) needs the write lock; while
    another connection holds it, the attempt fails as busy and leaves the file alone (up to session 12 it
    deleted the file as if corrupt, under the writer, and made a new one), and a later attempt, once the lock
    is gone, makes the cache."""
    import sqlite3

    from reconciler.store import doccache

    monkeypatch.setattr(doccache, "BUSY_TIMEOUT", 0.05)
    path = tmp_path / "cache" / doccache.CACHE_FILE
    path.parent.mkdir(parents=True)
    other = sqlite3.connect(str(path), isolation_level=None)
    other.execute("PRAGMA journal_mode=WAL")
    other.execute("CREATE TABLE meta (k TEXT PRIMARY KEY, v TEXT)")
    other.execute("INSERT INTO meta VALUES ('format', 'an older one')")
    other.execute("BEGIN IMMEDIATE")  # another process writing
    other.execute("INSERT INTO meta VALUES ('x', 'y')")
    cache = DocCache(tmp_path)
    cache.put_entry("blob", ("a.yaml", (), ()))
    assert not cache.save()  # busy: nothing written, nothing lost
    assert path.exists()
    assert other.execute("SELECT v FROM meta WHERE k = 'x'").fetchone() == ("y",)
    other.execute("COMMIT")
    other.close()
    again = DocCache(tmp_path)
    again.put_entry("blob", ("a.yaml", (), ()))
    assert again.save()
    assert DocCache(tmp_path).has("blob")
