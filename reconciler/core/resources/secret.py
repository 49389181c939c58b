"""`type: secret`: a named value taken from the daemon's environment or a file, never from git."""
from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from .common import EnvName, Model, Text, WorkspaceHeader, fail

LITERAL_MESSAGE = "secret values never come from git; use from: {env: ...} or from: {file: ...}"
_LITERAL_KEYS = ("value", "values", "data", "string", "literal", "plain", "text", "base64")


class SecretSource(Model):
    forbidden_keys = {key: LITERAL_MESSAGE for key in _LITERAL_KEYS}

    env: EnvName | None = None
    file: Text | None = None  # a path on the daemon's host, not in the repo

    @model_validator(mode="after")
    def _exactly_one(self) -> "SecretSource":
        given = [key for key in ("env", "file") if getattr(self, key) is not None]
        if len(given) != 1:
            fail([((), "from: takes exactly one of env: (an environment variable of the daemon) or "
                       "file: (a file on the daemon's host)" + (f"; it has {' and '.join(given)}" if given else ""))])
        return self


class SecretSection(Model):
    forbidden_keys = {key: LITERAL_MESSAGE for key in _LITERAL_KEYS}

    from_: SecretSource = Field(alias="from")


class SecretDocument(WorkspaceHeader):
    type: Literal["secret"]
    secret: SecretSection
