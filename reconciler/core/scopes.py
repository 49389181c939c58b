"""Facts about artefact types that do not need the models: scopes, built-in stacks, replace fields.

Kept apart from `core/resources` (pydantic models, ~0.3 s to import) so that a plan whose
documents were all validated before can be made without importing the models at all.
"""
from __future__ import annotations

SCOPES: dict[str, str] = {
    "workspace": "instance",
    "depot": "instance",
    "workflow": "workspace",
    "policy": "instance",
    "service": "workspace",
    "secret": "workspace",
    "stack": "instance",
    "operator": "instance",
    "bundle": "instance",
    "dataproduct": "instance",
}

BUILTIN_STACKS = ("sql", "quality", "profile", "python", "shell")

# key paths whose change forces a -/+ replace
REPLACE_FIELDS: dict[str, tuple[tuple, ...]] = {"depot": (("depot", "kind"),)}


def workspace_scoped(type_: str) -> bool:
    return SCOPES.get(type_) == "workspace"
