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

# stacks whose job specs declare every lake table they write; anything else (shell, custom stacks,
# operators) may write tables validate cannot see, so policy patterns over their workspaces are not judged
DECLARING_STACKS = ("sql", "python", "quality", "profile")

# key paths whose change forces a -/+ replace
REPLACE_FIELDS: dict[str, tuple[tuple, ...]] = {"depot": (("depot", "kind"),)}


def workspace_scoped(type_: str) -> bool:
    return SCOPES.get(type_) == "workspace"


def has_opaque_job(spec: dict) -> bool:
    """Whether a workflow's spec has a job that may write lake tables it does not declare (here, not in
    core/policy_checks.py: a warm update asks it of every changed workflow, and that module costs ~20 ms to
    import with core/access.py)."""
    for job in (spec.get("workflow") or {}).get("dag") or ():
        if isinstance(job, dict) and (job.get("operator") or job.get("stack") not in DECLARING_STACKS):
            return True
    return False
