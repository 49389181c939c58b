"""Write-behind children of one-shot commands: their writes are on disk once the command has ended."""
import os
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


@needs_fork
def test_a_write_behind_is_on_disk_once_settled(one_shot, tmp_path):
    target = tmp_path / "out.txt"

    def slow_write():
        time.sleep(0.3)  # not a timing assertion: without the wait in settle() the file would not be there yet
        target.write_text("written by the child")

    forked = writebehind.write_behind(slow_write)
    assert forked == writebehind.can_fork()
    writebehind.settle()
    assert target.read_text() == "written by the child"
    assert writebehind.pending() == 0


@needs_fork
def test_a_failing_child_loses_only_its_write(one_shot, tmp_path):
    def fails():
        raise RuntimeError("disk full")

    if writebehind.can_fork():
        assert writebehind.write_behind(fails)
    writebehind.settle()  # no exception reaches the command


def test_outside_a_one_shot_command_it_writes_in_line(tmp_path):
    target = tmp_path / "out.txt"
    assert not writebehind.write_behind(lambda: target.write_text("here"))
    assert target.read_text() == "here"


def test_with_another_thread_running_it_writes_in_line(one_shot, tmp_path):
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait)
    thread.start()
    try:
        target = tmp_path / "out.txt"
        assert not writebehind.write_behind(lambda: target.write_text("here"))
        assert target.read_text() == "here"
    finally:
        stop.set()
        thread.join()


def test_turned_off_by_the_environment(one_shot, tmp_path, monkeypatch):
    monkeypatch.setenv("RECONCILER_NO_FORK", "1")
    target = tmp_path / "out.txt"
    assert not writebehind.write_behind(lambda: target.write_text("here"))
    assert target.read_text() == "here"


@needs_fork
def test_a_document_cache_saved_behind_is_complete_after_settle(one_shot, tmp_path):
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


@needs_fork
def test_a_plan_memo_written_behind_holds_the_access_or_nothing(tmp_path):
    """PlanMemo.put_behind: the child marshals the plan, the access arrives later through a pipe; no access
    (its making failed) means no memo, and the command's end does not hang on the waiting child. Run in a
    fresh process: this one may have threads of earlier tests, and then nothing forks."""
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent(f"""
        from pathlib import Path
        from reconciler.core.plan import Action, Plan
        from reconciler.store import writebehind
        from reconciler.store.planmemo import PlanMemo

        writebehind.one_shot()
        assert writebehind.writes_behind()
        memo = PlanMemo(Path({str(tmp_path)!r}))
        plan = Plan(actions=[Action(id="policy:p", action="create", type="policy", name="p")], commit="c1")
        access = [{{"subject": "ann", "dataset": "lake://ws/t", "change": "gain", "detail": "reads a"}}]
        finish = memo.put_behind(("k", 1), plan)
        assert finish is not None and writebehind.pending() == 1
        finish(access)
        writebehind.settle()
        got = memo.get(("k", 1))
        assert got["access"] == access and got["commit"] == "c1" and got["actions"][0]["id"] == "policy:p"
        finish = memo.put_behind(("k", 2), plan)
        finish(None)  # the access diff raised
        writebehind.settle()
        assert memo.get(("k", 2)) is None and memo.get(("k", 1)) is not None
        print("ok")
    """)
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and p.stdout.strip() == "ok", p.stderr
