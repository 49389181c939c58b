"""Column lineage's plain path (stacks/lineage.py `_plain_lineage`) against sqlglot's lineage.

The plain path traces simple steps from sqlglot's parse alone; it must report exactly what sqlglot's
lineage reports for them, and step aside (None) for everything it does not cover. Each case here runs
both ways: where the plain path answers, the answers must be equal; the cases marked plain must be
answered by it (else the fast path silently stopped being used), the others must not."""
from __future__ import annotations

import pytest

pytest.importorskip("sqlglot")

from reconciler.stacks.lineage import _plain_lineage, _traced_lineage, column_lineage  # noqa: E402

RAW = {"id": "BIGINT", "ts": "TIMESTAMP", "Amount": "DECIMAL(12,2)", "currency": "VARCHAR",
       "merchant_id": "VARCHAR", "status": "VARCHAR", "tags": "VARCHAR[]"}
MERCHANTS = {"id": "VARCHAR", "name": "VARCHAR", "mcc": "INTEGER", "country": "VARCHAR"}
INPUTS = {"raw": "depot://shop/raw", "merchants": "depot://shop/merchants"}
SCHEMAS = {"raw": RAW, "merchants": MERCHANTS}

# (steps, output columns as DuckDB names them, plain?) ; the output is the last step
CASES = [
    # one input, columns, expressions, aggregates
    ([("s", "SELECT * FROM raw WHERE Amount > 0")], list(RAW), True),
    ([("s", "SELECT id, amount, currency FROM raw")], ["id", "amount", "currency"], True),
    ([("s", "SELECT ID, AMOUNT AS amt FROM raw")], ["ID", "amt"], True),
    ([("s", 'SELECT "Amount", "id" AS "Key" FROM raw')], ["Amount", "Key"], True),
    ([("s", "SELECT merchant_id, currency, count(*) AS n, sum(Amount) AS total FROM raw GROUP BY ALL")],
     ["merchant_id", "currency", "n", "total"], True),
    ([("s", "SELECT CAST(ts AS DATE) AS day, round(avg(amount), 2) AS avg_amount FROM raw GROUP BY 1")],
     ["day", "avg_amount"], True),
    ([("s", "SELECT id, CASE WHEN status = 'approved' THEN amount ELSE 0 END AS approved FROM raw")],
     ["id", "approved"], True),
    ([("s", "SELECT id, coalesce(currency, 'USD') || ':' || merchant_id AS k, 42 AS answer, "
            "current_timestamp AS loaded_at FROM raw")], ["id", "k", "answer", "loaded_at"], True),
    ([("s", "SELECT DISTINCT currency FROM raw ORDER BY currency LIMIT 5")], ["currency"], True),
    ([("s", "SELECT raw.id, raw.amount FROM raw")], ["id", "amount"], True),
    ([("s", "SELECT 1 AS id, 'x' AS label, current_date AS day")], ["id", "label", "day"], True),
    ([("s", "SELECT r.*, 1 AS one FROM raw AS r")], list(RAW) + ["one"], True),
    ([("s", "SELECT *, amount * 2 AS doubled FROM raw")], list(RAW) + ["doubled"], True),
    ([("s", "SELECT id, amount AS amount FROM raw")], ["id", "amount"], True),
    ([("s", "SELECT id, CAST(amount AS DOUBLE) AS amount FROM raw")], ["id", "amount"], True),
    ([("s", "SELECT id, tags[1] AS first_tag, list_contains(tags, 'vip') AS vip FROM raw")],
     ["id", "first_tag", "vip"], True),
    ([("s", "SELECT count(*) AS n, count(DISTINCT merchant_id) AS merchants FROM raw "
            "WHERE amount > 0 HAVING count(*) > 1")], ["n", "merchants"], True),
    # functions, filters, casts, windows and clauses around the columns: every column in a projection counts
    ([("s", "SELECT count(*) FILTER (WHERE status = 'x') AS n, sum(amount) FILTER (WHERE currency = 'EUR') AS eur "
            "FROM raw")], ["n", "eur"], True),
    ([("s", "SELECT EXTRACT(year FROM ts) AS y, date_trunc('month', ts) AS m, ts::DATE AS d, "
            "ts + INTERVAL 1 DAY AS next FROM raw")], ["y", "m", "d", "next"], True),
    ([("s", "SELECT id IN (1, 2) AS small, amount BETWEEN 1 AND currency::INT AS mid, NOT (status = 'ok') AS bad "
            "FROM raw")], ["small", "mid", "bad"], True),
    ([("s", "SELECT string_agg(currency, ',' ORDER BY ts) AS cs, list(id ORDER BY amount DESC) AS ids, "
            "arg_max(status, ts) AS last FROM raw")], ["cs", "ids", "last"], True),
    ([("s", "SELECT DISTINCT ON (merchant_id) merchant_id, amount FROM raw ORDER BY merchant_id, ts DESC")],
     ["merchant_id", "amount"], True),
    ([("s", "SELECT id, lag(amount) OVER (PARTITION BY merchant_id ORDER BY ts ROWS BETWEEN 1 PRECEDING AND "
            "CURRENT ROW) AS prev, CASE status WHEN 'a' THEN amount ELSE -amount END AS signed FROM raw "
            "ORDER BY id DESC NULLS LAST LIMIT 10 OFFSET 2")], ["id", "prev", "signed"], True),
    # joins
    ([("s", "SELECT t.id, CAST(t.amount AS DECIMAL(12, 2)) AS amount, m.name AS merchant_name, m.mcc, "
            "t.currency FROM raw AS t JOIN merchants AS m ON m.id = t.merchant_id")],
     ["id", "amount", "merchant_name", "mcc", "currency"], True),
    ([("s", "SELECT name, amount FROM raw JOIN merchants ON merchants.id = raw.merchant_id")],
     ["name", "amount"], True),
    ([("s", "SELECT a.id, b.id AS other FROM raw a LEFT JOIN raw b ON a.id = b.id + 1")], ["id", "other"], True),
    ([("s", "SELECT m.*, t.amount FROM raw t JOIN merchants m ON m.id = t.merchant_id")],
     list(MERCHANTS) + ["amount"], True),
    # chains of steps
    ([("joined", "SELECT t.id, t.amount, m.name AS merchant, m.country FROM raw t "
                 "JOIN merchants m ON m.id = t.merchant_id"),
      ("by_country", "SELECT country, sum(amount) AS total, count(*) AS n, "
                     "max(merchant || '@' || country) AS label FROM joined GROUP BY country")],
     ["country", "total", "n", "label"], True),
    ([("a", "SELECT * FROM raw WHERE amount > 0"), ("b", "SELECT *, 1 AS one FROM a")], list(RAW) + ["one"], True),
    ([("a", "SELECT id, amount * 2 AS x FROM raw"), ("b", "SELECT x + id AS y FROM a"),
      ("c", "SELECT y, y * 2 AS z FROM b")], ["y", "z"], True),
    ([("a", "SELECT id AS k, currency FROM raw"), ("b", "SELECT a.k, m.name FROM a JOIN merchants m ON m.id = a.k")],
     ["k", "name"], True),
    # what the plain path leaves to sqlglot
    ([("s", "SELECT id, (SELECT max(amount) FROM raw) AS top FROM raw")], ["id", "top"], False),
    ([("s", "WITH x AS (SELECT id FROM raw) SELECT id FROM x")], ["id"], False),
    ([("s", "SELECT id FROM raw UNION ALL SELECT id FROM raw")], ["id"], False),
    ([("s", "SELECT amount * 2 AS d, d + 1 AS e FROM raw")], ["d", "e"], False),
    ([("s", "SELECT id + 1 FROM raw")], ["(id + 1)"], False),
    ([("s", "SELECT id, sum(amount) OVER w AS running FROM raw WINDOW w AS (PARTITION BY merchant_id ORDER BY ts)")],
     ["id", "running"], False),
    ([("s", "SELECT * EXCLUDE (tags) FROM raw")], [c for c in RAW if c != "tags"], False),
    ([("s", "SELECT id, row_number() OVER (PARTITION BY merchant_id ORDER BY ts) AS rn, "
            "sum(amount) OVER (PARTITION BY merchant_id) AS total FROM raw QUALIFY rn = 1")],
     ["id", "rn", "total"], True),
    ([("s", "SELECT id FROM raw JOIN merchants ON merchants.id = raw.merchant_id")], ["id"], False),
    ([("s", "SELECT x FROM raw")], ["x"], False),
    ([("s", "SELECT id FROM elsewhere")], ["id"], False),
    ([("s", "SELECT id, name FROM raw, merchants")], ["id", "name"], False),
    ([("s", "SELECT *, id FROM raw")], list(RAW) + ["id_1"], False),
    ([("s", "SELECT * FROM read_csv('x.csv')")], ["a"], False),
    ([("s", "SELECT list_transform(tags, t -> upper(t)) AS up FROM raw")], ["up"], False),
    ([("s", "SELECT COLUMNS('a.*') FROM raw")], ["amount"], False),
    ([("s", "SELEC garbage ((")], ["x"], False),
]


def _ids():
    return [steps[-1][1][:60] for steps, _, _ in CASES]


@pytest.mark.parametrize("steps,columns,plain", CASES, ids=_ids())
def test_the_plain_path_answers_what_sqlglot_answers(steps, columns, plain):
    by_input = {k.lower(): v for k, v in INPUTS.items()}
    output = steps[-1][0]
    fast = _plain_lineage(steps, by_input, output, columns, SCHEMAS)
    assert (fast is not None) == plain, fast
    traced = _traced_lineage(steps, INPUTS, output, columns, SCHEMAS)
    if fast is not None:
        assert fast == traced
    assert column_lineage(steps, INPUTS, output, columns, SCHEMAS) == traced


def test_without_schemas_a_single_input_is_plain_and_a_star_is_not():
    by_input = {"raw": "depot://shop/raw"}
    steps = [("s", "SELECT id, sum(amount) AS total FROM raw GROUP BY id")]
    assert _plain_lineage(steps, by_input, "s", ["id", "total"], {}) == _traced_lineage(
        steps, {"raw": "depot://shop/raw"}, "s", ["id", "total"], {}) == {
        "id": [("depot://shop/raw", "id")], "total": [("depot://shop/raw", "amount")]}
    assert _plain_lineage([("s", "SELECT * FROM raw")], by_input, "s", ["id"], {}) is None


def test_a_step_after_the_output_is_not_read():
    """The output is an earlier step: later steps (even ones the plain path cannot trace) do not matter."""
    by_input = {"raw": "depot://shop/raw"}
    steps = [("a", "SELECT id FROM raw"), ("b", "WITH x AS (SELECT 1) SELECT * FROM x")]
    assert _plain_lineage(steps, by_input, "a", ["id"], {"raw": RAW}) == {"id": [("depot://shop/raw", "id")]}
