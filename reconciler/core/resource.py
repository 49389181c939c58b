"""A validated, resolved resource: what the planner compares against recorded state."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import NamedTuple


class Ref(NamedTuple):
    """Something a resource's spec points at, found by its model's `refs()`.

    kind:
      - "read":     a dataset address read (depot://D/X or lake://WS/T)
      - "write":    a lake:// address written (workflow outputs)
      - "stack":    a custom stack name a job runs on (built-ins are not reported)
      - "operator": an operator name a job runs on
      - "secret":   a secret; target is "NAME" or "WORKSPACE/NAME" when `workspace:` is given beside it
      - "resource": an explicit resource id (depends_on)
    path: key path inside the document, to place errors.
    """

    kind: str
    target: str
    path: tuple = ()


class JobSpec(NamedTuple):
    """A job whose `spec` must be checked against a custom stack's or operator's JSON Schema."""

    runtime_kind: str  # "stack" | "operator"
    runtime_name: str
    job: str
    spec: dict
    path: tuple  # key path of the job's `spec`


def spec_hash(spec: dict) -> str:
    return hashlib.sha256(json.dumps(spec, sort_keys=True, separators=(",", ":"), default=str).encode()).hexdigest()


@dataclass
class Resource:
    id: str
    type: str
    name: str
    workspace: str | None
    spec: dict  # the normalised document (model dump, JSON-safe), what is hashed, diffed and recorded
    file: str
    doc_index: int
    line: int
    depends_on: set[str] = field(default_factory=set)
    prune: bool = True
    bundle: str | None = None  # id of the bundle/dataproduct this resource belongs to
    hash: str = ""

    def __post_init__(self):
        if not self.hash:
            self.hash = spec_hash(self.spec)

    @property
    def spec_in_memory(self) -> bool:
        """Reading `spec` reads nothing from a cache (see resolve.RestoredResource)."""
        return True
