"""New DuckDB files are made whole beside their name and linked into place (store/dbfile.py)."""
from __future__ import annotations

import subprocess
import sys

import duckdb

from reconciler.store.dbfile import ensure_created


def test_a_new_file_is_a_valid_empty_database_and_nothing_is_left_beside_it(tmp_path):
    path = tmp_path / "lake.duckdb"
    ensure_created(path)
    duckdb.connect(str(path)).close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lake.duckdb"]


def test_an_existing_file_is_never_replaced(tmp_path):
    path = tmp_path / "lake.duckdb"
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE kept AS SELECT 42 AS x")
    con.close()
    ensure_created(path)
    con = duckdb.connect(str(path))
    assert con.execute("SELECT x FROM kept").fetchone() == (42,)
    con.close()


def test_a_creator_killed_half_way_leaves_only_a_temporary_file_which_the_next_one_removes(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    half = tmp_path / f".lake.duckdb.new-{pid}-1"
    half.write_bytes(b"\0" * 4096)  # what DuckDB had written when the kill came: not a database yet
    path = tmp_path / "lake.duckdb"
    ensure_created(path)
    duckdb.connect(str(path)).close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lake.duckdb"]
