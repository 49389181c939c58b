"""What the state store remembers about one resource (the planner's `prior`)."""
from __future__ import annotations

from dataclasses import dataclass, field

# Phases (SPEC.md section 3)
PENDING = "Pending"
APPLYING = "Applying"
READY = "Ready"
FAILED = "Failed"
BLOCKED = "Blocked"
DELETING = "Deleting"
PHASES = (PENDING, APPLYING, READY, FAILED, BLOCKED, DELETING)


@dataclass
class Record:
    id: str
    type: str
    name: str
    workspace: str | None
    spec: dict | None  # last applied spec (None when never applied successfully)
    hash: str | None  # hash of `spec`
    phase: str
    message: str = ""
    commit: str | None = None  # commit whose spec was applied last
    file: str | None = None  # source file of the last desired spec seen
    depends_on: list[str] = field(default_factory=list)
    prune: bool = True
    bundle: str | None = None
    outputs: dict = field(default_factory=dict)  # provider outputs (fingerprints, dataset counts...), never secret values
    created_at: str | None = None
    updated_at: str | None = None
    applied_at: str | None = None
    # hash the last attempt tried to apply (set with phase Applying before the provider runs)
    target_hash: str | None = None
