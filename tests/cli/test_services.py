"""Services: their YAML, their apply, and their data over a real daemon's HTTP API, behind tokens and policies.

The attacks each get a test that fails if data leaks: they assert on the status and on the body
holding no rows and no source values.
"""
import csv
import io
import json
import re
from collections import Counter

import pytest

from tests.cli import repos
from tests.cli.data_daemon import TOKENS, raw_transactions, start_data_daemon, stop
from tests.conftest import run_cli

TOTALS = "/api/v1/services/payments/transactions-api/datasets/totals"
BY_MERCHANT = "/api/v1/services/payments/transactions-api/queries/by-merchant"
FRAUD = "/api/v1/services/payments/fraud-desk-api/datasets/transactions"
LARGE = "/api/v1/services/payments/fraud-desk-api/queries/large-for-merchant"
TOTALS_COLUMNS = ["merchant_id", "merchant_name", "mcc", "country", "region", "currency", "day", "transactions",
                  "total_amount", "avg_amount"]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    p, d = start_data_daemon(tmp_path_factory.mktemp("services"))
    yield d
    stop(p)


def _valid(rows):
    return [r for r in rows if float(r["amount"]) > 0]


def _totals_keys(rows=None) -> Counter:
    """(merchant, day) pairs the totals table must hold: approved, positive transactions, per currency/country."""
    rows = _valid(rows or raw_transactions())
    return Counter((r["merchant_id"], r["ts"][:10]) for r in
                   {(r["merchant_id"], r["country"], r["region"], r["currency"], r["ts"][:10]): r
                    for r in rows if r["status"] == "approved"}.values())


def _no_card_numbers(text: str) -> None:
    for r in raw_transactions():
        assert r["card_number"] not in text, "a raw card number left the platform"


# ---- validate and apply, on small repositories ---------------------------------------------

SERVICE = """
version: v1
type: service
name: api
workspace: payments
service:
  datasets: [{name: valid, dataset: "lake://payments/valid"}]
  tokens:
    - {name: finance, secret: api-token}
    - {name: %s, secret: %s}
"""


def test_a_token_naming_a_missing_secret_is_a_validate_error_at_its_line(git_repo):
    git_repo.commit(repos.basic(**{"secret.yaml": repos.SECRET, "service.yaml": SERVICE % ("audit", "nope")}))
    r = run_cli("validate", "--repo", git_repo.path)
    assert r.code == 1, r
    assert re.search(r"service\.yaml:9:\d+: error: service 'api': unknown secret 'nope' in workspace 'payments'",
                     r.out + r.err), r


def test_bad_consumer_names_and_repeated_tokens_are_validate_errors(git_repo):
    git_repo.commit(repos.basic(**{"secret.yaml": repos.SECRET, "service.yaml": SERVICE % ("1bad name", "api-token"),
                                   "other.yaml": SERVICE.replace("name: api\n", "name: other\n")
                                   % ("finance", "api-token")}))
    r = run_cli("validate", "--repo", git_repo.path)
    assert r.code == 1, r
    text = r.out + r.err
    assert re.search(r"service\.yaml:9:\d+: .*'1bad name' is not a valid consumer name", text), r
    assert re.search(r"other\.yaml:9:\d+: .*token 'finance' is defined more than once", text), r


def test_apply_records_the_url_and_get_shows_it(git_repo, state_dir):
    git_repo.commit(repos.basic(**{"secret.yaml": repos.SECRET, "service.yaml": SERVICE % ("audit", "api-token")}))
    r = run_cli("apply", "--auto-approve", "--repo", git_repo.path, "--state-dir", state_dir,
                env={"RECONCILER_TEST_TOKEN": "t-123"})
    assert r.code == 0, r
    r = run_cli("get", "service", "api", "-w", "payments", "--state-dir", state_dir)
    assert r.code == 0 and "/api/v1/services/payments/api" in r.out, r
    got = run_cli("get", "service", "api", "-w", "payments", "--state-dir", state_dir, "-o", "json").json
    assert got["outputs"]["url"] == "/api/v1/services/payments/api"
    assert got["outputs"]["consumers"] == ["finance", "audit"]
    assert "t-123" not in json.dumps(got)


def test_apply_fails_a_service_whose_dataset_nothing_provides(git_repo, state_dir):
    service = SERVICE.split("  tokens:")[0].replace("lake://payments/valid", "depot://raw/nowhere")
    git_repo.commit(repos.basic(**{"service.yaml": service}))
    r = run_cli("apply", "--auto-approve", "--repo", git_repo.path, "--state-dir", state_dir)
    assert r.code == 1, r
    got = run_cli("get", "service", "api", "-w", "payments", "--state-dir", state_dir, "-o", "json").json
    assert got["phase"] == "Failed"
    assert "depot://raw/nowhere" in got["message"] and "not in the catalog" in got["message"]


def test_apply_fails_a_service_whose_token_has_no_value(git_repo, state_dir):
    git_repo.commit(repos.basic(**{"secret.yaml": repos.SECRET, "service.yaml": SERVICE % ("audit", "api-token")}))
    r = run_cli("apply", "--auto-approve", "--repo", git_repo.path, "--state-dir", state_dir,
                env={"RECONCILER_TEST_TOKEN": ""})
    assert r.code == 1, r
    got = run_cli("get", "service", "api", "-w", "payments", "--state-dir", state_dir, "-o", "json").json
    assert got["phase"] in ("Failed", "Blocked")  # the secret itself fails first


# ---- served data --------------------------------------------------------------------------

def test_listing_and_description_show_urls_and_no_secrets(served):
    assert served.call("/api/v1/services")[0] == 401  # an API token is configured: metadata is guarded
    listed = served.json("/api/v1/services", "api")
    assert [(s["workspace"], s["name"]) for s in listed] == [("payments", "fraud-desk-api"),
                                                             ("payments", "transactions-api")]
    one = served.json("/api/v1/services/payments/transactions-api", "reporting")  # its own token may read it
    assert one["url"] == f"http://127.0.0.1:{served.port}/api/v1/services/payments/transactions-api"
    assert [d["url"] for d in one["datasets"]] == [f"http://127.0.0.1:{served.port}{TOTALS}"]
    assert one["datasets"][0]["columns"] == TOTALS_COLUMNS
    assert one["queries"] == [{"name": "by-merchant", "params": {"merchant": "string"},
                               "url": f"http://127.0.0.1:{served.port}{BY_MERCHANT}"}]
    text = json.dumps(listed)
    assert all(t not in text for t in TOKENS.values())
    assert served.call("/api/v1/services/payments/transactions-api", "fraud-desk")[0] == 401


def test_get_service_shows_its_url(served):
    r = run_cli("get", "service", "transactions-api", "-w", "payments", "--state-dir", served.state)
    assert r.code == 0 and "/api/v1/services/payments/transactions-api" in r.out, r


def test_a_page_walks_by_next_links_over_every_row_exactly_once(served):
    everything = served.json(TOTALS, "reporting", {"limit": 10000})
    assert everything["next"] is None and everything["columns"] == TOTALS_COLUMNS
    assert Counter((r["merchant_id"], r["day"]) for r in everything["rows"]) == _totals_keys()
    rows, url, pages = [], TOTALS + "?limit=45", 0
    while url:
        page = served.json(url, "reporting")
        assert page["limit"] == 45 and page["offset"] == pages * 45
        rows += page["rows"]
        url, pages = page["next"], pages + 1
    assert pages == -(-len(everything["rows"]) // 45)
    assert rows == everything["rows"]  # same rows, same order: ORDER BY every column
    assert len({json.dumps(r, sort_keys=True) for r in rows}) == len(rows)


def test_csv_has_a_header_row_and_a_next_link(served):
    status, headers, text = served.call(TOTALS, "reporting", {"format": "csv", "limit": 100})
    assert status == 200 and headers["content-type"].startswith("text/csv")
    table = list(csv.reader(io.StringIO(text)))
    assert table[0] == TOTALS_COLUMNS and len(table) == 101
    assert 'rel="next"' in headers["link"] and "offset=100" in headers["link"]
    as_json = served.json(TOTALS, "reporting", {"limit": 100})
    assert [r[0] for r in table[1:]] == [r["merchant_id"] for r in as_json["rows"]]
    status, headers, _ = served.call(TOTALS, "reporting", headers={"Accept": "text/csv"})
    assert status == 200 and headers["content-type"].startswith("text/csv")


def test_columns_and_equality_filters(served):
    page = served.json(TOTALS, "reporting", {"columns": "day,merchant_id", "merchant_id": "M0003",
                                             "limit": 10000})
    assert page["columns"] == ["day", "merchant_id"]
    assert page["rows"] and all(set(r) == {"day", "merchant_id"} and r["merchant_id"] == "M0003" for r in page["rows"])
    assert Counter((r["merchant_id"], r["day"]) for r in page["rows"]) == \
        Counter({k: v for k, v in _totals_keys().items() if k[0] == "M0003"})
    eur = served.json(TOTALS, "reporting", {"currency": "EUR", "limit": 10000})["rows"]
    assert eur and {r["currency"] for r in eur} == {"EUR"} and len({r["merchant_id"] for r in eur}) > 1
    two = served.json(TOTALS, "reporting", {"merchant_id": "M0003", "currency": "EUR", "limit": 10000})["rows"]
    assert two == [r for r in eur if r["merchant_id"] == "M0003"]


def test_a_query_with_typed_params(served):
    page = served.json(BY_MERCHANT, "reporting", {"merchant": "M0003", "limit": 10000})
    assert page["rows"] and {r["merchant_id"] for r in page["rows"]} == {"M0003"}
    assert [(r["day"], r["currency"]) for r in page["rows"]] == sorted((r["day"], r["currency"]) for r in page["rows"])
    narrowed = served.json(BY_MERCHANT, "reporting", {"merchant": "M0003", "columns": "day", "limit": 5})
    assert narrowed["columns"] == ["day"] and len(narrowed["rows"]) == 5 and narrowed["next"]
    large = served.json(LARGE, "fraud-desk", {"merchant": "M0003", "min_amount": "50.5", "limit": 10000})
    expect = sorted(int(r["id"]) for r in raw_transactions() if r["merchant_id"] == "M0003"
                    and float(r["amount"]) >= 50.5 and r["status"] != "declined")
    assert [r["id"] for r in large["rows"]] == expect


def test_consumer_sees_masked_columns_and_only_its_rows(served):
    status, _, text = served.call(FRAUD, "fraud-desk", {"limit": 10000})
    assert status == 200
    _no_card_numbers(text)
    page = json.loads(text)
    expect = [r for r in _valid(raw_transactions()) if r["status"] != "declined"]
    assert sorted(r["id"] for r in page["rows"]) == sorted(int(r["id"]) for r in expect)
    raw = {int(r["id"]): r["card_number"] for r in expect}
    assert all(r["card_number"] == "*" * 12 + raw[r["id"]][-4:] for r in page["rows"])  # the sample's last4


def test_a_user_sees_the_rows_its_group_policy_filters(served):
    status, _, text = served.call(FRAUD, "analyst", {"limit": 10000})
    assert status == 200
    _no_card_numbers(text)
    rows = json.loads(text)["rows"]
    assert {r["region"] for r in rows} == {"EU"}
    assert len(rows) == sum(1 for r in _valid(raw_transactions()) if r["region"] == "EU")


def test_health_needs_no_token_and_returns_no_data(served):
    assert served.json("/api/v1/services/payments/transactions-api/health") == {"ok": True}
    assert served.json("/api/v1/services/payments/nope/health", expect=404)["ok"] is False


# ---- attacks: each refused, nothing leaked ----------------------------------------------

def _refused(served, status_expected, path, token, params=None) -> str:
    status, _, text = served.call(path, token, params)
    assert status == status_expected, text
    assert '"rows"' not in text and "M00" not in text
    assert all(t not in text for t in TOKENS.values())
    return text


def test_no_token_is_401(served):
    for path in (TOTALS, BY_MERCHANT + "?merchant=M0003", FRAUD):
        _refused(served, 401, path, None)


def test_a_wrong_token_is_401(served):
    for token in ("wrong", TOKENS["reporting"][:-1], TOKENS["reporting"] + "x", TOKENS["api"]):
        _refused(served, 401, TOTALS, token)
        _refused(served, 401, BY_MERCHANT, token, {"merchant": "M0003"})


def test_another_services_token_is_401(served):
    _refused(served, 401, TOTALS, "fraud-desk")
    _refused(served, 401, BY_MERCHANT, "fraud-desk", {"merchant": "M0003"})
    _refused(served, 401, FRAUD, "reporting")


def test_a_user_without_access_is_403_with_the_reason(served):
    text = _refused(served, 403, TOTALS, "outsider")
    assert "outsider may not read lake://payments/merchant_daily_totals" in json.loads(text)["detail"]
    _refused(served, 403, BY_MERCHANT, "outsider", {"merchant": "M0003"})


def test_sql_injection_through_a_filter_matches_nothing(served):
    for value in ("M0003' OR '1'='1", "M0003'; DROP TABLE x; --", "' OR 1=1 --"):
        page = served.json(TOTALS, "reporting", {"merchant_id": value})
        assert page["rows"] == [] and page["next"] is None


def test_sql_injection_through_a_query_param_matches_nothing(served):
    for value in ("M0003' OR '1'='1", "x' UNION SELECT * FROM transactions_clean --"):
        page = served.json(BY_MERCHANT, "reporting", {"merchant": value})
        assert page["rows"] == []


def test_a_filter_on_a_masked_column_cannot_probe_raw_values(served):
    card = next(r["card_number"] for r in _valid(raw_transactions()) if r["status"] == "approved")
    page = served.json(FRAUD, "fraud-desk", {"card_number": card})
    assert page["rows"] == []


def test_an_unknown_column_is_400_listing_the_columns(served):
    detail = json.loads(_refused(served, 400, TOTALS, "reporting", {"columns": "merchant_id,secret_col"}))["detail"]
    assert "secret_col" in detail and "merchant_name" in detail
    detail = json.loads(_refused(served, 400, TOTALS, "reporting", {"nope": "1"}))["detail"]
    assert "unknown parameter 'nope'" in detail and "total_amount" in detail
    detail = json.loads(_refused(served, 400, BY_MERCHANT, "reporting", {"merchant": "M0003", "columns": "day,x"}))
    assert "unknown column x" in detail["detail"] and "total_amount" in detail["detail"]
    detail = json.loads(_refused(served, 400, BY_MERCHANT, "reporting", {"merchant": "M0003", "region": "EU"}))
    assert "unknown parameter 'region'" in detail["detail"] and "merchant (string)" in detail["detail"]


def test_a_format_the_service_does_not_declare_is_refused(served):
    _refused(served, 406, FRAUD, "fraud-desk", {"format": "csv"})
    _refused(served, 400, TOTALS, "reporting", {"format": "xml"})


def test_bad_params_are_400_naming_the_param_and_its_type(served):
    detail = json.loads(_refused(served, 400, BY_MERCHANT, "reporting"))["detail"]
    assert "'merchant' (string) is required" in detail
    detail = json.loads(_refused(served, 400, LARGE, "fraud-desk", {"merchant": "M0003", "min_amount": "lots"}))
    assert "'min_amount' is declared float" in detail["detail"]
    for limit in ("0", "10001", "ten"):
        assert "'limit'" in json.loads(_refused(served, 400, TOTALS, "reporting", {"limit": limit}))["detail"]
    assert "'offset'" in json.loads(_refused(served, 400, TOTALS, "reporting", {"offset": "-1"}))["detail"]
