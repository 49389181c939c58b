"""The parse cache: a small change is appended as a delta, not a rewrite of the whole file."""
from reconciler.core.documents import Document, FileResult
from reconciler.store.doccache import DocCache


def result(i: int) -> FileResult:
    return FileResult(f"f{i}.yaml", f"blob{i}", [Document(f"f{i}.yaml", 0, 1, {"version": "v1", "n": i}, f"blob{i}")])


def test_small_saves_go_to_a_delta_and_big_ones_fold_it_in(tmp_path):
    cache = DocCache(tmp_path)
    for i in range(100):
        cache.put(f"blob{i}", result(i))
    assert cache.save()
    main = cache.path.stat()
    cache = DocCache(tmp_path)
    cache.put("blob-new", result(1000))
    cache.save()
    assert cache.delta_path.exists()
    assert cache.path.stat().st_mtime_ns == main.st_mtime_ns  # the big file was not rewritten
    again = DocCache(tmp_path)
    assert again.get("blob-new").documents[0].data == {"version": "v1", "n": 1000}
    assert again.get("blob5").documents[0].data["n"] == 5
    for i in range(200, 260):  # a large change: everything folds into the main file
        again.put(f"blob{i}", result(i))
    again.save()
    assert not again.delta_path.exists()
    last = DocCache(tmp_path)
    assert last.get("blob-new") is not None and last.get("blob259") is not None and len(last) == 161
