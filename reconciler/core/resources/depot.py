"""`type: depot`: a registered data source. Which fields apply depends on `kind`."""
from __future__ import annotations

from typing import Any, Callable, Literal

from pydantic import Field, field_validator, model_validator

from reconciler.core.resource import Ref

from .common import Header, Model, SecretRefField, Text, fail, validate_also

KINDS = ("file", "duckdb", "sqlite", "postgres")
_SHARED = {"kind", "datasets", "column_tags"}
# kind -> (required fields, other allowed fields), by their YAML names
KIND_FIELDS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "file": (("path",), ("format",)),
    "duckdb": (("path",), ()),
    "sqlite": (("path",), ()),
    "postgres": (("host", "database", "user"), ("port", "password", "schema")),
}
POSTGRES_DEFAULTS = {"port": 5432, "schema_": "public"}


class DepotSection(Model):
    kind: Literal["file", "duckdb", "sqlite", "postgres"]
    path: Text | None = None  # file: a folder; duckdb/sqlite: a database file (repo-relative or absolute on the host)
    format: Literal["csv", "parquet", "json"] | None = None
    host: Text | None = None
    port: int | None = Field(None, ge=1, le=65535)
    database: Text | None = None
    user: Text | None = None
    password: SecretRefField | None = None
    schema_: Text | None = Field(None, alias="schema")
    datasets: list[Text] | None = Field(None, min_length=1)  # None: every file / table
    column_tags: dict[str, list[Text]] = Field(default_factory=dict)  # "dataset.column" -> tags

    @field_validator("column_tags")
    @classmethod
    def _column_keys(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        bad = [key for key in value if "." not in key.strip(".") or key.startswith(".") or key.endswith(".")]
        if bad:
            fail([((key,), f"column_tags key '{key}' must be DATASET.COLUMN, e.g. transactions.card_number")
                  for key in bad])
        return value

    @model_validator(mode="wrap")
    @classmethod
    def _fields_of_kind(cls, data: Any, handler: Callable[[Any], Any]) -> "DepotSection":
        section = validate_also(handler, data, kind_errors(data))
        if section.kind == "postgres":
            for attr, default in POSTGRES_DEFAULTS.items():
                if getattr(section, attr) is None:
                    setattr(section, attr, default)
        return section


def kind_errors(data: Any) -> list[tuple[tuple, str]]:
    """Fields that do not apply to the depot's kind, and the ones it lacks, from the raw mapping."""
    kind = data.get("kind") if isinstance(data, dict) else None
    if not isinstance(kind, str) or kind not in KIND_FIELDS:
        return []
    required, optional = KIND_FIELDS[kind]
    known = {info.alias or name for name, info in DepotSection.model_fields.items()}
    errors = []
    for key in data:
        if key in known and key not in _SHARED and key not in required and key not in optional:
            errors.append(((key,), f"'{key}' does not apply to a {kind} depot; a {kind} depot takes "
                                   f"{', '.join(required + optional)} (remove '{key}' or change kind)"))
    for key in required:
        if key not in data:
            errors.append(((), f"a {kind} depot needs '{key}'; add `{key}: ...`"))
    return errors


class DepotDocument(Header):
    type: Literal["depot"]
    depot: DepotSection

    def section_refs(self) -> list[Ref]:
        if self.depot.password is None:
            return []
        return [Ref("secret", self.depot.password.target, ("depot", "password"))]
