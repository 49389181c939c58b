"""Providers against real things: DuckDB and SQLite files, folders of data, the PostgreSQL server."""
from __future__ import annotations

import sqlite3
import uuid
from pathlib import Path

import duckdb
import psycopg
import pytest

from reconciler.core.ids import make_id
from reconciler.core.record import FAILED, READY
from reconciler.core.resource import Resource
from reconciler.providers.base import ApplyContext
from reconciler.providers.registry import PROVIDERS, get_provider
from reconciler.providers.secret import fingerprint, resolve_secret
from reconciler.store.state import StateStore

PG = {"host": "127.0.0.1", "port": 5432, "dbname": "test", "user": "postgres"}


def resource(type_: str, name: str, section: dict | None = None, workspace: str | None = None,
             **extra) -> Resource:
    spec = {"version": "v1", "type": type_, "name": name}
    if workspace:
        spec["workspace"] = workspace
    if section is not None:
        spec[type_] = section
    for key in ("owner", "description", "tags"):
        if key in extra:
            spec[key] = extra.pop(key)
    return Resource(make_id(type_, name, workspace), type_, name, workspace, spec, f"{name}.yaml", 0, 1, **extra)


@pytest.fixture
def repo(tmp_path) -> Path:
    path = tmp_path / "repo"
    path.mkdir()
    return path


@pytest.fixture
def store(tmp_path):
    with StateStore.open(tmp_path / "state") as s:
        yield s


@pytest.fixture
def ctx(tmp_path, repo, store) -> ApplyContext:
    return ApplyContext(state_dir=tmp_path / "state", store=store, commit="c" * 40, repo_dir=lambda: repo)


def apply(ctx: ApplyContext, r: Resource):
    return get_provider(r.type).apply(ctx, r, ctx.store.get(r.id))


def applied(ctx: ApplyContext, r: Resource):
    """Apply and record it the way the engine does, returning the Outcome."""
    outcome = apply(ctx, r)
    ctx.store.finish(r.id, READY if outcome.ok else FAILED, outcome.message, resource=r, commit=ctx.commit,
                     outputs=outcome.outputs)
    return outcome


def columns(ctx: ApplyContext, address: str) -> list[tuple[str, str]]:
    return [(c["name"], c["type"]) for c in ctx.store.catalog.columns(address)]


def test_every_type_has_a_provider():
    assert set(PROVIDERS) == {"workspace", "depot", "secret", "policy", "stack", "operator", "bundle",
                              "dataproduct", "workflow", "service"}
    assert all(p.type == t for t, p in PROVIDERS.items())
    with pytest.raises(KeyError, match="no provider for resource type 'nope'"):
        get_provider("nope")


# ---- workspace -------------------------------------------------------------------------------


def test_workspace_creates_its_schema_and_run_dir_and_is_idempotent(ctx):
    ws = resource("workspace", "card-tx")
    for _ in range(2):
        outcome = apply(ctx, ws)
        assert outcome.ok, outcome.message
    assert ctx.run_dir("card-tx").is_dir()
    conn = duckdb.connect(str(ctx.lake_path))
    assert conn.execute("SELECT count(*) FROM information_schema.schemata WHERE schema_name = 'card-tx'"
                        ).fetchone()[0] == 1
    conn.close()
    assert get_provider("workspace").observe(ctx, ws_record(ctx, ws)) == {"schema": True, "tables": [], "run_dir": True}


def ws_record(ctx, ws):
    applied(ctx, ws)
    return ctx.store.get(ws.id)


def test_workspace_delete_refuses_while_tables_remain(ctx):
    ws = resource("workspace", "card-tx")
    record = ws_record(ctx, ws)
    conn = duckdb.connect(str(ctx.lake_path))
    conn.execute('CREATE TABLE "card-tx".valid AS SELECT 1 AS id')
    conn.close()
    outcome = get_provider("workspace").delete(ctx, record)
    assert not outcome.ok
    assert "workspace 'card-tx': its lake schema still holds 1 table(s) (valid)" in outcome.message
    conn = duckdb.connect(str(ctx.lake_path))
    conn.execute('DROP TABLE "card-tx".valid')
    conn.close()
    outcome = get_provider("workspace").delete(ctx, record)
    assert outcome.ok, outcome.message
    assert not ctx.run_dir("card-tx").exists()
    assert get_provider("workspace").observe(ctx, record)["schema"] is False


# ---- depot: file -----------------------------------------------------------------------------


def write_files(folder: Path) -> None:
    folder.mkdir(parents=True)
    conn = duckdb.connect()
    conn.execute("CREATE TABLE t AS SELECT * FROM (VALUES (1, '4111111111111111', 9.5), (2, '4000000000000002', 3.0), "
                 "(3, '4000000000000010', 1.25)) v(id, card_number, amount)")
    conn.execute(f"COPY t TO '{folder / 'transactions.csv'}' (HEADER)")
    conn.execute(f"COPY (SELECT id, amount FROM t) TO '{folder / 'amounts.parquet'}' (FORMAT parquet)")
    conn.execute(f"COPY (SELECT id, 'm' || id AS merchant FROM t) TO '{folder / 'merchants.json'}' (FORMAT json)")
    (folder / "events").mkdir()
    for day in (1, 2):
        conn.execute(f"COPY (SELECT {day} AS day, id FROM t) TO '{folder / 'events' / f'day{day}.parquet'}' "
                     "(FORMAT parquet)")
    conn.close()
    (folder / "README.md").write_text("not data\n")
    (folder / "_SUCCESS").write_text("")


def test_file_depot_introspects_csv_parquet_json_and_folders(ctx, repo):
    write_files(repo / "data" / "tx")
    depot = resource("depot", "raw", {"kind": "file", "path": "data/tx",
                                      "column_tags": {"transactions.card_number": ["pii"]}})
    outcome = applied(ctx, depot)
    assert outcome.ok, outcome.message
    assert outcome.message == "reachable; 4 dataset(s) introspected: amounts, events, merchants, transactions"
    assert outcome.outputs == {"datasets": 4}
    cat = ctx.store.catalog
    by_address = {d["address"]: d for d in cat.datasets()}
    assert set(by_address) == {f"depot://raw/{n}" for n in ("amounts", "events", "merchants", "transactions")}
    tx = by_address["depot://raw/transactions"]
    assert (tx["kind"], tx["format"], tx["row_count"], tx["owner_resource"]) == ("file", "csv", 3, "depot:raw")
    assert tx["location"] == str(repo / "data" / "tx" / "transactions.csv")
    assert columns(ctx, "depot://raw/transactions") == [("id", "BIGINT"), ("card_number", "BIGINT"),
                                                       ("amount", "DOUBLE")]
    assert [c["tags"] for c in cat.columns("depot://raw/transactions")] == [[], ["pii"], []]
    assert columns(ctx, "depot://raw/amounts") == [("id", "INTEGER"), ("amount", "DECIMAL(3,2)")]
    assert columns(ctx, "depot://raw/merchants") == [("id", "BIGINT"), ("merchant", "VARCHAR")]
    events = by_address["depot://raw/events"]
    assert (events["format"], events["row_count"], events["location"]) == ("parquet", 6, str(repo / "data/tx/events"))

    observed = get_provider("depot").observe(ctx, ctx.store.get(depot.id))
    assert observed["datasets"]["amounts"] == [["id", "INTEGER"], ["amount", "DECIMAL(3,2)"]]

    assert get_provider("depot").delete(ctx, ctx.store.get(depot.id)).ok
    assert cat.datasets() == []


def test_file_depot_filters_by_format_and_datasets(ctx, repo):
    write_files(repo / "data" / "tx")
    outcome = applied(ctx, resource("depot", "raw", {"kind": "file", "path": "data/tx", "format": "parquet"}))
    assert outcome.message.endswith(": amounts, events")
    outcome = applied(ctx, resource("depot", "raw", {"kind": "file", "path": str(repo / "data/tx"),
                                                     "datasets": ["merchants"]}))
    assert outcome.ok and [d["address"] for d in ctx.store.catalog.datasets()] == ["depot://raw/merchants"]


def test_file_depot_missing_folder(ctx, repo):
    outcome = apply(ctx, resource("depot", "x", {"kind": "file", "path": "data/tx"}))
    assert not outcome.ok
    assert outcome.message == f"depot 'x': folder data/tx does not exist (looked in {repo / 'data/tx'})"


def test_file_depot_names_what_is_wrong(ctx, repo):
    write_files(repo / "data" / "tx")
    outcome = apply(ctx, resource("depot", "x", {"kind": "file", "path": "data/tx", "datasets": ["nope"]}))
    assert outcome.message.startswith("depot 'x': datasets nope listed in `datasets` were not found (found: amounts,")
    outcome = apply(ctx, resource("depot", "x", {"kind": "file", "path": "data/tx",
                                                 "column_tags": {"transactions.card": ["pii"]}}))
    assert outcome.message == ("depot 'x': column_tags names transactions.card, but transactions has no column "
                               "'card' (columns: id, card_number, amount)")
    (repo / "data" / "tx" / "broken.parquet").write_text("not parquet")
    outcome = apply(ctx, resource("depot", "x", {"kind": "file", "path": "data/tx"}))
    assert outcome.message.startswith("depot 'x': cannot read data/tx/broken.parquet as parquet: ")
    # a depot that lists its datasets reads only those: a broken file beside them is not its concern
    outcome = apply(ctx, resource("depot", "x", {"kind": "file", "path": "data/tx", "datasets": ["merchants"]}))
    assert outcome.ok, outcome.message
    assert [d["address"] for d in ctx.store.catalog.datasets(owner="depot:x")] == ["depot://x/merchants"]
    outcome = apply(ctx, resource("depot", "x", {"kind": "file", "path": "data/tx", "datasets": ["nope"]}))
    assert "(found: amounts, broken, events, merchants, transactions)" in outcome.message


# ---- depot: duckdb and sqlite ----------------------------------------------------------------


def test_duckdb_depot_lists_tables_of_all_schemas(ctx, repo):
    conn = duckdb.connect(str(repo / "warehouse.duckdb"))
    conn.execute("CREATE TABLE orders AS SELECT range AS id, 'x' AS note FROM range(5)")
    conn.execute("CREATE SCHEMA sales; CREATE TABLE sales.items (sku VARCHAR, qty INTEGER)")
    conn.execute("CREATE VIEW big_orders AS SELECT * FROM orders WHERE id > 2")
    conn.close()
    outcome = applied(ctx, resource("depot", "wh", {"kind": "duckdb", "path": "warehouse.duckdb"}))
    assert outcome.ok, outcome.message
    datasets = {d["address"]: d for d in ctx.store.catalog.datasets()}
    assert set(datasets) == {"depot://wh/orders", "depot://wh/big_orders", "depot://wh/sales.items"}
    assert datasets["depot://wh/orders"]["row_count"] == 5
    assert datasets["depot://wh/big_orders"]["format"] == "view"
    assert columns(ctx, "depot://wh/sales.items") == [("sku", "VARCHAR"), ("qty", "INTEGER")]


def test_duckdb_depot_missing_file(ctx, repo):
    outcome = apply(ctx, resource("depot", "wh", {"kind": "duckdb", "path": "nope.duckdb"}))
    assert outcome.message == f"depot 'wh': file nope.duckdb does not exist (looked in {repo / 'nope.duckdb'})"


def test_sqlite_depot_reads_without_writing(ctx, repo):
    path = repo / "shop.sqlite"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, email TEXT NOT NULL, score REAL, misc)")
    conn.executemany("INSERT INTO customers (email) VALUES (?)", [("a@x",), ("b@x",)])
    conn.execute("CREATE VIEW emails AS SELECT email FROM customers")
    conn.commit()
    conn.close()
    before = path.read_bytes()
    outcome = applied(ctx, resource("depot", "shop", {"kind": "sqlite", "path": "shop.sqlite",
                                                      "column_tags": {"customers.email": ["pii"]}}))
    assert outcome.ok, outcome.message
    assert columns(ctx, "depot://shop/customers") == [("id", "INTEGER"), ("email", "TEXT"), ("score", "REAL"),
                                                     ("misc", "ANY")]
    assert ctx.store.catalog.dataset("depot://shop/customers")["row_count"] == 2
    assert ctx.store.catalog.dataset("depot://shop/emails")["format"] == "view"
    assert path.read_bytes() == before
    assert not (repo / "shop.sqlite-journal").exists()


def test_sqlite_depot_missing_or_not_a_database(ctx, repo):
    outcome = apply(ctx, resource("depot", "shop", {"kind": "sqlite", "path": "shop.sqlite"}))
    assert outcome.message == f"depot 'shop': file shop.sqlite does not exist (looked in {repo / 'shop.sqlite'})"
    (repo / "shop.sqlite").write_text("hello, this is not sqlite" * 10)
    outcome = apply(ctx, resource("depot", "shop", {"kind": "sqlite", "path": "shop.sqlite"}))
    assert not outcome.ok and "cannot read SQLite database" in outcome.message and "not a database" in outcome.message


# ---- depot: postgres -------------------------------------------------------------------------


@pytest.fixture
def pg_schema():
    try:
        conn = psycopg.connect(**PG, connect_timeout=3, autocommit=True)
    except psycopg.OperationalError as exc:
        pytest.skip(f"PostgreSQL at 127.0.0.1:5432 (user postgres, database test) is unreachable: {exc}")
    schema = f"reconciler_test_{uuid.uuid4().hex[:10]}"
    conn.execute(f"CREATE SCHEMA {schema}")
    conn.execute(f"CREATE TABLE {schema}.payments (id bigint PRIMARY KEY, card_number text, amount numeric(10,2), "
                 "tags text[])")
    conn.execute(f"INSERT INTO {schema}.payments VALUES (1, '4111', 9.50, '{{a}}')")
    try:
        yield schema
    finally:
        conn.execute(f"DROP SCHEMA {schema} CASCADE")
        conn.close()


def pg_depot(schema: str, **overrides) -> Resource:
    section = {"kind": "postgres", "host": "127.0.0.1", "port": 5432, "database": "test", "user": "postgres",
               "password": {"secret": "pg-password"}, "schema": schema,
               "column_tags": {"payments.card_number": ["pii"]}}
    section.update(overrides)
    return resource("depot", "pg", section)


def pg_secret() -> Resource:
    return resource("secret", "pg-password", {"from": {"env": "PG_PASSWORD"}}, workspace="public")


@pytest.mark.postgres
def test_postgres_depot_introspects_a_schema(ctx, pg_schema):
    secret = pg_secret()
    ctx.resources[secret.id] = secret
    ctx.environ["PG_PASSWORD"] = "trust-auth-ignores-it"
    outcome = applied(ctx, pg_depot(pg_schema))
    assert outcome.ok, outcome.message
    assert outcome.message == "reachable; 1 dataset(s) introspected: payments"
    assert columns(ctx, "depot://pg/payments") == [("id", "bigint"), ("card_number", "text"), ("amount", "numeric"),
                                                  ("tags", "_text")]
    assert ctx.store.catalog.columns("depot://pg/payments")[1]["tags"] == ["pii"]
    observed = get_provider("depot").observe(ctx, ctx.store.get("depot:pg"))
    assert observed == {"datasets": {"payments": [["id", "bigint"], ["card_number", "text"], ["amount", "numeric"],
                                                  ["tags", "_text"]]}}


@pytest.mark.postgres
def test_postgres_depot_missing_schema(ctx, pg_schema):
    outcome = apply(ctx, pg_depot(pg_schema + "_nope", password=None))
    assert outcome.message == (f"depot 'pg': schema {pg_schema}_nope does not exist in postgres at 127.0.0.1:5432 "
                               "(database test, user postgres); create it or fix `schema`")


def test_postgres_depot_unreachable_port(ctx):
    secret = pg_secret()
    ctx.resources[secret.id] = secret
    ctx.environ["PG_PASSWORD"] = "s3cret-value"
    outcome = apply(ctx, pg_depot("public", port=1))
    assert not outcome.ok
    assert outcome.message.startswith(
        "depot 'pg': cannot connect to postgres at 127.0.0.1:1 (database test, user postgres): ")
    assert "refused" in outcome.message.lower()
    assert "s3cret-value" not in outcome.message


def test_postgres_depot_password_secret_problems(ctx):
    outcome = apply(ctx, pg_depot("public"))
    assert outcome.message == ("depot 'pg': password: secret 'public/pg-password' is not defined; add a "
                               "`type: secret` document named pg-password in workspace public")
    secret = pg_secret()
    ctx.resources[secret.id] = secret
    outcome = apply(ctx, pg_depot("public"))
    assert outcome.message == ("depot 'pg': password: secret 'public/pg-password': environment variable PG_PASSWORD "
                               "is not set; set it in the daemon's environment")
    outcome = apply(ctx, pg_depot("public", password="plain-text"))
    assert "never put a password in git" in outcome.message and "plain-text" not in outcome.message


# ---- secret ----------------------------------------------------------------------------------


def test_secret_from_env_records_only_a_fingerprint(ctx):
    secret = pg_secret()
    ctx.environ["PG_PASSWORD"] = "hunter2"
    outcome = apply(ctx, secret)
    assert outcome.ok and outcome.outputs == {"fingerprint": fingerprint("hunter2")}
    assert len(outcome.outputs["fingerprint"]) == 16 and "hunter2" not in outcome.message
    assert outcome.message == "value found in environment variable PG_PASSWORD"


def test_secret_from_file_and_missing_sources(ctx, tmp_path):
    path = tmp_path / "pw"
    path.write_text("from-file\n")
    ok = apply(ctx, resource("secret", "f", {"from": {"file": str(path)}}, workspace="ws"))
    assert ok.outputs == {"fingerprint": fingerprint("from-file")}
    missing = apply(ctx, resource("secret", "f", {"from": {"file": str(tmp_path / "nope")}}, workspace="ws"))
    assert missing.message == f"secret 'ws/f': file {tmp_path / 'nope'} does not exist (looked in {tmp_path / 'nope'})"
    unset = apply(ctx, pg_secret())
    assert unset.message == ("secret 'public/pg-password': environment variable PG_PASSWORD is not set; "
                             "set it in the daemon's environment")


def test_resolve_secret_uses_the_given_workspace_then_the_default(ctx):
    a = resource("secret", "token", {"from": {"env": "A"}}, workspace="public")
    b = resource("secret", "token", {"from": {"env": "B"}}, workspace="ops")
    ctx.resources.update({a.id: a, b.id: b})
    ctx.environ.update({"A": "value-a", "B": "value-b"})
    assert resolve_secret(ctx, {"secret": "token"}, "public") == ("value-a", None)
    assert resolve_secret(ctx, {"secret": "token", "workspace": "ops"}, "public") == ("value-b", None)


# ---- recorded-only types ---------------------------------------------------------------------


@pytest.mark.parametrize("type_,workspace", [("policy", None), ("stack", None), ("operator", None)])
def test_recorded_types_apply_and_delete(ctx, type_, workspace):
    r = resource(type_, "thing", {}, workspace=workspace)
    outcome = applied(ctx, r)
    assert outcome.ok and outcome.message.startswith("recorded")
    assert get_provider(type_).delete(ctx, ctx.store.get(r.id)).ok


# ---- bundle and dataproduct ------------------------------------------------------------------


def test_bundle_is_ready_only_when_all_members_are(ctx):
    bundle = resource("bundle", "b", {"resources": []})
    ws = resource("workspace", "w", bundle=bundle.id)
    pol = resource("policy", "p", {}, bundle=bundle.id)
    ctx.resources.update({r.id: r for r in (bundle, ws, pol)})
    applied(ctx, ws)
    ctx.store.finish(pol.id, FAILED, "bad policy", resource=pol)
    outcome = apply(ctx, bundle)
    assert outcome.message == ("bundle 'b': 1 of 2 member(s) not ready: policy:p (Failed: bad policy); "
                               "fix them and apply again")
    applied(ctx, pol)
    outcome = apply(ctx, bundle)
    assert outcome.ok and outcome.outputs == {"members": ["policy:p", "workspace:w"]}


def test_dataproduct_registers_in_the_catalog_and_delete_drops_it(ctx):
    section = {"domain": "payments", "inputs": [{"name": "raw", "dataset": "depot://raw/transactions"}],
               "outputs": [{"name": "valid", "dataset": "lake://w/valid"}],
               "slos": [{"name": "fresh", "freshness": {"dataset": "lake://w/valid", "max_age": "26h"}}],
               "resources": [{"id": "ws", "file": "ws.yaml"}]}
    product = resource("dataproduct", "transactions", section, owner="team-payments")
    ws = resource("workspace", "w", bundle=product.id)
    ctx.resources.update({product.id: product, ws.id: ws})
    assert "workspace:w (never applied)" in apply(ctx, product).message
    applied(ctx, ws)
    assert applied(ctx, product).ok
    [registered] = ctx.store.catalog.dataproducts()
    assert (registered["name"], registered["domain"], registered["owner"]) == ("transactions", "payments",
                                                                               "team-payments")
    assert registered["spec"]["members"] == ["workspace:w"]
    assert registered["spec"]["slos"] == section["slos"]
    assert get_provider("dataproduct").delete(ctx, ctx.store.get(product.id)).ok
    assert ctx.store.catalog.dataproducts() == []
