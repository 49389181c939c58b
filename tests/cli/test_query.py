"""`reconciler query --as USER`: policies enforced on every way data can leave, and the attacks on them.

One repository applied once for the module: a depot of orders with card numbers (tagged pii),
a workflow copying them into the lake, and policies: analysts read EU rows only with card
numbers masked to their last four digits, `mallory` is denied although her group is allowed.
Every attack test asserts the exit code AND that no raw card number reached the output.
"""
from __future__ import annotations

import json

import pytest

from tests.conftest import GitRepo, Result, run_cli

CARDS = [f"4000{i:012d}" for i in range(1, 21)]
EMAILS = [f"buyer{i}@example.com" for i in range(1, 21)]
ROWS = "\n".join(f"{i},{c},{e},{'EU' if i % 2 else 'US'},{i * 10}.50"
                 for i, (c, e) in enumerate(zip(CARDS, EMAILS), start=1))

REPO = {
    "depot.yaml": """
        version: v1
        type: depot
        name: shop-raw
        owner: team-shop
        depot:
          kind: file
          path: data
          format: csv
          column_tags: {orders.card_number: [pii], orders.email: [pii]}
        """,
    "data/orders.csv": "id,card_number,email,region,amount\n" + ROWS + "\n",
    "workspace.yaml": "version: v1\ntype: workspace\nname: shop\n",
    "workflow.yaml": """
        version: v1
        type: workflow
        name: load
        workspace: shop
        owner: team-shop
        workflow:
          dag:
            - name: copy
              stack: sql
              spec:
                inputs: [{name: raw, dataset: "depot://shop-raw/orders"}]
                steps: [{name: o, sql: "SELECT id, CAST(card_number AS VARCHAR) AS card_number, email, region, amount FROM raw"}]
                outputs: [{from: o, dataset: "lake://shop/orders"}]
        """,
    "policies.yaml": """
        version: v1
        type: policy
        name: analysts-eu
        policy:
          subjects: {groups: [analysts]}
          datasets: ["lake://shop/*"]
          access: allow
          filter: "region = 'EU'"
        ---
        version: v1
        type: policy
        name: hash-pii
        policy:
          subjects: {groups: ["*"]}
          datasets: ["lake://shop/**"]
          mask:
            - {columns: [card_number], with: last4}
            - {tags: [pii], with: hash}
        ---
        version: v1
        type: policy
        name: no-mallory
        policy:
          subjects: {users: [mallory]}
          datasets: ["lake://shop/orders"]
          access: deny
        """,
}


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("query")
    repo = GitRepo(root / "repo")
    repo.commit(REPO)
    state = root / "state"
    r = run_cli("apply", "--auto-approve", "--repo", repo.path, "--state-dir", state, "-o", "json")
    assert r.code == 0, r
    for name in ("ana", "owen", "mallory", "eve", "root"):
        (root / f"{name}.tok").write_text(f"token-{name}\n")
    (root / "reconciler.yaml").write_text(f"""
repo: {repo.path}
state_dir: {state}
users:
  ana: {{groups: [analysts], token_file: ana.tok}}
  owen: {{groups: [team-shop], token_file: owen.tok}}
  mallory: {{groups: [analysts], token_file: mallory.tok}}
  eve: {{groups: [], token_file: eve.tok}}
  root: {{groups: [platform], token_file: root.tok}}
groups:
  analysts: {{description: Shop analysts}}
  platform: {{admin: true}}
""")
    return {"state": state, "config": root / "reconciler.yaml", "lake": state / "lake.duckdb"}


def q(env, user, sql, *extra):
    return run_cli("query", sql, "--as", user, "--config", env["config"], "--state-dir", env["state"], *extra)


@pytest.fixture(scope="module")
def engine(env):
    """The enforcement every surface calls, in this process: the long attack lists run through it
    directly (a CLI process per case would cost seconds each); the CLI tests above cover the wiring."""
    from reconciler.daemon.config import load_config
    from reconciler.query.engine import QueryEngine
    from reconciler.query.subjects import Directory

    e = QueryEngine(env["state"], Directory.from_config(load_config(env["config"])))
    yield e
    e.close()


def attempt(engine, user, sql):
    """The same outcome the CLI prints: exit code, stdout (JSON rows), stderr (the error)."""
    from reconciler.core.diagnostics import UserError

    try:
        result = engine.run(engine.directory.subject(user), sql)
    except UserError as exc:
        return Result(1, "", f"error: {exc.message}\n  hint: {exc.hint}")
    return Result(0, json.dumps({"rows": result.to_json_rows()}), "")


def rows(r) -> list[dict]:
    assert r.code == 0, r
    return r.json["rows"]


def assert_no_cards(r) -> None:
    for c in CARDS + EMAILS:
        assert c not in r.out and c not in r.err, f"raw card number {c} leaked:\n{r}"


def refused(r, *words) -> None:
    assert r.code == 1, r
    assert_no_cards(r)
    assert "error:" in r.err and "Traceback" not in r.err, r
    for w in words:
        assert w.lower() in r.err.lower(), r


# -- who sees what -----------------------------------------------------------------------------
def test_analyst_sees_eu_rows_with_card_numbers_masked_to_last4(env):
    r = q(env, "ana", "SELECT * FROM orders ORDER BY id", "-o", "json")
    got = rows(r)
    assert len(got) == 10 and {g["region"] for g in got} == {"EU"}
    assert got[0]["card_number"] == "************0001"
    assert_no_cards(r)


def test_owner_team_reads_all_rows_but_pii_is_masked_for_everyone(env):
    r = q(env, "owen", 'SELECT * FROM "lake://shop/orders" ORDER BY id', "-o", "json")
    got = rows(r)
    assert len(got) == 20
    assert_no_cards(r)
    assert got[1]["card_number"] == "************0002"  # named by column: last4 beats the tag's hash
    assert all(len(g["email"]) == 64 for g in got)  # by tag: salted sha256, stable, not the address
    again = rows(q(env, "owen", 'SELECT email FROM "lake://shop/orders" ORDER BY id', "-o", "json"))
    assert [g["email"] for g in again] == [g["email"] for g in got]
    import hashlib
    assert got[0]["email"] != hashlib.sha256(EMAILS[0].encode()).hexdigest()  # salted


def test_a_name_shared_by_two_readable_datasets_is_ambiguous(env):
    refused(q(env, "owen", "SELECT * FROM orders"), "ambiguous", "lake://shop/orders", "depot://shop-raw/orders")


def test_the_depot_itself_stays_closed_to_a_group_allowed_only_on_the_lake(env):
    refused(q(env, "ana", 'SELECT * FROM "depot://shop-raw/orders"'), "may not read depot://shop-raw/orders")


def test_admin_reads_without_an_allow_policy(env):
    assert len(rows(q(env, "root", 'SELECT id FROM "lake://shop/orders"', "-o", "json"))) == 20


def test_a_user_with_no_access_is_refused_directly(env):
    refused(q(env, "eve", "SELECT * FROM orders"), "eve may not read", "lake://shop/orders")


@pytest.mark.parametrize("sql", [
    "SELECT a.id FROM (SELECT 1 AS id) a JOIN orders o ON o.id = a.id",
    "SELECT * FROM (SELECT * FROM orders) s",
    "WITH x AS (SELECT * FROM orders) SELECT * FROM x",
    "SELECT (SELECT max(card_number) FROM orders) AS c",
    "SELECT 1 WHERE EXISTS (SELECT 1 FROM orders)",
    "SELECT 1 UNION ALL SELECT id FROM orders",
])
def test_no_access_through_join_subquery_cte_or_union(engine, sql):
    refused(attempt(engine, "eve", sql), "may not read")


def test_deny_wins_over_an_allow_for_the_same_user(env):
    refused(q(env, "mallory", "SELECT * FROM orders"), "denied by policy no-mallory")


# -- masked columns stay masked whatever the query does with them ---------------------------------
@pytest.mark.parametrize("sql", [
    "SELECT * FROM orders",
    "SELECT card_number AS c FROM orders",
    "SELECT o.card_number AS plain FROM orders AS o",
    "SELECT upper(card_number) || '' AS c FROM orders",
    "SELECT substr(card_number, 1, 16) AS c FROM orders",
    "SELECT card_number, count(*) FROM orders GROUP BY card_number",
    "SELECT string_agg(card_number, ',') FROM orders",
    "SELECT * FROM orders WHERE card_number LIKE '4000%'",
    "SELECT email, lower(email) AS e2, email || '' AS e3 FROM orders",
    "SELECT email FROM orders GROUP BY ALL",
])
def test_masked_column_never_leaks(engine, sql):
    r = attempt(engine, "ana", sql)
    assert r.code == 0, r
    assert_no_cards(r)


def test_filtered_rows_cannot_be_reached_by_predicates(env):
    got = rows(q(env, "ana", "SELECT count(*) AS n FROM orders WHERE region <> 'EU' OR region IS NULL", "-o", "json"))
    assert got == [{"n": 0}]


# -- reaching past the views ------------------------------------------------------------------
@pytest.mark.parametrize("sql, words", [
    ("SELECT * FROM shop.orders", "names a schema or database"),
    ("SELECT * FROM lake.shop.orders", "names a schema or database"),
    ("SELECT * FROM memory.main.orders", "names a schema or database"),
    ("SELECT * FROM read_csv('/etc/passwd')", "not allowed"),
    ("SELECT * FROM read_csv_auto('data/orders.csv')", "not allowed"),
    ("SELECT * FROM 'data/orders.csv'", "no dataset named"),
    ("SELECT read_text('/etc/passwd')", "not allowed"),
    ("SELECT * FROM query('SELECT 1')", "not allowed"),
    ("SELECT * FROM query_table('orders')", "not allowed"),
    ("SELECT * FROM glob('/etc/*')", "not allowed"),
    ("SELECT * FROM duckdb_databases()", "not allowed"),
    ("SELECT getenv('HOME')", "not allowed"),
    ("SELECT current_setting('enable_external_access')", "not allowed"),
    ("ATTACH '/tmp/x.duckdb' AS x", "not ATTACH"),
    ("COPY (SELECT * FROM orders) TO '/tmp/leak.csv'", "not COPY"),
    ("INSTALL httpfs", "not INSTALL"),
    ("LOAD httpfs", "not"),
    ("SET enable_external_access = true", "not SET"),
    ("PRAGMA database_list", "not PRAGMA"),
    ("SELECT 1; SELECT * FROM orders", "exactly one statement"),
    ("SELECT 1 /* ; */ ; ATTACH '/tmp/y.duckdb' AS y", "exactly one statement"),
    ("SELECT 1 -- comment\n; DROP TABLE orders", "exactly one statement"),
    ("CREATE TABLE t AS SELECT * FROM orders", "not CREATE"),
    ("INSERT INTO orders VALUES (1, '1', 'x', 'EU', 1)", "not INSERT"),
    ("SELECT * INTO leak FROM orders", "not allowed"),
    ("DESCRIBE orders", "not"),
])
def test_attacks_are_refused(engine, sql, words):
    refused(attempt(engine, "ana", sql), words)


@pytest.mark.parametrize("sql, words", [
    ("SELECT * FROM lake.shop.orders", "names a schema or database"),
    ("SELECT * FROM read_csv('/etc/passwd')", "not allowed"),
    ("COPY (SELECT * FROM orders) TO '/tmp/leak.csv'", "not COPY"),
    ("SELECT 1 /* ; */ ; ATTACH '/tmp/y.duckdb' AS y", "exactly one statement"),
])
def test_attacks_are_refused_through_the_cli(env, sql, words):
    refused(q(env, "ana", sql), words)


def test_reading_the_lake_file_directly_is_refused(env):
    refused(q(env, "owen", f"SELECT * FROM read_parquet('{env['lake']}')"), "not allowed")
    refused(q(env, "owen", f'SELECT * FROM "{env["lake"]}"'), "no dataset named")


def test_unknown_user_and_missing_config_are_clear_errors(env):
    r = q(env, "nobody", "SELECT 1")
    assert r.code == 1 and "unknown user 'nobody'" in r.err, r
    r = run_cli("query", "SELECT 1", "--as", "ana", "--state-dir", env["state"])
    assert r.code == 1 and "--config" in r.err, r


def test_csv_and_table_output(env):
    r = q(env, "ana", "SELECT id, region FROM orders ORDER BY id LIMIT 2", "-o", "csv")
    assert r.code == 0 and r.out.splitlines() == ["id,region", "1,EU", "3,EU"], r
    r = q(env, "ana", "SELECT id FROM orders ORDER BY id", "--limit", "3")
    assert r.code == 0 and "more rows exist" in r.err, r
    assert json.loads(q(env, "ana", "SELECT 1 AS x", "-o", "json").out)["rows"] == [{"x": 1}]



def test_a_column_the_catalog_does_not_list_yet_is_refused(env, tmp_path):
    """A run wrote a new column (a copy of the card number) and its findings, with the column's inherited
    pii tag, are not in the catalog yet: the table is refused until they are, never served unmasked."""
    import shutil

    import duckdb

    state = tmp_path / "state"
    shutil.copytree(env["state"], state)
    con = duckdb.connect(str(state / "lake.duckdb"))
    con.execute("ALTER TABLE shop.orders ADD COLUMN card_copy VARCHAR")
    con.execute("UPDATE shop.orders SET card_copy = card_number")
    con.close()
    r = run_cli("query", 'SELECT * FROM "lake://shop/orders"', "--as", "owen", "--config", env["config"],
                "--state-dir", state)
    refused(r, "card_copy", "catalog does not list")
