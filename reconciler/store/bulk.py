"""Many rows in one statement: each column sent as one typed list and unnested.

DuckDB's executemany costs ~1 ms a row; a column-wise `INSERT ... SELECT unnest(...)` costs
microseconds. Every store module writes its batches through `insert_rows`.
"""
from __future__ import annotations

from typing import Sequence


def quoted(columns: Sequence[str]) -> str:
    return ", ".join(f'"{c}"' for c in columns)


def insert_rows(conn, table: str, columns: Sequence[str], types: Sequence[str], rows: list[tuple],
                suffix: str = "") -> None:
    """INSERT `rows` (tuples in `columns` order, of DuckDB `types`) into `table`; `suffix` follows the
    SELECT (e.g. an ON CONFLICT clause). Nothing happens for no rows."""
    if not rows:
        return
    select = ", ".join(f"unnest(${i}::{t}[])" for i, t in enumerate(types, start=1))
    conn.execute(f"INSERT INTO {table} ({quoted(columns)}) SELECT {select} {suffix}".rstrip(),
                 [list(column) for column in zip(*rows)])
