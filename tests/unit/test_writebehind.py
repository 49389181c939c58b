"""Write-behind children of one-shot commands: their writes are on disk once the command has ended."""
import os
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from reconciler.store import writebehind
from reconciler.store.doccache import DocCache


@pytest.fixture
def one_shot(monkeypatch):
    monkeypatch.setattr(writebehind, "_one_shot", True)
    monkeypatch.setattr(writebehind, "_retained", [])
    yield
    writebehind.settle()


needs_fork = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")


@pytest.fixture
def queues(one_shot, monkeypatch):
    """Writes are queued (settle() runs them here: nothing forks), also when earlier tests left a thread."""
    monkeypatch.setattr(writebehind, "can_fork", lambda: True)


def test_a_queued_write_is_on_disk_once_settled(queues, tmp_path):
    target = tmp_path / "out.txt"
    assert writebehind.write_behind(lambda: target.write_text("written later"), tmp_path)
    assert not target.exists() and writebehind.pending() == 1
    writebehind.settle()
    assert target.read_text() == "written later"
    assert writebehind.pending() == 0


def test_a_failing_write_loses_only_itself(queues, tmp_path):
    def fails():
        raise RuntimeError("disk full")

    target = tmp_path / "out.txt"
    writebehind.write_behind(fails, tmp_path)
    writebehind.write_behind(lambda: target.write_text("still written"), tmp_path)
    writebehind.settle()  # no exception reaches the command
    assert target.read_text() == "still written"


def test_outside_a_one_shot_command_it_writes_in_line(tmp_path):
    target = tmp_path / "out.txt"
    assert not writebehind.write_behind(lambda: target.write_text("here"), tmp_path)
    assert target.read_text() == "here"


def test_with_another_thread_running_it_writes_in_line(one_shot, tmp_path):
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait)
    thread.start()
    try:
        target = tmp_path / "out.txt"
        assert not writebehind.write_behind(lambda: target.write_text("here"), tmp_path)
        assert target.read_text() == "here"
    finally:
        stop.set()
        thread.join()


def test_turned_off_by_the_environment(one_shot, tmp_path, monkeypatch):
    monkeypatch.setenv("RECONCILER_NO_FORK", "1")
    target = tmp_path / "out.txt"
    assert not writebehind.write_behind(lambda: target.write_text("here"), tmp_path)
    assert target.read_text() == "here"


def test_a_document_cache_saved_behind_is_complete_after_settle(queues, tmp_path):
    cache = DocCache(tmp_path)
    entries = {f"blob{i}": (f"f{i}.yaml", (), ()) for i in range(200)}
    for blob, entry in entries.items():
        cache.put_entry(blob, entry)
    assert cache.save(behind=True)
    assert not cache.dirty  # handed over: this process does not write them again
    writebehind.settle()
    again = DocCache(tmp_path)
    again.prefetch(list(entries))
    assert all(again.has(blob) for blob in entries)


def test_retain_keeps_objects_only_in_a_one_shot_command(monkeypatch):
    monkeypatch.setattr(writebehind, "_retained", [])
    writebehind.retain("not kept")
    assert writebehind._retained == []
    monkeypatch.setattr(writebehind, "_one_shot", True)
    writebehind.retain("kept")
    assert writebehind._retained == ["kept"]


def _finish_with(tmp_path, writes: str) -> subprocess.CompletedProcess:
    """A fresh one-shot process (this one may have threads of earlier tests, and then nothing forks) that
    queues `writes` (code using `cache`, `go` and `Path`), prints, and ends with finish() as the CLI does."""
    code = textwrap.dedent(f"""
        import time
        from pathlib import Path
        from reconciler.store import writebehind

        def wait_for(path):  # the test says when: no timing in the test
            deadline = time.monotonic() + 60
            while not path.exists() and time.monotonic() < deadline:
                time.sleep(0.01)

        writebehind.one_shot()
        assert writebehind.writes_behind()
        cache, go = Path({str(tmp_path / "state" / "cache")!r}), Path({str(tmp_path / "go")!r})
        cache.mkdir(parents=True, exist_ok=True)
    """) + textwrap.dedent(writes) + textwrap.dedent("""
        print("answered", flush=True)
        writebehind.finish(0)
    """)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)


@needs_fork
def test_finish_leaves_before_its_writes_and_the_next_reader_waits_for_them(tmp_path):
    """finish() hands the queued writes to a detached child: the command's output pipe closes at once (the
    child holds none of it), and wait_for_writers, which every cache reader calls first, returns only once
    the child has written."""
    p = _finish_with(tmp_path, """
        writebehind.write_behind(lambda: (wait_for(go), (cache / "memo").write_text("whole")), cache)
    """)
    assert p.returncode == 0 and p.stdout == "answered\n", p.stderr
    memo = tmp_path / "state" / "cache" / "memo"
    assert not memo.exists()  # the child waits for `go`, and the command has answered already
    (tmp_path / "go").touch()
    writebehind._waited.discard(str(memo.parent))
    writebehind.wait_for_writers(memo.parent)
    assert memo.read_text() == "whole"


@needs_fork
def test_a_writer_whose_state_dir_was_removed_writes_nothing_there(tmp_path):
    """`rm -rf STATE` while the writer waits: it must not make the directory again (a next command would
    find caches in what its user removed), nor write into a new one made meanwhile."""
    import shutil

    done = tmp_path / "elsewhere"
    done.mkdir()
    p = _finish_with(tmp_path, f"""
        from reconciler.store.doccache import DocCache
        from reconciler.store.planmemo import PlanMemo

        docs = DocCache(cache.parent)
        docs.put_entry("blob1", ("f.yaml", (), ()))
        writebehind.write_behind(lambda: wait_for(go), cache)
        writebehind.write_behind(docs.split_off().save, cache)
        writebehind.write_behind(lambda: PlanMemo(cache.parent).put(("k", 1), {{"actions": []}}), cache)
        writebehind.write_behind(lambda: (Path({str(done)!r}) / "done").touch(), Path({str(done)!r}))
    """)
    assert p.returncode == 0, p.stderr
    shutil.rmtree(tmp_path / "state")
    (tmp_path / "go").touch()
    deadline = time.monotonic() + 60
    while not (done / "done").exists() and time.monotonic() < deadline:  # the writer's last write
        time.sleep(0.01)
    assert (done / "done").exists()
    assert not (tmp_path / "state").exists()
