"""A data product in the Bitol standards: its output ports as an Open Data Contract Standard
(ODCS v3.1.0) contract, and the product as an Open Data Product Standard (ODPS v1.0.0) document.

Both are built from the product view (view.py), so they show what the catalog knows now: one
ODCS schema object per output port with its columns (logical types mapped from DuckDB's), the
quality checks that applied workflows declare on the dataset, and the SLOs as SLA properties.
Ids are UUIDs derived from names, so exporting twice gives the same document and the ODPS output
ports point at the ODCS contract by its id. An input port that is another product's output port
points at that product's contract.
"""
from __future__ import annotations

import uuid
from typing import Iterable

from reconciler.core.resources import parse_duration

ODCS_VERSION = "v3.1.0"
ODPS_VERSION = "v1.0.0"
DEFAULT_VERSION = "1.0.0"  # a product's `labels: {version: ...}` overrides it

_INTEGERS = {"TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT", "UINTEGER",
             "UBIGINT", "UHUGEINT", "INT", "INT1", "INT2", "INT4", "INT8", "LONG", "SHORT", "SIGNED", "SERIAL",
             "BIGSERIAL", "SMALLSERIAL"}
_NUMBERS = {"DECIMAL", "NUMERIC", "DOUBLE", "FLOAT", "REAL", "FLOAT4", "FLOAT8", "DOUBLE PRECISION"}
_OBJECTS = {"STRUCT", "MAP", "JSON", "JSONB", "UNION"}


def contract_id(product: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"reconciler:dataproduct:{product}:contract"))


def product_id(product: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"reconciler:dataproduct:{product}"))


def dataset_contract_id(address: str) -> str:
    """The id standing for a dataset no product publishes a contract for (a depot's, say)."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, address))


def logical_type(physical: str | None) -> str | None:
    """ODCS logicalType of a DuckDB (or SQLite/PostgreSQL) column type; None when unknown."""
    t = " ".join((physical or "").upper().split())
    if not t:
        return None
    if t.endswith("]"):
        return "array"
    base = t.split("(")[0].strip()
    if base in _OBJECTS:
        return "object"
    if base.startswith("TIMESTAMP") or base == "DATETIME":
        return "timestamp"
    if base == "DATE":
        return "date"
    if base.startswith("TIME"):
        return "time"
    if base in ("BOOLEAN", "BOOL", "LOGICAL"):
        return "boolean"
    if base in _INTEGERS:
        return "integer"
    if base in _NUMBERS:
        return "number"
    return "string"  # VARCHAR, TEXT, UUID, BLOB, ENUM, INTERVAL...


def _version(view: dict) -> str:
    return str((view.get("labels") or {}).get("version") or DEFAULT_VERSION)


def _severity(check: dict) -> str:
    return "warning" if str(check.get("severity") or "error").startswith("warn") else "error"


def _checks(port: dict) -> tuple[dict[str, list[dict]], list[dict]]:
    """(column -> property-level quality rules, object-level quality rules) of the checks declared on a port."""
    by_column: dict[str, list[dict]] = {}
    on_object: list[dict] = []
    physical = port.get("location") or port["dataset"]
    for declared in port.get("checks") or ():
        check = declared["check"]
        common = {"severity": _severity(check)}
        if check.get("name"):
            common["name"] = str(check["name"])
        if (spec := check.get("row_count")) is not None:
            low, high = spec.get("min"), spec.get("max")
            bound = ({"mustBe": low} if low is not None and low == high
                     else {"mustBeBetween": [low, high]} if low is not None and high is not None
                     else {"mustBeGreaterOrEqualTo": low} if low is not None
                     else {"mustBeLessOrEqualTo": high})
            on_object.append({"type": "library", "metric": "rowCount", **bound, "unit": "rows",
                              "dimension": "completeness", **common})
        elif (spec := check.get("not_null")) is not None:
            for column in spec:
                by_column.setdefault(str(column), []).append(
                    {"type": "library", "metric": "nullValues", "mustBe": 0, "dimension": "completeness", **common})
        elif (spec := check.get("unique")) is not None:
            rule = {"type": "library", "metric": "duplicateValues", "mustBe": 0, "dimension": "uniqueness", **common}
            if len(spec) == 1:
                by_column.setdefault(str(spec[0]), []).append(rule)
            else:
                on_object.append(rule | {"arguments": {"properties": [str(c) for c in spec]}})
        elif (spec := check.get("accepted_values")) is not None:
            by_column.setdefault(str(spec["column"]), []).append(
                {"type": "library", "metric": "invalidValues", "mustBe": 0, "dimension": "conformity",
                 "arguments": {"validValues": list(spec.get("values") or [])}, **common})
        elif (spec := check.get("relationships")) is not None:
            by_column.setdefault(str(spec["column"]), []).append(
                {"type": "text", "dimension": "consistency", **common,
                 "description": f"every {spec['column']} is found in {spec['to']}.{spec['field']}"})
        elif (spec := check.get("freshness")) is not None:
            on_object.append({"type": "text", "dimension": "timeliness", **common,
                              "description": f"the newest {spec['column']} is at most {spec['max_age']} old"})
        elif (spec := check.get("expression")) is not None:
            condition = str(spec.get("sql", "")).strip().rstrip(";")
            on_object.append({"type": "sql", "query": f"SELECT count(*) FROM {physical} WHERE NOT ({condition})",
                              "mustBe": 0, "dimension": "accuracy", **common,
                              "description": f"every row satisfies {condition}"})
    return by_column, on_object


def _schema_object(port: dict) -> dict:
    by_column, on_object = _checks(port)
    unique = {c for c, rules in by_column.items() for r in rules if r.get("metric") == "duplicateValues"}
    required = {c for c, rules in by_column.items() for r in rules if r.get("metric") == "nullValues"}
    properties = []
    for col in port.get("columns") or ():
        prop: dict = {"name": col["name"], "physicalType": col.get("type") or "unknown"}
        if (logical := logical_type(col.get("type"))) is not None:
            prop["logicalType"] = logical
        if col["name"] in required:
            prop["required"] = True
        if col["name"] in unique:
            prop["unique"] = True
        if col.get("tags"):
            prop["tags"] = list(col["tags"])
        if by_column.get(col["name"]):
            prop["quality"] = by_column[col["name"]]
        properties.append(prop)
    obj: dict = {"id": port["name"], "name": port["name"], "logicalType": "object", "physicalType": "table",
                 "physicalName": port.get("location") or port["dataset"], "properties": properties}
    if port.get("description"):
        obj["description"] = port["description"]
    if port.get("tags"):
        obj["tags"] = list(port["tags"])
    if on_object:
        obj["quality"] = on_object
    obj["customProperties"] = [{"property": "address", "value": port["dataset"]}]
    if port.get("row_count") is not None:
        obj["customProperties"].append({"property": "rowCount", "value": port["row_count"]})
    return obj


def _unit(seconds: float) -> tuple[float, str]:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return seconds // size, unit
    return seconds, "s"


def _sla(view: dict) -> list[dict]:
    ports = {p["dataset"]: p["name"] for p in view.get("outputs") or ()}
    out = []
    for result in view.get("slos") or ():
        slo, name = result.get("spec") or {}, result["name"]
        if (spec := slo.get("freshness")) is not None:
            value, unit = _unit(parse_duration(spec["max_age"]))
            out.append({"id": name, "property": "latency", "value": int(value) if value == int(value) else value,
                        "unit": unit, "element": ports.get(spec["dataset"], spec["dataset"]),
                        "description": f"{spec['dataset']} is written at most {spec['max_age']} ago"})
        elif (spec := slo.get("quality")) is not None:
            window = f" over {spec['window']}" if spec.get("window") else ""
            out.append({"id": name, "property": "errorRate", "value": round((1 - spec["min_pass_rate"]) * 100, 6),
                        "unit": "percent", "element": ports.get(spec["dataset"], spec["dataset"]),
                        "description": f"at least {spec['min_pass_rate'] * 100:g}% of the quality checks on "
                                       f"{spec['dataset']} pass{window}"})
        elif (spec := slo.get("availability")) is not None:
            out.append({"id": name, "property": "availability", "value": round(spec["min"] * 100, 6),
                        "unit": "percent",
                        "description": f"service {spec['service']} answers its health probe at least "
                                       f"{spec['min'] * 100:g}% of the time over 24h"})
    return out


def _upstream(edges: Iterable[dict], address: str) -> set[str]:
    edges = list(edges)
    seen, todo = set(), [address]
    while todo:
        node = todo.pop()
        for e in edges:
            if e["target"] == node and e["source"] not in seen:
                seen.add(e["source"])
                todo.append(e["source"])
    return seen


def to_odcs(view: dict, lake_path: str | None = None) -> dict:
    """An ODCS v3.1.0 data contract for the product's output ports."""
    doc: dict = {"apiVersion": ODCS_VERSION, "kind": "DataContract", "id": contract_id(view["name"]),
                 "name": view["name"], "version": _version(view),
                 "status": "active" if view.get("phase") == "Ready" else "draft"}
    if view.get("domain"):
        doc["domain"] = view["domain"]
    if view.get("tags"):
        doc["tags"] = list(view["tags"])
    description = {"usage": f"the output ports of data product {view['name']}, served by Reconciler"}
    if view.get("description"):
        description["purpose"] = view["description"]
    doc["description"] = description
    workspaces = sorted({p["location"].split(".")[0] for p in view.get("outputs") or ()
                         if p.get("kind") == "lake" and p.get("location")})
    if lake_path and workspaces:
        doc["servers"] = [{"server": f"lake-{ws}", "type": "duckdb", "database": str(lake_path), "schema": ws}
                          for ws in workspaces]
    doc["schema"] = [_schema_object(p) for p in view.get("outputs") or ()]
    if sla := _sla(view):
        doc["slaProperties"] = sla
    if view.get("owner"):
        doc["team"] = {"name": view["owner"]}
    custom = [{"property": "dataProduct", "value": view["name"]}]
    if view.get("commit"):
        custom.append({"property": "sourceCommit", "value": view["commit"]})
    doc["customProperties"] = custom
    return doc


def _published(products: Iterable[dict]) -> dict[str, tuple[str, str]]:
    """dataset address -> (contract id, version) of the product publishing it as an output port."""
    out = {}
    for p in products:
        for port in p.get("outputs") or ():
            out[port["dataset"]] = (contract_id(p["name"]), str((p.get("labels") or {}).get("version")
                                                                 or DEFAULT_VERSION))
    return out


def to_odps(view: dict, others: Iterable[dict] = ()) -> dict:
    """An ODPS v1.0.0 data product document. `others` are the other products (name, outputs, labels),
    so that an input port fed by another product names that product's contract."""
    published = _published(o for o in others if o.get("name") != view["name"])
    version = _version(view)
    doc: dict = {"apiVersion": ODPS_VERSION, "kind": "DataProduct", "id": product_id(view["name"]),
                 "name": view["name"], "version": version,
                 "status": "active" if view.get("phase") == "Ready" else "draft"}
    if view.get("domain"):
        doc["domain"] = view["domain"]
    if view.get("description"):
        doc["description"] = {"purpose": view["description"]}
    if view.get("tags"):
        doc["tags"] = list(view["tags"])
    inputs = []
    for port in view.get("inputs") or ():
        contract, port_version = published.get(port["dataset"], (dataset_contract_id(port["dataset"]),
                                                                  DEFAULT_VERSION))
        inputs.append({"name": port["name"], "version": port_version, "contractId": contract,
                       "customProperties": [{"property": "dataset", "value": port["dataset"]}]})
    doc["inputPorts"] = inputs
    input_contracts = [(p["contractId"], p["version"]) for p in inputs]
    outputs = []
    for port in view.get("outputs") or ():
        upstream = _upstream(view.get("lineage") or (), port["dataset"])
        out = {"name": port["name"], "version": version, "type": "tables", "contractId": contract_id(view["name"]),
               "customProperties": [{"property": "dataset", "value": port["dataset"]}]}
        if port.get("description"):
            out["description"] = port["description"]
        fed_by = [{"id": c, "version": v} for (c, v), p in zip(input_contracts, view.get("inputs") or ())
                  if p["dataset"] in upstream]
        if fed_by:
            out["inputContracts"] = fed_by
        outputs.append(out)
    doc["outputPorts"] = outputs
    if view.get("owner"):
        doc["team"] = {"name": view["owner"]}
    custom = [{"property": "resources", "value": [r["id"] for r in view.get("resources") or ()]}]
    if view.get("commit"):
        custom.append({"property": "sourceCommit", "value": view["commit"]})
    doc["customProperties"] = custom
    if view.get("created_at"):
        doc["productCreatedTs"] = str(view["created_at"])
    return doc
