"""`type: service`: datasets and parameterised queries served over the daemon's HTTP API."""
from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from reconciler.core.resource import Ref

from .common import Dataset, Identifier, Model, Name, Text, WorkspaceHeader, duplicates, fail

ParamType = Literal["string", "int", "float", "bool", "date"]
_PARAM_USE = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)")


class ServiceDataset(Model):
    label = "dataset"
    name: Identifier  # the dataset's name in the URL and in queries' SQL
    dataset: Dataset


class ServiceQuery(Model):
    label = "query"
    name: Name
    sql: Text
    params: dict[Identifier, ParamType] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _params_declared(self) -> "ServiceQuery":
        used = dict.fromkeys(_PARAM_USE.findall(self.sql))
        missing = [p for p in used if p not in self.params]
        if missing:
            fail([(("sql",), f"query '{self.name}' uses ${p} but params does not declare it; "
                             f"add `params: {{{p}: string}}` (string, int, float, bool or date)") for p in missing])
        return self


class ServiceSection(Model):
    datasets: list[ServiceDataset] = Field(default_factory=list)
    queries: list[ServiceQuery] = Field(default_factory=list)
    formats: list[Literal["json", "csv"]] = Field(default_factory=lambda: ["json", "csv"], min_length=1)

    @field_validator("formats")
    @classmethod
    def _unique_formats(cls, value: list[str]) -> list[str]:
        if errors := duplicates((((i,), f) for i, f in enumerate(value)), "format"):
            fail(errors)
        return value

    @model_validator(mode="after")
    def _names(self) -> "ServiceSection":
        errors = duplicates(((("datasets", i, "name"), d.name) for i, d in enumerate(self.datasets)), "dataset")
        errors += duplicates(((("queries", i, "name"), q.name) for i, q in enumerate(self.queries)), "query")
        if not self.datasets and not self.queries:
            errors.append(((), "the service exposes nothing; add datasets: [{name, dataset}] or queries: [...]"))
        if errors:
            fail(errors)
        return self


class ServiceDocument(WorkspaceHeader):
    type: Literal["service"]
    service: ServiceSection

    def section_refs(self) -> list[Ref]:
        return [Ref("read", d.dataset, ("service", "datasets", i, "dataset"))
                for i, d in enumerate(self.service.datasets)]
