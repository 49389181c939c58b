"""The `spec` of jobs on the built-in stacks: sql, quality, profile, python, shell."""
from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BeforeValidator, Field, model_validator

from reconciler.core.resource import Ref

from .common import (Dataset, EnvName, Identifier, LakeDataset, Model, PositiveDuration, RelPath, Text,
                     did_you_mean, duplicates, fail)

OutputMode = Literal["overwrite", "append", "merge"]


class NamedDataset(Model):
    label = "input"
    name: Identifier  # the table name the job's code sees
    dataset: Dataset


def _merge_keys(output: Any) -> None:
    if output.mode == "merge" and not output.keys:
        fail([(("keys",), f"merge output needs keys: the output to {output.dataset} uses mode: merge; list the "
                          "columns that identify a row, e.g. keys: [id]")])
    if output.mode != "merge" and output.keys:
        fail([(("keys",), f"keys only apply to mode: merge (this output's mode is {output.mode}); remove keys")])


# ---- sql ---------------------------------------------------------------------------------------

class SqlStep(Model):
    label = "step"
    name: Identifier
    sql: Text


class SqlOutput(Model):
    from_: Identifier = Field(alias="from")  # a step's (or an input's) name
    dataset: LakeDataset
    mode: OutputMode = "overwrite"
    keys: list[Text] = Field(default_factory=list)
    column_tags: dict[Text, list[Text]] = Field(default_factory=dict)  # column -> tags, e.g. {email: [pii]}

    @model_validator(mode="after")
    def _keys(self) -> "SqlOutput":
        _merge_keys(self)
        return self


class SqlSpec(Model):
    inputs: list[NamedDataset] = Field(default_factory=list)
    steps: list[SqlStep] = Field(min_length=1)
    outputs: list[SqlOutput] = Field(default_factory=list)

    @model_validator(mode="after")
    def _names(self) -> "SqlSpec":
        # inputs and steps share one namespace: both are tables the steps' SQL can read
        known_names = {x.name for x in self.inputs} | {x.name for x in self.steps}
        if (len(known_names) == len(self.inputs) + len(self.steps)
                and all(out.from_ in known_names for out in self.outputs)
                and len({out.dataset for out in self.outputs}) == len(self.outputs)):
            return self  # nothing to report (the common case, told ~3x faster than listing what is wrong)
        named = [(("inputs", i, "name"), x.name) for i, x in enumerate(self.inputs)]
        named += [(("steps", i, "name"), x.name) for i, x in enumerate(self.steps)]
        errors = duplicates(named, "input or step")
        known = [name for _, name in named]
        for i, out in enumerate(self.outputs):
            if out.from_ not in known:
                errors.append((("outputs", i, "from"), f"output from '{out.from_}' names no step or input"
                               f"{did_you_mean(out.from_, known, 'steps: ' + ', '.join(s.name for s in self.steps))}"))
        errors += duplicates(((("outputs", i, "dataset"), o.dataset) for i, o in enumerate(self.outputs)),
                             "output dataset")
        if errors:
            fail(errors)
        return self

    def dataset_refs(self, base: tuple = ()) -> list[Ref]:
        return ([Ref("read", x.dataset, base + ("inputs", i, "dataset")) for i, x in enumerate(self.inputs)]
                + [Ref("write", o.dataset, base + ("outputs", i, "dataset")) for i, o in enumerate(self.outputs)])


# ---- quality -----------------------------------------------------------------------------------

class RowCount(Model):
    min: int | None = Field(None, ge=0)
    max: int | None = Field(None, ge=0)

    @model_validator(mode="after")
    def _bounds(self) -> "RowCount":
        if self.min is None and self.max is None:
            fail([((), "row_count needs min:, max: or both")])
        if self.min is not None and self.max is not None and self.min > self.max:
            fail([(("min",), f"row_count min ({self.min}) is above max ({self.max})")])
        return self


class AcceptedValues(Model):
    column: Text
    values: list[Any] = Field(min_length=1)


class Relationships(Model):
    column: Text
    to: Dataset
    field: Text


class Freshness(Model):
    column: Text
    max_age: PositiveDuration


class Expression(Model):
    sql: Text  # a boolean SQL expression every row must satisfy


CHECK_KINDS = ("row_count", "not_null", "unique", "accepted_values", "relationships", "freshness", "expression")
_CHECK_KIND_SET = frozenset(CHECK_KINDS)


class QualityCheck(Model):
    row_count: RowCount | None = None
    not_null: list[Text] | None = Field(None, min_length=1)
    unique: list[Text] | None = Field(None, min_length=1)
    accepted_values: AcceptedValues | None = None
    relationships: Relationships | None = None
    freshness: Freshness | None = None
    expression: Expression | None = None
    severity: Literal["error", "warn"] = "error"
    name: Text | None = None

    @model_validator(mode="after")
    def _one_check(self) -> "QualityCheck":
        written = _CHECK_KIND_SET.intersection(self.model_fields_set)  # some may be null
        if len(written) == 1 and getattr(self, next(iter(written))) is not None:
            return self
        given = [kind for kind in CHECK_KINDS if getattr(self, kind) is not None]
        if len(given) != 1:
            have = f"; this one has {', '.join(given)} (split it into one item per check)" if given else ""
            fail([((), f"each check has exactly one of {', '.join(CHECK_KINDS)}{have}")])
        return self

    @property
    def kind(self) -> str:
        return next(kind for kind in CHECK_KINDS if getattr(self, kind) is not None)


class QualitySpec(Model):
    dataset: Dataset
    checks: list[QualityCheck] = Field(min_length=1)

    def dataset_refs(self, base: tuple = ()) -> list[Ref]:
        refs = [Ref("read", self.dataset, base + ("dataset",))]
        refs += [Ref("read", c.relationships.to, base + ("checks", i, "relationships", "to"))
                 for i, c in enumerate(self.checks) if c.relationships is not None]
        return refs


# ---- profile -----------------------------------------------------------------------------------

class ProfileSpec(Model):
    dataset: Dataset
    columns: list[Text] | None = Field(None, min_length=1)  # None: every column

    def dataset_refs(self, base: tuple = ()) -> list[Ref]:
        return [Ref("read", self.dataset, base + ("dataset",))]


# ---- python ------------------------------------------------------------------------------------

_PY_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _check_function(value: str) -> str:
    if not _PY_IDENTIFIER.match(value):
        raise ValueError(f"'{value}' is not a Python function name")
    return value


class PythonOutput(Model):
    label = "output"
    name: Identifier  # the key the function returns the table under
    dataset: LakeDataset
    mode: OutputMode = "overwrite"
    keys: list[Text] = Field(default_factory=list)
    column_tags: dict[Text, list[Text]] = Field(default_factory=dict)  # column -> tags, e.g. {email: [pii]}

    @model_validator(mode="after")
    def _keys(self) -> "PythonOutput":
        _merge_keys(self)
        return self


class PythonSpec(Model):
    file: RelPath  # a .py file of the repository
    function: Annotated[str, AfterValidator(_check_function)]
    inputs: list[NamedDataset] = Field(default_factory=list)
    outputs: list[PythonOutput] = Field(default_factory=list)
    params: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _names(self) -> "PythonSpec":
        errors = duplicates(((("inputs", i, "name"), x.name) for i, x in enumerate(self.inputs)), "input")
        errors += duplicates(((("outputs", i, "name"), x.name) for i, x in enumerate(self.outputs)), "output")
        if errors:
            fail(errors)
        return self

    def dataset_refs(self, base: tuple = ()) -> list[Ref]:
        return ([Ref("read", x.dataset, base + ("inputs", i, "dataset")) for i, x in enumerate(self.inputs)]
                + [Ref("write", o.dataset, base + ("outputs", i, "dataset")) for i, o in enumerate(self.outputs)])


# ---- shell -------------------------------------------------------------------------------------

def _command(value: Any) -> Any:
    if isinstance(value, str):
        if not value.strip():
            raise ValueError("must not be empty")
        return value
    if isinstance(value, list):
        if not value:
            raise ValueError("must not be empty")
        if not all(isinstance(part, str) for part in value):
            raise ValueError("must be a string or a list of strings; quote numbers in the list")
        return value
    raise ValueError("must be a string (run by the shell) or a list of strings (run directly)")


class ShellSpec(Model):
    command: Annotated[Any, BeforeValidator(_command)]
    env: dict[EnvName, str] = Field(default_factory=dict)

    def dataset_refs(self, base: tuple = ()) -> list[Ref]:
        return []


BUILTIN_SPECS: dict[str, type[Model]] = {
    "sql": SqlSpec,
    "quality": QualitySpec,
    "profile": ProfileSpec,
    "python": PythonSpec,
    "shell": ShellSpec,
}
