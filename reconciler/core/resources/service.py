"""`type: service`: datasets and parameterised queries served over the daemon's HTTP API."""
from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, field_validator, model_validator

from reconciler.core.resource import Ref

from .common import Dataset, Identifier, Model, Name, Text, WorkspaceHeader, duplicates, fail

ParamType = Literal["string", "int", "float", "bool", "date"]
_PARAM_USE = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)")
_CONSUMER = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,62}$")


def _check_consumer(value: str) -> str:
    if not _CONSUMER.match(value):
        raise ValueError(f"'{value}' is not a valid consumer name: it is the user name policies see, so start "
                         "with a letter and use letters, digits, '_', '-' or '.' (at most 63 characters)")
    return value


ConsumerName = Annotated[str, AfterValidator(_check_consumer)]


class ServiceToken(Model):
    """A bearer token for one consumer of this service; the request then acts as user `name` (no groups)."""

    label = "token"
    name: ConsumerName
    secret: Name  # a `type: secret` in the service's workspace holds the token's value


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
    tokens: list[ServiceToken] = Field(default_factory=list)

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
        errors += duplicates(((("tokens", i, "name"), t.name) for i, t in enumerate(self.tokens)), "token")
        if not self.datasets and not self.queries:
            errors.append(((), "the service exposes nothing; add datasets: [{name, dataset}] or queries: [...]"))
        if errors:
            fail(errors)
        return self


class ServiceDocument(WorkspaceHeader):
    type: Literal["service"]
    service: ServiceSection

    def section_refs(self) -> list[Ref]:
        reads = [Ref("read", d.dataset, ("service", "datasets", i, "dataset"))
                 for i, d in enumerate(self.service.datasets)]
        # a token's secret resolves in the service's own workspace, like `{secret: NAME}` elsewhere
        return reads + [Ref("secret", t.secret, ("service", "tokens", i, "secret"))
                        for i, t in enumerate(self.service.tokens)]
