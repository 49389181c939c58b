"""`type: workspace`: an isolated namespace. Its section is optional and holds nothing yet."""
from __future__ import annotations

from typing import Any, Literal

from pydantic import field_validator

from .common import Header, Model


class WorkspaceSection(Model):
    """Reserved for workspace settings; `workspace: {}` is accepted."""


class WorkspaceDocument(Header):
    type: Literal["workspace"]
    workspace: WorkspaceSection | None = None

    @field_validator("workspace", mode="before")
    @classmethod
    def _section_not_scope(cls, value: Any) -> Any:
        if isinstance(value, str):
            raise ValueError("a workspace is instance-scoped and lives in no other workspace; on a workspace "
                             "document `workspace:` is its own (optional) section, a mapping; remove "
                             f"`workspace: {value}`")
        return value
