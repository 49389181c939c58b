"""The quality and profile stacks on real lake tables and depot files."""
from __future__ import annotations

import json

import pytest

from reconciler.stacks.profile import ProfileStack
from reconciler.stacks.quality import QualityStack
from tests.unit.test_datasets import TestLake, depot, make_ctx

PAYMENTS = """
CREATE SCHEMA ws;
CREATE TABLE ws.payments AS SELECT * FROM (VALUES
    (1, 10.0::DECIMAL(10,2), 'USD', 'M1', now() - INTERVAL 2 HOUR, DATE '2025-01-01'),
    (2, 20.5::DECIMAL(10,2), 'EUR', 'M2', now() - INTERVAL 3 DAY, DATE '2025-01-02'),
    (3, NULL, 'JPY', 'M9', now() - INTERVAL 1 HOUR, DATE '2025-01-02'),
    (3, 7.25::DECIMAL(10,2), NULL, NULL, NULL, NULL)
) v(id, amount, currency, merchant_id, paid_at, day);
"""


@pytest.fixture
def lake(tmp_path):
    lake = TestLake(tmp_path / "lake.duckdb")
    lake.conn.execute(PAYMENTS)
    yield lake
    lake.conn.close()


@pytest.fixture
def merchants(tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "merchants.csv").write_text("code,name\nM1,One\nM2,Two\n")
    return {"m": depot("m", kind="file", path="m")}


def run_checks(tmp_path, lake, checks, depots=None, dataset="lake://ws/payments"):
    ctx = make_ctx(tmp_path, lake, {"dataset": dataset, "checks": checks}, depots=depots, stack="quality")
    result = QualityStack().run(ctx)
    json.dumps([c.sample for c in result.checks])  # samples are JSON-safe
    return result


def one(tmp_path, lake, check, **kw):
    result = run_checks(tmp_path, lake, [check], **kw)
    [item] = result.checks
    return result, item


def test_row_count(tmp_path, lake):
    result, item = one(tmp_path, lake, {"row_count": {"min": 1, "max": 4}})
    assert result.ok and item.passed and item.name == "row_count(min=1, max=4)" and result.rows_in == 4
    result, item = one(tmp_path, lake, {"row_count": {"min": 5}})
    assert not result.ok and not result.retryable and item.message == "4 rows (min 5)"
    assert result.message == "1 of 1 checks failed: row_count(min=5): 4 rows (min 5)"


def test_not_null(tmp_path, lake):
    _, item = one(tmp_path, lake, {"not_null": ["id"]})
    assert item.passed and item.failing_rows == 0
    result, item = one(tmp_path, lake, {"not_null": ["id", "amount", "currency"]})
    assert not result.ok and item.failing_rows == 2 and item.columns == ["id", "amount", "currency"]
    assert item.message == "2 rows with nulls in amount (1), currency (1)"
    assert sorted(row["id"] for row in item.sample) == [3, 3]
    assert {row["amount"] for row in item.sample} == {None, 7.25}  # decimals as floats


def test_unique(tmp_path, lake):
    _, item = one(tmp_path, lake, {"unique": ["id", "currency"]})
    assert item.passed  # (3, NULL) is left to not_null
    result, item = one(tmp_path, lake, {"unique": ["id"], "name": "ids are unique"})
    assert not result.ok and item.name == "ids are unique" and item.failing_rows == 2
    assert item.sample == [{"id": 3, "duplicates": 2}]


def test_accepted_values(tmp_path, lake):
    _, item = one(tmp_path, lake, {"accepted_values": {"column": "currency", "values": ["USD", "EUR", "JPY"]}})
    assert item.passed
    result, item = one(tmp_path, lake, {"accepted_values": {"column": "currency", "values": ["USD", "EUR"]}})
    assert not result.ok and item.failing_rows == 1 and item.sample[0]["currency"] == "JPY"
    assert item.message == "1 rows with currency outside the accepted values: JPY (1)"
    _, item = one(tmp_path, lake, {"accepted_values": {"column": "id", "values": [1, 2, 3]}})
    assert item.passed
    _, item = one(tmp_path, lake, {"accepted_values": {"column": "id", "values": [1, 2]}})
    assert item.failing_rows == 2


def test_relationships_across_types_and_datasets(tmp_path, lake, merchants):
    check = {"relationships": {"column": "merchant_id", "to": "depot://m/merchants", "field": "code"}}
    result, item = one(tmp_path, lake, check, depots=merchants)
    assert not result.ok and item.failing_rows == 1 and item.sample[0]["merchant_id"] == "M9"
    assert item.message == "1 rows whose merchant_id is not in depot://m/merchants.code: M9 (1)"
    assert item.name == "relationships(merchant_id -> depot://m/merchants.code)"
    # integers against the text of another lake table
    lake.conn.execute("CREATE TABLE ws.ids AS SELECT * FROM (VALUES ('1'), ('2'), ('3')) v(id)")
    _, item = one(tmp_path, lake, {"relationships": {"column": "id", "to": "lake://ws/ids", "field": "id"}})
    assert item.passed
    result, item = one(tmp_path, lake, {"relationships": {"column": "id", "to": "lake://ws/ids", "field": "nope"}})
    assert not result.ok and item.message == "column 'nope' does not exist in lake://ws/ids (columns: id)"
    result, item = one(tmp_path, lake, {"relationships": {"column": "id", "to": "lake://ws/gone", "field": "id"}})
    assert "lake://ws/gone does not exist" in item.message and not result.ok


def test_freshness(tmp_path, lake):
    result, item = one(tmp_path, lake, {"freshness": {"column": "paid_at", "max_age": "90m"}})
    assert result.ok and item.passed and item.message.startswith("newest paid_at is ")
    lake.conn.execute("DELETE FROM ws.payments WHERE paid_at > now() - INTERVAL 1 DAY")
    result, item = one(tmp_path, lake, {"freshness": {"column": "paid_at", "max_age": "1d"}})
    assert not result.ok and "3d" in item.message and item.message.endswith("(max_age 1d)")
    # a date is fresh until its day is over; naive timestamps are read as UTC
    result, item = one(tmp_path, lake, {"freshness": {"column": "day", "max_age": "1d"}})
    assert not item.passed
    lake.conn.execute("CREATE TABLE ws.today AS SELECT current_date AS day, "
                      "(now() AT TIME ZONE 'UTC') - INTERVAL 10 MINUTE AS ts")
    result = run_checks(tmp_path, lake, [{"freshness": {"column": "day", "max_age": "1s"}},
                                         {"freshness": {"column": "ts", "max_age": "1h"}}],
                        dataset="lake://ws/today")
    assert result.ok, result.message
    result, item = one(tmp_path, lake, {"freshness": {"column": "currency", "max_age": "1d"}})
    assert "column 'currency' of lake://ws/payments is VARCHAR, not a date or timestamp" in item.message


def test_expression(tmp_path, lake):
    _, item = one(tmp_path, lake, {"expression": {"sql": "amount >= 0"}})
    assert item.passed  # NULL passes, as in a CHECK constraint
    result, item = one(tmp_path, lake, {"expression": {"sql": "amount < 20"}})
    assert not result.ok and item.failing_rows == 1 and item.sample[0]["amount"] == 20.5
    result, item = one(tmp_path, lake, {"expression": {"sql": "amont < 20"}})
    assert not result.ok and "does not run on lake://ws/payments: Binder Error" in item.message


def test_warnings_only_show_and_missing_columns_always_fail(tmp_path, lake):
    result = run_checks(tmp_path, lake, [{"row_count": {"min": 1}},
                                         {"unique": ["id"], "severity": "warn"},
                                         {"not_null": ["amount"], "severity": "warn"}])
    assert result.ok and not result.checks[1].passed and not result.checks[2].passed
    assert result.message.startswith("1 of 3 checks passed; warnings: unique(id): ")
    result = run_checks(tmp_path, lake, [{"not_null": ["id", "amout"], "severity": "warn"}, {"unique": ["id"]}])
    assert not result.ok and not result.retryable
    assert result.checks[0].message == ("column 'amout' does not exist in lake://ws/payments "
                                        "(columns: id, amount, currency, merchant_id, paid_at, day)")
    assert result.message.startswith("2 of 2 checks failed: not_null(id, amout): column 'amout' does not exist")


def test_missing_dataset(tmp_path, lake):
    result = run_checks(tmp_path, lake, [{"row_count": {"min": 1}}], dataset="lake://ws/nothing")
    assert not result.ok and result.checks == []
    assert result.message == "dataset lake://ws/nothing does not exist (no workflow has written it yet?)"


# ---- profile ---------------------------------------------------------------------------------


def test_profile_numbers(tmp_path, lake, merchants):
    ctx = make_ctx(tmp_path, lake, {"dataset": "lake://ws/payments"}, stack="profile")
    result = ProfileStack().run(ctx)
    assert result.ok and result.rows_in == 4
    profiles = {p["column"]: p for p in result.profiles["lake://ws/payments"]}
    json.dumps(profiles)
    assert list(profiles) == ["id", "amount", "currency", "merchant_id", "paid_at", "day"]
    assert profiles["id"] == {"column": "id", "type": "INTEGER", "count": 4, "nulls": 0, "distinct": 3, "min": 1,
                              "max": 3, "mean": 2.25, "top": [[3, 2], [1, 1], [2, 1]]}
    assert profiles["amount"]["mean"] == pytest.approx((10 + 20.5 + 7.25) / 3)
    assert (profiles["amount"]["min"], profiles["amount"]["max"], profiles["amount"]["nulls"]) == (7.25, 20.5, 1)
    assert profiles["currency"]["mean"] is None and profiles["currency"]["min"] == "EUR"
    assert profiles["day"]["top"] == [["2025-01-02", 2], ["2025-01-01", 1]]

    ctx = make_ctx(tmp_path, lake, {"dataset": "depot://m/merchants", "columns": ["NAME"]}, depots=merchants,
                   stack="profile")
    result = ProfileStack().run(ctx)
    assert [p["column"] for p in result.profiles["depot://m/merchants"]] == ["name"]
    ctx.spec = {"dataset": "depot://m/merchants", "columns": ["nope"]}
    result = ProfileStack().run(ctx)
    assert not result.ok and result.message == "column 'nope' does not exist in depot://m/merchants (columns: code, name)"
