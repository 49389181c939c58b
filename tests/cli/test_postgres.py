"""A postgres depot against the real PostgreSQL server on 127.0.0.1:5432."""
import uuid

import pytest

from tests.conftest import run_cli

pytestmark = pytest.mark.postgres


@pytest.fixture
def pg_schema(pg_conn):
    conn = pg_conn
    schema = "rt_" + uuid.uuid4().hex[:10]
    conn.execute(f"CREATE SCHEMA {schema}")
    conn.execute(f"CREATE TABLE {schema}.merchants (id integer primary key, name text, mcc char(4))")
    conn.execute(f"INSERT INTO {schema}.merchants VALUES (1, 'Cafe', '5814'), (2, 'Books', '5942')")
    yield schema
    conn.execute(f"DROP SCHEMA {schema} CASCADE")


def depot(schema, port=5432):
    return f"""
version: v1
type: depot
name: merchants-pg
depot:
  kind: postgres
  host: 127.0.0.1
  port: {port}
  database: test
  user: postgres
  password: {{secret: pg-password}}
  schema: {schema}
---
version: v1
type: secret
name: pg-password
secret:
  from: {{env: PG_PASSWORD}}
"""


def test_postgres_depot_is_introspected(git_repo, state_dir, pg_schema):
    git_repo.commit({"pg.yaml": depot(pg_schema)})
    r = run_cli("apply", "--auto-approve", "--repo", git_repo.path, "--state-dir", state_dir, env={"PG_PASSWORD": "unused"})
    assert r.code == 0, r
    cat = run_cli("get", "catalog", "--state-dir", state_dir, "-o", "json").json
    (ds,) = [d for d in cat["datasets"] if d["address"] == "depot://merchants-pg/merchants"]
    assert [c["name"] for c in ds["columns"]] == ["id", "name", "mcc"]


def test_unreachable_postgres_fails_the_depot_with_the_reason(git_repo, state_dir, pg_schema):
    git_repo.commit({"pg.yaml": depot(pg_schema, port=1)})
    r = run_cli("apply", "--auto-approve", "--repo", git_repo.path, "--state-dir", state_dir, env={"PG_PASSWORD": "pw-xyz"})
    assert r.code == 1
    assert "127.0.0.1:1" in r.out and "pw-xyz" not in r.out + r.err
    got = {x["id"]: x["phase"] for x in run_cli("get", "--state-dir", state_dir, "-o", "json").json}
    assert got == {"depot:merchants-pg": "Failed", "secret:public/pg-password": "Ready"}


def test_a_workflow_reads_a_postgres_depot(git_repo, state_dir, pg_schema):
    wf = """
version: v1
type: workflow
name: from-pg
workflow:
  dag:
    - name: copy
      stack: sql
      spec:
        inputs: [{name: m, dataset: "depot://merchants-pg/merchants"}]
        steps: [{name: s, sql: "SELECT id, upper(name) AS name FROM m"}]
        outputs: [{from: s, dataset: "lake://public/merchants_copy"}]
"""
    git_repo.commit({"pg.yaml": depot(pg_schema), "wf.yaml": wf})
    r = run_cli("apply", "--auto-approve", "--repo", git_repo.path, "--state-dir", state_dir, env={"PG_PASSWORD": "pw-abc"})
    assert r.code == 0, r
    import duckdb

    con = duckdb.connect(str(state_dir / "lake.duckdb"), read_only=True)
    assert con.execute("SELECT name FROM public.merchants_copy ORDER BY id").fetchall() == [("CAFE",), ("BOOKS",)]
    con.close()
