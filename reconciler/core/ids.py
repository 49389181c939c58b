"""Resource ids: `TYPE:NAME` for instance-scoped types, `TYPE:WORKSPACE/NAME` for workspace-scoped ones."""
from __future__ import annotations

import re

NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,62}\Z")  # \Z: `$` would take "name\n" too
DEFAULT_WORKSPACE = "public"


def make_id(type_: str, name: str, workspace: str | None = None) -> str:
    return f"{type_}:{workspace}/{name}" if workspace else f"{type_}:{name}"


def split_id(rid: str) -> tuple[str, str | None, str]:
    """'workflow:ws/daily' -> ('workflow', 'ws', 'daily'); 'depot:raw' -> ('depot', None, 'raw')."""
    type_, _, rest = rid.partition(":")
    if "/" in rest:
        ws, _, name = rest.partition("/")
        return type_, ws, name
    return type_, None, rest


def valid_name(name: object) -> bool:
    return isinstance(name, str) and bool(NAME_RE.match(name))
