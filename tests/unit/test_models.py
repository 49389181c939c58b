"""Artefact models: the SPEC's examples validate; each mistake gets a human message at the right key path."""
from __future__ import annotations

import time

import pytest
import yaml

from reconciler.core.resource import JobSpec, Ref
from reconciler.core.resources import (BUILTIN_STACKS, SUPPORTED_VERSIONS, TYPES, bundle_members, identity,
                                       job_specs, normalise, parse_duration, refs, validate_document)


def load(text: str) -> list[dict]:
    return list(yaml.load_all(text, Loader=yaml.CSafeLoader))


def valid(doc: dict):
    model, diagnostics = validate_document(doc)
    assert diagnostics == [], [d.message for d in diagnostics]
    return model


def errors(doc: dict) -> list[tuple[tuple, str]]:
    model, diagnostics = validate_document(doc)
    assert model is None
    assert diagnostics, "expected errors"
    assert all(d.is_error and d.file is None and d.line is None for d in diagnostics)
    return [(d.path, d.message) for d in diagnostics]


def only_error(doc: dict) -> tuple[tuple, str]:
    found = errors(doc)
    assert len(found) == 1, found
    return found[0]


# ---- the SPEC's examples, copied from SPEC.md section 1 ---------------------------------------------

SPEC_WORKFLOW = """
version: v1
type: workflow
name: transactions-daily
workspace: transactions
workflow:
  schedule: {cron: "0 2 * * *", timezone: UTC}   # optional
  dag:
    - name: clean
      stack: sql
      retry: {count: 2, delay: 10s}
      timeout: 10m
      spec:
        inputs: [{name: raw, dataset: "depot://raw-transactions/transactions"}]
        steps:
          - {name: valid, sql: "SELECT * FROM raw WHERE amount > 0"}
        outputs: [{from: valid, dataset: "lake://transactions/valid", mode: overwrite}]
    - name: checks
      stack: quality
      depends_on: [clean]
      spec:
        dataset: "lake://transactions/valid"
        checks:
          - row_count: {min: 1}
          - not_null: [id, amount]
          - unique: [id]
          - accepted_values: {column: currency, values: [USD, EUR]}
          - freshness: {column: ts, max_age: 1d}
    - name: profile
      stack: profile
      depends_on: [clean]
      spec: {dataset: "lake://transactions/valid"}
"""

SPEC_DATAPRODUCT = """
version: v1
type: dataproduct
name: transactions
owner: team-payments
dataproduct:
  domain: payments
  workspaces: [{name: transactions, description: Card transactions}]
  inputs:  [{name: raw, dataset: "depot://raw-transactions/transactions"}]
  outputs: [{name: valid, dataset: "lake://transactions/valid"}]
  slos:    [{name: fresh-daily, freshness: {dataset: "lake://transactions/valid", max_age: 26h}}]
  resources:
    - {id: depot, file: depot.yaml}
    - {id: daily, file: workflow.yaml, workspace: transactions, dependencies: [depot]}
"""

SPEC_OTHERS = """
version: v1
type: workspace
name: transactions
description: Card transactions     # no section is required
---
version: v1
type: depot
name: raw-transactions
depot:
  kind: file                       # file | duckdb | sqlite | postgres
  path: data/transactions          # file: a folder (relative to the repo root, or absolute on the host)
  format: csv                      # file only: csv | parquet | json; default from the extension
  # duckdb / sqlite: {path: warehouse.duckdb}
  # postgres: {host, port, database, user, password: {secret: pg-password}, schema: public}
  datasets: [transactions]         # optional filter; default every file / table
  column_tags: {transactions.card_number: [pii]}
---
version: v1
type: secret
name: pg-password
secret:
  from: {env: PG_PASSWORD}         # or {file: /run/secrets/pg-password}
---
version: v1
type: policy
name: analysts-eu
policy:
  subjects: {groups: [eu-analysts], users: []}   # "*" means everyone
  datasets: ["lake://transactions/*"]
  access: allow                    # allow | deny; omitted: the policy only masks or filters
  mask:
    - {columns: [card_number], with: last4}     # hash | redact | null | last4
    - {tags: [pii], with: hash}
  filter: "region = 'EU'"          # a row predicate
---
version: v1
type: service
name: transactions-api
workspace: transactions
service:
  datasets: [{name: valid, dataset: "lake://transactions/valid"}]
  queries:
    - name: by-merchant
      sql: "SELECT * FROM valid WHERE merchant_id = $merchant"
      params: {merchant: string}
  formats: [json, csv]             # served under /api/v1/services/WORKSPACE/NAME/...
---
version: v1
type: stack
name: dbt-run
stack:
  command: ["dbt", "run", "--project-dir", "{{ spec.project }}", "--select", "{{ spec.select }}"]
  env: {DBT_PROFILES_DIR: "{{ run_dir }}"}
  schema:                          # JSON Schema for a job's spec
    type: object
    required: [project]
    properties: {project: {type: string}, select: {type: string, default: "*"}}
---
version: v1
type: operator
name: airflow
operator:
  base_url: http://airflow.internal:8080/api/v1
  auth: {bearer: {secret: airflow-token}}
  create: {method: POST, path: "/dags/{{ spec.dag_id }}/dagRuns", body: {conf: "{{ spec.conf }}"}, run_id: dag_run_id}
  status: {method: GET, path: "/dags/{{ spec.dag_id }}/dagRuns/{{ run_id }}", state: state}
  cancel: {method: PATCH, path: "/dags/{{ spec.dag_id }}/dagRuns/{{ run_id }}", body: {state: failed}}
  states: {queued: pending, running: running, success: succeeded, failed: failed}
  schema: {type: object, required: [dag_id], properties: {dag_id: {type: string}, conf: {type: object}}}
"""

SPEC_HEADER = """
version: v1                  # required; unknown versions are an error
type: workflow               # required; see the table below
name: ingest-transactions    # required; ^[a-z][a-z0-9-]{0,62}$
workspace: transactions      # workspace-scoped types only; default "public"
description: Loads card transactions
owner: team-payments
tags: [domain.payments, tier.gold]
labels: {cost-center: "42"}
depends_on: ["depot:raw-transactions"]   # extra edges, added to the implicit ones
annotations:
  reconciler/prune: "false"  # never delete this resource when it leaves git
workflow: {dag: [{name: load, stack: shell, spec: {command: "echo hi"}}]}
"""


@pytest.mark.parametrize("text", [SPEC_WORKFLOW, SPEC_DATAPRODUCT, SPEC_OTHERS, SPEC_HEADER],
                         ids=["workflow", "dataproduct", "others", "header"])
def test_spec_examples_validate(text):
    for doc in load(text):
        model = valid(doc)
        assert normalise(model)["type"] == doc["type"]


def test_every_type_has_a_model_and_spec_example():
    seen = {doc["type"] for text in (SPEC_WORKFLOW, SPEC_DATAPRODUCT, SPEC_OTHERS) for doc in load(text)}
    assert seen | {"bundle"} == set(TYPES)
    assert SUPPORTED_VERSIONS == ("v1",)
    assert BUILTIN_STACKS == ("sql", "quality", "profile", "python", "shell")
    assert {name for name, info in TYPES.items() if info.scope == "workspace"} == {"workflow", "service", "secret"}
    assert TYPES["depot"].replace_fields == (("depot", "kind"),)


def test_spec_values_and_defaults_are_kept():
    depot, secret, _policy, service, stack, operator = (normalise(valid(d)) for d in load(SPEC_OTHERS)[1:])
    assert depot["depot"]["column_tags"] == {"transactions.card_number": ["pii"]}
    assert "host" not in depot["depot"] and "port" not in depot["depot"]
    assert secret["secret"] == {"from": {"env": "PG_PASSWORD"}} and secret["workspace"] == "public"
    assert service["service"]["queries"][0]["params"] == {"merchant": "string"}
    assert stack["stack"]["schema"]["required"] == ["project"]
    assert operator["operator"]["states"]["success"] == "succeeded"
    header = normalise(valid(load(SPEC_HEADER)[0]))
    assert header["annotations"] == {"reconciler/prune": "false"} and header["labels"] == {"cost-center": "42"}


def test_bundle_with_inline_and_file_members():
    doc = load("""
version: v1
type: bundle
name: payments
bundle:
  workspaces: [{name: transactions}]
  resources:
    - {id: depot, file: depot.yaml}
    - id: key
      workspace: transactions
      spec: {version: v1, type: secret, name: key, secret: {from: {env: KEY}}}
      dependencies: [depot]
""")[0]
    data = normalise(valid(doc))
    assert data["bundle"]["resources"][1]["spec"]["type"] == "secret"


def test_postgres_depot_defaults_and_secret_ref():
    doc = {"version": "v1", "type": "depot", "name": "pg",
           "depot": {"kind": "postgres", "host": "127.0.0.1", "database": "test", "user": "postgres",
                     "password": {"secret": "pg-password", "workspace": "ops"}}}
    model = valid(doc)
    assert normalise(model)["depot"]["port"] == 5432 and normalise(model)["depot"]["schema"] == "public"
    assert refs(model) == [Ref("secret", "ops/pg-password", ("depot", "password"))]


# ---- header mistakes --------------------------------------------------------------------------------

def workflow_doc(**changes) -> dict:
    doc = load(SPEC_WORKFLOW)[0]
    doc.update(changes)
    return doc


def test_unknown_field_with_did_you_mean():
    doc = workflow_doc()
    doc["workflow"]["schedle"] = doc["workflow"].pop("schedule")
    path, message = only_error(doc)
    assert path == ("workflow", "schedle")
    assert "unknown field 'schedle' in workflow; did you mean 'schedule'?" in message
    assert message.startswith("workflow 'transactions-daily': ")


def test_misspelt_field_deep_inside_a_job():
    doc = workflow_doc()
    doc["workflow"]["dag"][0]["retyr"] = doc["workflow"]["dag"][0].pop("retry")
    doc["workflow"]["dag"][1]["spec"]["checks"][1] = {"not_nul": ["id"]}
    found = errors(doc)
    assert (("workflow", "dag", 0, "retyr"),
            "workflow 'transactions-daily': unknown field 'retyr' in job 'clean'; did you mean 'retry'?") in found
    path, message = next(e for e in found if e[0][-1] == "not_nul")
    assert path == ("workflow", "dag", 1, "spec", "checks", 1, "not_nul")
    assert "did you mean 'not_null'?" in message


def test_unknown_top_level_field_lists_nothing_jargony():
    path, message = only_error({"version": "v1", "type": "secret", "name": "s", "secret": {"from": {"env": "X"}},
                                "descripton": "x"})
    assert path == ("descripton",)
    assert "unknown field 'descripton'; did you mean 'description'?" in message
    assert "Input should" not in message and "[type=" not in message


def test_bad_name():
    path, message = only_error(workflow_doc(name="Daily_Load"))
    assert path == ("name",)
    assert "'Daily_Load' is not a valid name" in message and "lowercase letter" in message
    assert message.startswith("workflow: ")


def test_type_without_version_and_version_without_type():
    path, message = only_error({"type": "workflow", "name": "x"})
    assert path == ("type",) and "no `version`" in message and "add `version: v1`" in message
    path, message = only_error({"version": "v1", "name": "x"})
    assert path == ("version",) and "no `type`" in message and "add `type:`" in message


def test_unknown_type_and_version():
    path, message = only_error({"version": "v1", "type": "wrkflow", "name": "x"})
    assert path == ("type",)
    assert message.startswith("unknown type 'wrkflow'; did you mean 'workflow'? known types: workspace, depot")
    path, message = only_error(workflow_doc(version="v2"))
    assert path == ("version",) and message.startswith("unknown version 'v2'; supported versions: v1")


def test_not_a_mapping():
    path, message = only_error(["a", "list"])
    assert path == () and "must be a mapping" in message


def test_workspace_on_instance_type():
    doc = load(SPEC_OTHERS)[1]
    doc["workspace"] = "transactions"
    path, message = only_error(doc)
    assert path == ("workspace",) and "a depot is instance-scoped" in message and "remove `workspace:`" in message
    path, message = only_error({"version": "v1", "type": "workspace", "name": "w", "workspace": "other"})
    assert path == ("workspace",) and "instance-scoped" in message


def test_label_with_int_value_says_to_quote():
    path, message = only_error(workflow_doc(labels={"cost-center": 42}))
    assert path == ("labels", "cost-center")
    assert 'must be a string, not 42; quote it: cost-center: "42"' in message


def test_prune_annotation_must_be_true_or_false():
    path, message = only_error(workflow_doc(annotations={"reconciler/prune": "never"}))
    assert path == ("annotations", "reconciler/prune") and '"true" or "false"' in message


def test_depends_on_form_and_type():
    found = errors(workflow_doc(depends_on=["wrkflow:x", "depot:ws/raw", "depot"]))
    assert [p for p, _ in found] == [("depends_on", 0), ("depends_on", 1), ("depends_on", 2)]
    assert "unknown type 'wrkflow'; did you mean 'workflow'?" in found[0][1]
    assert "instance-scoped; write depot:raw" in found[1][1]
    assert "write TYPE:NAME" in found[2][1]


def test_all_errors_of_a_document_are_returned():
    doc = workflow_doc(name="Bad", labels={"a": 1})
    doc["workflow"]["dag"][1]["depends_on"] = ["load"]
    doc["workflow"]["dag"][0]["timeout"] = "ten minutes"
    paths = {p for p, _ in errors(doc)}
    assert paths == {("name",), ("labels", "a"), ("workflow", "dag", 1, "depends_on", 0),
                     ("workflow", "dag", 0, "timeout")}


# ---- type sections ----------------------------------------------------------------------------------

def test_literal_postgres_password():
    doc = {"version": "v1", "type": "depot", "name": "pg",
           "depot": {"kind": "postgres", "host": "h", "database": "d", "user": "u", "password": "hunter2"}}
    path, message = only_error(doc)
    assert path == ("depot", "password") and "put the password in a secret" in message
    assert "hunter2" not in message


def test_fields_that_do_not_apply_to_the_depot_kind():
    doc = {"version": "v1", "type": "depot", "name": "d", "depot": {"kind": "file", "path": "x", "host": "h"}}
    path, message = only_error(doc)
    assert path == ("depot", "host") and "'host' does not apply to a file depot" in message
    path, message = only_error({"version": "v1", "type": "depot", "name": "d", "depot": {"kind": "duckdb"}})
    assert path == ("depot",) and "needs 'path'" in message


def test_secret_with_value():
    found = errors({"version": "v1", "type": "secret", "name": "s", "secret": {"value": "hunter2"}})
    assert (("secret", "value"), "secret 's': secret values never come from git; use from: {env: ...} or "
                                 "from: {file: ...}") in found
    path, message = only_error({"version": "v1", "type": "secret", "name": "s",
                                "secret": {"from": {"env": "A", "file": "/b"}}})
    assert path == ("secret", "from") and "exactly one of env:" in message


def test_merge_without_keys():
    doc = workflow_doc()
    doc["workflow"]["dag"][0]["spec"]["outputs"][0]["mode"] = "merge"
    path, message = only_error(doc)
    assert path == ("workflow", "dag", 0, "spec", "outputs", 0, "keys")
    assert "merge output needs keys" in message


def test_sql_output_from_must_name_a_step():
    doc = workflow_doc()
    doc["workflow"]["dag"][0]["spec"]["outputs"][0]["from"] = "vaild"
    path, message = only_error(doc)
    assert path == ("workflow", "dag", 0, "spec", "outputs", 0, "from")
    assert "did you mean 'valid'?" in message


def test_job_depends_on_unknown_job():
    doc = workflow_doc()
    doc["workflow"]["dag"][0]["depends_on"] = ["load", "profil"]
    found = errors(doc)
    assert found[0] == (("workflow", "dag", 0, "depends_on", 0),
                        "workflow 'transactions-daily': job 'clean' depends on unknown job 'load'; "
                        "jobs: clean, checks, profile")
    assert found[1][0] == ("workflow", "dag", 0, "depends_on", 1)
    assert "did you mean 'profile'?" in found[1][1]


def test_job_cycle_is_named():
    doc = workflow_doc()
    doc["workflow"]["dag"][0]["depends_on"] = ["profile"]
    path, message = only_error(doc)
    assert path == ("workflow", "dag", 0, "depends_on", 0)
    assert "jobs form a cycle: clean -> profile -> clean" in message


def test_duplicate_job_names():
    doc = workflow_doc()
    doc["workflow"]["dag"][2]["name"] = "checks"
    path, message = only_error(doc)
    assert path == ("workflow", "dag", 2, "name") and "'checks' is defined more than once" in message


def test_job_needs_exactly_one_runtime():
    doc = workflow_doc()
    doc["workflow"]["dag"][2]["operator"] = "airflow"
    path, message = only_error(doc)
    assert path == ("workflow", "dag", 2) and "exactly one of stack:" in message


def test_bad_cron_and_timezone():
    found = errors(workflow_doc(workflow={"schedule": {"cron": "61 * * * *", "timezone": "Europe/Pari"},
                                          "dag": [{"name": "a", "stack": "shell", "spec": {"command": "true"}}]}))
    assert found[0][0] == ("workflow", "schedule", "cron") and "not a valid cron expression" in found[0][1]
    assert found[1][0] == ("workflow", "schedule", "timezone")
    assert "unknown timezone 'Europe/Pari'; did you mean 'Europe/Paris'?" in found[1][1]


def test_cron_macro_is_stored_as_five_fields():
    model = valid(workflow_doc(workflow={"schedule": {"cron": "@daily"},
                                         "dag": [{"name": "a", "stack": "shell", "spec": {"command": "true"}}]}))
    assert normalise(model)["workflow"]["schedule"] == {"cron": "0 0 * * *", "timezone": "UTC"}


def test_bad_duration():
    doc = workflow_doc()
    doc["workflow"]["dag"][0]["retry"]["delay"] = "10 minutes"
    path, message = only_error(doc)
    assert path == ("workflow", "dag", 0, "retry", "delay")
    assert "'10 minutes' is not a duration" in message and '"10m"' in message


def test_durations():
    assert [parse_duration(t) for t in ("10s", "10m", "2h", "1d", "26h", "500ms", "1h30m", 5)] == \
        [10, 600, 7200, 86400, 93600, 0.5, 5400, 5]
    for bad in ("10", "m", "10 minutes", "-1s", "", True):
        with pytest.raises(ValueError):
            parse_duration(bad)


def test_stack_with_invalid_json_schema():
    doc = load(SPEC_OTHERS)[5]
    doc["stack"]["schema"]["properties"]["project"]["type"] = "strng"
    doc["stack"]["schema"]["required"] = "project"
    found = errors(doc)
    assert (("stack", "schema", "properties", "project", "type"),
            "stack 'dbt-run': 'strng' is not a JSON Schema type; did you mean 'string'?") in found
    assert any(p == ("stack", "schema", "required") and "invalid JSON Schema" in m for p, m in found)


def test_bundle_member_with_both_file_and_spec():
    doc = load(SPEC_DATAPRODUCT)[0]
    doc["dataproduct"]["resources"][0]["spec"] = {"version": "v1", "type": "workspace", "name": "x"}
    path, message = only_error(doc)
    assert path == ("dataproduct", "resources", 0, "spec") and "both file: and spec:" in message


def test_dependencies_to_an_unknown_member():
    doc = load(SPEC_DATAPRODUCT)[0]
    doc["dataproduct"]["resources"][1]["dependencies"] = ["depto"]
    path, message = only_error(doc)
    assert path == ("dataproduct", "resources", 1, "dependencies", 0)
    assert "member 'daily' depends on unknown member 'depto'; did you mean 'depot'?" in message


def test_policy_service_operator_mistakes():
    policy, service, operator = (load(SPEC_OTHERS)[i] for i in (3, 4, 6))
    policy["policy"]["mask"][0]["with"] = "hsh"
    path, message = only_error(policy)
    assert path == ("policy", "mask", 0, "with") and "one of hash, redact, null, last4" in message
    assert "did you mean 'hash'?" in message
    service["service"]["queries"][0]["params"] = {}
    path, message = only_error(service)
    assert path == ("service", "queries", 0, "sql") and "uses $merchant but params does not declare it" in message
    operator["operator"]["auth"] = {"basic": {"user": "u", "password": "p"}}
    path, message = only_error(operator)
    assert path == ("operator", "auth", "basic", "password") and "put the password in a secret" in message


def test_dataproduct_slo_fraction():
    doc = load(SPEC_DATAPRODUCT)[0]
    doc["dataproduct"]["slos"].append({"name": "ok", "quality": {"dataset": "lake://transactions/valid",
                                                                 "min_pass_rate": 99}})
    path, message = only_error(doc)
    assert path == ("dataproduct", "slos", 1, "quality", "min_pass_rate") and "write 0.99 for 99%" in message


# ---- refs, job specs, normalise, identity -----------------------------------------------------------

def test_refs_of_a_workflow():
    doc = workflow_doc(depends_on=["depot:raw-transactions", "secret:other/key", "service:api"])
    doc["workflow"]["dag"][1]["spec"]["checks"].append(
        {"relationships": {"column": "merchant_id", "to": "depot://raw-transactions/merchants", "field": "id"}})
    doc["workflow"]["dag"].append({"name": "dbt", "stack": "dbt-run", "spec": {"project": "p"},
                                   "secrets": {"DBT_TOKEN": {"secret": "dbt-token"}}})
    doc["workflow"]["dag"].append({"name": "remote", "operator": "airflow", "spec": {"dag_id": "d"}})
    found = refs(valid(doc))
    job = ("workflow", "dag")
    assert found == [
        Ref("read", "depot://raw-transactions/transactions", job + (0, "spec", "inputs", 0, "dataset")),
        Ref("write", "lake://transactions/valid", job + (0, "spec", "outputs", 0, "dataset")),
        Ref("read", "lake://transactions/valid", job + (1, "spec", "dataset")),
        Ref("read", "depot://raw-transactions/merchants", job + (1, "spec", "checks", 5, "relationships", "to")),
        Ref("read", "lake://transactions/valid", job + (2, "spec", "dataset")),
        Ref("stack", "dbt-run", job + (3, "stack")),
        Ref("secret", "dbt-token", job + (3, "secrets", "DBT_TOKEN")),
        Ref("operator", "airflow", job + (4, "operator")),
        Ref("resource", "depot:raw-transactions", ("depends_on", 0)),
        Ref("resource", "secret:other/key", ("depends_on", 1)),
        Ref("resource", "service:transactions/api", ("depends_on", 2)),  # no workspace: the workflow's own
    ]
    assert job_specs(valid(doc)) == [
        JobSpec("stack", "dbt-run", "dbt", {"project": "p"}, job + (3, "spec")),
        JobSpec("operator", "airflow", "remote", {"dag_id": "d"}, job + (4, "spec")),
    ]


def test_refs_of_other_types():
    others = [valid(d) for d in load(SPEC_OTHERS)]
    assert refs(others[3]) == []  # policy globs are patterns, not references
    assert refs(others[4]) == [Ref("read", "lake://transactions/valid", ("service", "datasets", 0, "dataset"))]
    assert refs(others[6]) == [Ref("secret", "airflow-token", ("operator", "auth", "bearer"))]
    product = refs(valid(load(SPEC_DATAPRODUCT)[0]))
    assert [r.target for r in product] == ["depot://raw-transactions/transactions", "lake://transactions/valid",
                                           "lake://transactions/valid"]
    assert job_specs(others[0]) == []


def test_normalise_is_stable_and_ignores_key_order_and_spelling_of_defaults():
    first = normalise(valid(load(SPEC_WORKFLOW)[0]))
    assert first == normalise(valid(load(SPEC_WORKFLOW)[0]))
    reordered = load(SPEC_WORKFLOW)[0]
    reordered = dict(reversed(list(reordered.items())))
    reordered["workflow"]["dag"][0]["spec"]["outputs"][0].pop("mode")  # the default, spelled out or not
    reordered["workflow"]["dag"][0]["retry"] = {"delay": "10s", "count": 2}
    assert normalise(valid(reordered)) == first
    assert first["workspace"] == "transactions"
    assert first["workflow"]["dag"][1]["spec"]["checks"][0] == {"row_count": {"min": 1}, "severity": "error"}
    import json
    json.dumps(first)  # JSON-safe


def test_identity_of_broken_documents():
    assert identity({"version": "v1", "type": "workflow", "name": "daily", "workflow": "broken"}) == \
        ("workflow", "public", "daily")
    assert identity({"type": "secret", "name": "s", "workspace": "ops"}) == ("secret", "ops", "s")
    assert identity({"type": "depot", "name": "raw", "workspace": "x"}) == ("depot", None, "raw")
    assert identity({"type": "wrkflow", "name": "daily"}) is None
    assert identity({"type": "workflow", "name": "Bad"}) is None
    assert identity({"type": "workflow", "name": "ok", "workspace": 5}) == ("workflow", None, "ok")  # unknown ws
    assert identity("text") is None


def test_prefix_can_be_left_to_the_caller():
    doc = workflow_doc()
    doc["workflow"]["dag"][0]["depends_on"] = ["load"]
    _, diagnostics = validate_document(doc, prefix=False)
    assert diagnostics[0].message.startswith("job 'clean' depends on unknown job 'load'")


def test_bundle_members_and_member_cycles():
    doc = load(SPEC_DATAPRODUCT)[0]
    members = bundle_members(valid(doc))
    assert [(path, m.id, m.file) for path, m in members] == [
        (("dataproduct", "resources", 0), "depot", "depot.yaml"),
        (("dataproduct", "resources", 1), "daily", "workflow.yaml")]
    doc["dataproduct"]["resources"][0]["dependencies"] = ["daily"]
    path, message = only_error(doc)
    assert path == ("dataproduct", "resources", 0, "dependencies", 0)
    assert "members form a cycle: depot -> daily -> depot" in message
    assert bundle_members(valid(load(SPEC_WORKFLOW)[0])) == []


def _key_paths(doc):
    """Every key path of `doc`, for the mistake generator below."""
    stack = [((), doc)]
    while stack:
        path, node = stack.pop()
        if path:
            yield path
        items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
        stack.extend((path + (k,), v) for k, v in items)


def test_random_mistakes_never_raise_nor_leak_pydantic_wording():
    import copy
    import random
    rng = random.Random(7)
    docs = load(SPEC_WORKFLOW) + load(SPEC_DATAPRODUCT) + load(SPEC_OTHERS) + load(SPEC_HEADER)
    values = [None, 1, -3, 2.5, True, "", "Bad Name", [], [1], {}, {"a": 1}, {"secret": "s"}, {1: 2}, "10s"]
    for _ in range(600):
        doc = copy.deepcopy(rng.choice(docs))
        path = rng.choice(list(_key_paths(doc)))
        parent = doc
        for key in path[:-1]:
            parent = parent[key]
        if isinstance(parent, dict) and rng.random() < 0.3:
            parent[f"{path[-1]}x"] = parent.pop(path[-1])
        else:
            parent[path[-1]] = copy.deepcopy(rng.choice(values))
        model, diagnostics = validate_document(doc)
        identity(doc)
        if model is not None:
            normalise(model)
            refs(model)
            job_specs(model)
        for d in diagnostics:
            assert d.message and d.path is not None
            for jargon in ("Input should", "[type=", "Field required", "Value error", "Extra inputs"):
                assert jargon not in d.message, d.message


def test_validating_many_workflows_is_fast():
    docs = [load(SPEC_WORKFLOW)[0] for _ in range(500)]
    for i, doc in enumerate(docs):
        doc["name"] = f"wf-{i}"
    start = time.perf_counter()
    for doc in docs:
        assert validate_document(doc)[0] is not None
    assert time.perf_counter() - start < 5  # generous: a regression guard, not a benchmark


def test_the_model_free_type_table_agrees_with_the_models():
    from reconciler.core import scopes
    from reconciler.core.resources import BUILTIN_STACKS, TYPES

    assert scopes.BUILTIN_STACKS == BUILTIN_STACKS
    assert {t: i.scope for t, i in TYPES.items()} == scopes.SCOPES
    assert {t: i.replace_fields for t, i in TYPES.items() if i.replace_fields} == scopes.REPLACE_FIELDS


def test_validating_a_batch_gives_each_document_its_own_result():
    """validate_many's stages keep every document's result apart and in order: a batch of valid,
    invalid and non-mapping documents gets what each gets alone."""
    from reconciler.core.resolve import validate_many

    documents = [
        {"version": "v1", "type": "depot", "name": "raw", "depot": {"kind": "file", "path": "data"}},
        {"version": "v1", "type": "depot", "name": "Bad_Name", "depot": {"kind": "file", "path": "data"}},
        ["not", "a", "mapping"],
        {"version": "v1", "type": "secret", "name": "api-key", "secret": {"from": {"env": "API_KEY"}}},
        {"version": "v1", "type": "depot", "name": "raw2", "depot": {"kind": "file", "path": "d"}, "colour": "red"},
        {"version": "v1", "type": "policy", "name": "p", "policy": {"subjects": {"groups": ["g"]},
                                                                    "datasets": ["lake://default/*"], "access": "allow"}},
    ]
    batch = validate_many(documents)
    alone = [validate_many([d])[0] for d in documents]
    assert batch == alone
    assert [v.spec is not None for v in batch] == [True, False, False, True, False, True]
    assert batch[0].hash and batch[0].identity == ("depot", None, "raw") and batch[0].hash != batch[3].hash
    assert batch[1].identity is None and "not a valid name" in batch[1].diagnostics[0].message
    assert batch[4].identity == ("depot", None, "raw2")
    assert batch[3].spec["workspace"] == "public" and batch[3].identity == ("secret", "public", "api-key")
    assert "colour" in batch[4].diagnostics[0].message


def test_preload_imports_the_models_type_by_type_until_it_is_told_to_stop():
    """A helper process imports models while it waits for work (engine/coldload.py) and stops when it comes."""
    import subprocess
    import sys

    code = ("import sys; from reconciler.core.resources import preload; asked = []; "
            "preload(lambda: len(asked.append(1) or asked) > {n}); "
            "print(','.join(sorted(m.rsplit('.', 1)[1] for m in sys.modules if m.startswith('reconciler.core.resources.'))))")
    def loaded(n):
        out = subprocess.run([sys.executable, "-c", code.format(n=n)], capture_output=True, text=True, check=True)
        return set(out.stdout.strip().split(","))
    none, first, everything = loaded(0), loaded(2), loaded(99)
    assert "workflow" not in none and "workflow" in first and "policy" not in first
    assert {"workflow", "depot", "policy", "operator", "dataproduct"} <= everything
