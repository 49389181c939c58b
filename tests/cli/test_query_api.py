"""POST /api/v1/query: a user's token, the policies for that user, and each refusal with no data in it.

The daemon's HTTP server runs in this process over a state the real CLI applied, so one test can
hold the lake as a running workflow does and see 503 with Retry-After.
"""
import json

import pytest

from reconciler.store import lakegate
from tests.cli.data_daemon import TOKENS, raw_transactions, serve_in_process

QUERY = "/api/v1/query"


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    server, d = serve_in_process(tmp_path_factory.mktemp("query-api"))
    yield d
    server.stop()


def ask(api, token, body, expect=200):
    status, headers, text = api.call(QUERY, token, body=body)
    assert status == expect, text
    return json.loads(text), headers, text


def _valid():
    return [r for r in raw_transactions() if float(r["amount"]) > 0]


def test_a_user_reads_what_its_policies_let_through(api):
    got, _, text = ask(api, "analyst", {"sql": "SELECT region, count(*) AS n FROM transactions_clean "
                                               "GROUP BY region ORDER BY region"})
    assert got["columns"] == ["region", "n"] and got["truncated"] is False
    assert got["rows"] == [{"region": "EU", "n": sum(1 for r in _valid() if r["region"] == "EU")}]


def test_masked_columns_stay_masked_by_star_alias_and_expression(api):
    for sql in ("SELECT * FROM transactions_clean", "SELECT card_number AS c FROM transactions_clean",
                "SELECT card_number || '' AS c, upper(card_number) AS u FROM transactions_clean"):
        _, _, text = ask(api, "ops", {"sql": sql, "limit": 10000})
        assert all(r["card_number"] not in text for r in raw_transactions()), sql


def test_an_admin_reads_every_row_and_limit_pages(api):
    got, _, _ = ask(api, "ops", {"sql": 'SELECT id FROM "lake://payments/transactions_clean" ORDER BY id',
                                 "limit": 10000})
    assert [r["id"] for r in got["rows"]] == sorted(int(r["id"]) for r in _valid())
    page, _, _ = ask(api, "ops", {"sql": "SELECT id FROM transactions_clean ORDER BY id", "limit": 5, "offset": 10})
    assert [r["id"] for r in page["rows"]] == [r["id"] for r in got["rows"][10:15]] and page["truncated"] is True


def test_no_token_a_wrong_one_a_service_token_or_the_api_token_is_401(api):
    for token in (None, "wrong", TOKENS["analyst"] + "x", "reporting", "fraud-desk", "api"):
        got, headers, text = ask(api, token, {"sql": "SELECT * FROM transactions_clean"}, expect=401)
        assert headers.get("www-authenticate") == "Bearer"
        assert "rows" not in got and all(t not in text for t in TOKENS.values())


def test_a_user_without_access_is_403_with_the_reason(api):
    got, _, text = ask(api, "outsider", {"sql": "SELECT * FROM transactions_clean"}, expect=403)
    assert "outsider may not read lake://payments/transactions_clean" in got["detail"]
    assert "rows" not in got
    got, _, _ = ask(api, "outsider", {"sql": "SELECT count(*) FROM (SELECT 1 FROM transactions_clean) AS s"},
                    expect=403)


def test_unsafe_sql_is_400(api):
    for sql in ("SELECT * FROM read_csv('/etc/passwd')", "ATTACH 'x.duckdb' AS x",
                "SELECT 1; SELECT * FROM transactions_clean", "COPY transactions_clean TO '/tmp/out.csv'"):
        got, _, _ = ask(api, "ops", {"sql": sql}, expect=400)
        assert got["detail"] and "rows" not in got


def test_a_malformed_body_is_400(api):
    for body in ({}, {"sql": 42}, {"sql": "SELECT 1", "limit": 0}, {"sql": "SELECT 1", "limit": "5"},
                 {"sql": "SELECT 1", "offset": -1}):
        ask(api, "ops", body, expect=400)


def test_a_workflow_writing_the_lake_answers_503_with_retry_after_and_fails_health(api):
    lake = api.state / "lake.duckdb"
    lakegate.enter(lake)  # what a workflow run in the daemon does while it writes
    try:
        got, headers, _ = ask(api, "ops", {"sql": "SELECT count(*) AS n FROM transactions_clean"}, expect=503)
        assert int(headers["retry-after"]) > 0 and "writing the lake" in got["detail"]
        health = api.json("/api/v1/services/payments/transactions-api/health", expect=503)
        assert health["ok"] is False and "writing the lake" in health["detail"]
    finally:
        lakegate.leave(lake)
    got, _, _ = ask(api, "ops", {"sql": "SELECT count(*) AS n FROM transactions_clean"})
    assert got["rows"] == [{"n": len(_valid())}]
    assert api.json("/api/v1/services/payments/transactions-api/health") == {"ok": True}
