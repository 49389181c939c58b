"""The provider interface: one small object per resource type.

Providers do the effect (create a schema, introspect a depot, check a secret)
and return an `Outcome` value; they never raise for a user-facing failure and
never write the resource's own state record (the engine does). They may write
catalog entries through `ctx.store`. Every provider operation is idempotent:
after a crash the engine calls it again with the same input.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Protocol

from reconciler.core.record import Record
from reconciler.core.resource import Resource

if TYPE_CHECKING:  # pragma: no cover
    from reconciler.store.state import StateStore


@dataclass
class Outcome:
    ok: bool
    message: str = ""
    outputs: dict = field(default_factory=dict)  # recorded on the resource; never secret values

    @classmethod
    def success(cls, message: str = "", **outputs) -> "Outcome":
        return cls(True, message, outputs)

    @classmethod
    def failure(cls, message: str, **outputs) -> "Outcome":
        return cls(False, message, outputs)


@dataclass
class ApplyContext:
    state_dir: Path
    store: "StateStore"
    commit: str | None
    # the repository tree at `commit` as a local directory (materialised on first call)
    repo_dir: Callable[[], Path]
    # every desired resource by id, and every recorded one, for cross-resource lookups
    resources: dict[str, Resource] = field(default_factory=dict)
    records: dict[str, Record] = field(default_factory=dict)
    environ: dict[str, str] = field(default_factory=dict)  # where secret values come from (os.environ)

    @property
    def lake_path(self) -> Path:
        return self.state_dir / "lake.duckdb"

    def run_dir(self, workspace: str) -> Path:
        return self.state_dir / "runs" / workspace


class Provider(Protocol):
    type: str

    def apply(self, ctx: ApplyContext, resource: Resource, prior: Record | None) -> Outcome: ...

    def delete(self, ctx: ApplyContext, record: Record) -> Outcome: ...

    def observe(self, ctx: ApplyContext, record: Record) -> dict | None:
        """Current observed state, for drift and `get`; None when the provider cannot observe."""
