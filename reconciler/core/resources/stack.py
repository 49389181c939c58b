"""`type: stack`: a job runtime defined in YAML: a command template plus a JSON Schema for jobs' `spec`."""
from __future__ import annotations

import functools
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field

from .common import EnvName, Header, Model, did_you_mean, fail



@functools.cache
def _meta():
    """The JSON Schema meta-schema validator; jsonschema is imported only when a stack or operator is validated."""
    from jsonschema import Draft202012Validator

    return Draft202012Validator(Draft202012Validator.META_SCHEMA)

_JSON_TYPES = ("string", "number", "integer", "boolean", "object", "array", "null")


_HUMAN_TYPES = {"object": "a mapping", "boolean": "true or false", "array": "a list", "string": "a string",
                "integer": "a whole number", "number": "a number", "null": "empty"}


def _describe(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return {True: "true", False: "false", None: "empty"}[value]
    if isinstance(value, (dict, list)):
        return "a mapping" if isinstance(value, dict) else "a list"
    return f"'{value}'" if isinstance(value, str) else str(value)


def _schema_message(err: Any) -> str:
    path = tuple(err.absolute_path)
    if path and path[-1] == "type" and err.validator in ("anyOf", "enum"):
        if isinstance(err.instance, str):
            return (f"'{err.instance}' is not a JSON Schema type"
                    f"{did_you_mean(err.instance, _JSON_TYPES, 'types: ' + ', '.join(_JSON_TYPES))}")
        return f"invalid JSON Schema: type must be one of {', '.join(_JSON_TYPES)} or a list of them"
    if err.validator == "type":
        wanted = [err.validator_value] if isinstance(err.validator_value, str) else list(err.validator_value)
        human = " or ".join(_HUMAN_TYPES.get(t, t) for t in wanted)
        return f"invalid JSON Schema: this must be {human}, not {_describe(err.instance)}"
    return f"invalid JSON Schema: {err.message}"


def _check_json_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """Every way `schema` breaks JSON Schema draft 2020-12, each at its key path inside the schema."""
    found = sorted(_meta().iter_errors(schema), key=lambda e: list(map(str, e.absolute_path)))
    if found:
        fail([(tuple(err.absolute_path), _schema_message(err)) for err in found])
    return schema


JsonSchema = Annotated[dict[str, Any], AfterValidator(_check_json_schema)]


class StackSection(Model):
    command: list[str] = Field(min_length=1)  # templates: {{ spec.x }}, {{ run_dir }}, ...
    env: dict[EnvName, str] = Field(default_factory=dict)
    schema_: JsonSchema | None = Field(None, alias="schema")  # JSON Schema of a job's `spec`


class StackDocument(Header):
    type: Literal["stack"]
    stack: StackSection
