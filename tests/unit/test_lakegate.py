"""A lake write connection kept open between runs, and the ways it is given up."""
import duckdb

from reconciler.store import lakegate


def test_a_kept_connection_is_reused_and_given_up_to_a_reader_an_idle_timeout_or_a_request(tmp_path):
    lake = tmp_path / "lake.duckdb"
    lakegate.keep_open(60)
    try:
        conn = lakegate.connect_for_writing(lake)
        conn.execute("CREATE TABLE t AS SELECT 1 AS x")
        lakegate.release(lake, conn)
        assert lakegate.connect_for_writing(lake) is conn  # the next run takes it: no open
        lakegate.release(lake, conn)

        lakegate.Reader(lake, lambda: None).retire()  # this process's query database wants the file
        fresh = lakegate.connect_for_writing(lake)
        assert fresh is not conn
        lakegate.release(lake, fresh)
        assert lakegate.close_idle() == 0  # not idle long enough, nobody asked
        lakegate.ask_release(lake)  # another process asks (a `reconciler query`)
        assert lakegate.close_idle() == 1 and not (tmp_path / "lake.duckdb.wanted").exists()

        conn = lakegate.connect_for_writing(lake)
        lakegate.release(lake, conn)
        assert lakegate.close_idle(now=10 ** 9) == 1  # idle past its time
        duckdb.connect(str(lake), read_only=True).close()  # closed for real: another open works
    finally:
        lakegate.keep_open(0)
        lakegate.close_idle(now=10 ** 9)


def test_without_keeping_a_write_connection_closes_on_its_own_thread_and_opens_can_start_ahead(tmp_path):
    lake = tmp_path / "lake.duckdb"
    conn = lakegate.connect_for_writing(lake)
    conn.execute("CREATE TABLE t AS SELECT 1 AS x")
    lakegate.release(lake, conn)  # closed on a thread: the next open in this process waits for it
    lakegate.drop_held(lake)  # as a reader does: no close or open in progress afterwards
    duckdb.connect(str(lake), read_only=True).close()

    lakegate.open_ahead(lake)
    ahead = lakegate.connect_for_writing(lake)  # waits for the open in progress and takes it
    assert ahead.execute("SELECT x FROM t").fetchall() == [(1,)]
    lakegate.release(lake, ahead)
    lakegate.open_ahead(lake)
    lakegate.drop_held(lake)  # unused: a reader closes it
    duckdb.connect(str(lake), read_only=True).close()


def test_held_between_writes_reuses_one_connection_and_closes_it_at_the_end(tmp_path):
    """A CLI apply's workflow runs share one lake connection (cli/commands.py apply); one asked for by
    another process is given up at the end of the write in hand, not held."""
    lake = tmp_path / "lake.duckdb"
    with lakegate.held_between_writes(lake):
        first = lakegate.connect_for_writing(lake)
        first.execute("CREATE TABLE t AS SELECT 1 AS x")
        lakegate.release(lake, first)
        second = lakegate.connect_for_writing(lake)
        assert second is first  # no close and open between two runs
        lakegate.ask_release(lake)  # a `reconciler query` in another process wants the file
        lakegate.release(lake, second)  # so it is closed, not held
        assert not (tmp_path / "lake.duckdb.wanted").exists()
        third = lakegate.connect_for_writing(lake)
        assert third is not first
        lakegate.release(lake, third)  # held again: nobody asks now
        assert lakegate.connect_for_writing(lake) is third
        lakegate.release(lake, third)
    assert lakegate._keep_seconds == 0  # as before the block
    duckdb.connect(str(lake), read_only=True).close()  # closed for real at the end: another open works
