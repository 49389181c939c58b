"""`type: operator`: an adapter to an external engine's HTTP API (create a run, poll it, cancel it)."""
from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, field_validator, model_validator

from reconciler.core.resource import Ref

from .common import Duration, Header, Model, SecretRefField, Text, fail
from .stack import JsonSchema

RUN_STATES = ("pending", "running", "succeeded", "failed", "cancelled")


def _upper(value: Any) -> Any:
    return value.upper() if isinstance(value, str) else value


Method = Annotated[Literal["GET", "POST", "PUT", "PATCH", "DELETE"], BeforeValidator(_upper)]


class BasicAuth(Model):
    user: Text
    password: SecretRefField


class OperatorAuth(Model):
    bearer: SecretRefField | None = None
    basic: BasicAuth | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> "OperatorAuth":
        if (self.bearer is None) == (self.basic is None):
            fail([((), "auth takes exactly one of bearer: {secret: NAME} or "
                       "basic: {user: ..., password: {secret: NAME}}; omit auth for none")])
        return self


class CreateCall(Model):
    method: Method
    path: Text  # appended to base_url; templates such as {{ spec.dag_id }}
    body: Any = None
    run_id: Text  # field of the response that holds the external run id (dotted for nested)


class StatusCall(Model):
    method: Method
    path: Text
    state: Text  # field of the response that holds the external state


class CancelCall(Model):
    method: Method
    path: Text
    body: Any = None


class OperatorSection(Model):
    base_url: Text
    auth: OperatorAuth | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    create: CreateCall
    status: StatusCall
    cancel: CancelCall | None = None
    states: dict[str, Literal["pending", "running", "succeeded", "failed", "cancelled"]] = Field(min_length=1)
    poll_interval: Duration | None = None
    schema_: JsonSchema | None = Field(None, alias="schema")  # JSON Schema of a job's `spec`

    @field_validator("base_url")
    @classmethod
    def _http(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"'{value}' is not an HTTP URL; write http://HOST[:PORT]/PATH or https://...")
        return value.rstrip("/")

    @field_validator("states")
    @classmethod
    def _can_finish(cls, value: dict[str, str]) -> dict[str, str]:
        if "succeeded" not in value.values():
            fail([((), "states maps no external state to succeeded, so a run could never finish; "
                       "add e.g. `success: succeeded`")])
        return value


class OperatorDocument(Header):
    type: Literal["operator"]
    operator: OperatorSection

    def section_refs(self) -> list[Ref]:
        auth = self.operator.auth
        if auth is None:
            return []
        if auth.bearer is not None:
            return [Ref("secret", auth.bearer.target, ("operator", "auth", "bearer"))]
        return [Ref("secret", auth.basic.password.target, ("operator", "auth", "basic", "password"))]
