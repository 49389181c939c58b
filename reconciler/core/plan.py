"""The Plan: one object that `plan` renders and `apply` executes.

A saved plan is this object as JSON, pinned to the commit and the state serial it
was made from; `apply PLANFILE` refuses it when the state moved since. The JSON
shape is documented in docs/plan-format.md (format_version 1).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

from reconciler.core.resource import Resource

FORMAT_VERSION = 1

CREATE, UPDATE, DELETE, REPLACE, KEEP = "create", "update", "delete", "replace", "keep"
SYMBOLS = {CREATE: "+", UPDATE: "~", DELETE: "-", REPLACE: "-/+", KEEP: "="}


@dataclass
class Change:
    path: str  # e.g. "workflow.dag[0].spec.steps[0].sql"
    before: object = None
    after: object = None
    kind: str = "changed"  # changed | added | removed


@dataclass
class Action:
    id: str
    action: str  # create | update | delete | replace | keep
    type: str
    name: str
    workspace: str | None = None
    reason: str = ""
    changes: list[Change] = field(default_factory=list)
    file: str | None = None
    resource: Resource | None = None  # desired resource (create/update/replace)

    @property
    def symbol(self) -> str:
        return SYMBOLS[self.action]

    @property
    def changes_state(self) -> bool:
        return self.action != KEEP

    def to_json(self) -> dict:
        d = {"id": self.id, "action": self.action, "type": self.type, "name": self.name, "workspace": self.workspace,
             "reason": self.reason, "file": self.file, "changes": [asdict(c) for c in self.changes]}
        if self.resource is not None:
            r = self.resource
            d["resource"] = {"id": r.id, "type": r.type, "name": r.name, "workspace": r.workspace, "spec": r.spec,
                             "file": r.file, "doc_index": r.doc_index, "line": r.line,
                             "depends_on": sorted(r.depends_on), "prune": r.prune, "bundle": r.bundle, "hash": r.hash}
        return d

    @classmethod
    def from_json(cls, d: dict) -> "Action":
        res = None
        if d.get("resource"):
            r = dict(d["resource"])
            r["depends_on"] = set(r.get("depends_on") or ())
            res = Resource(**r)
        return cls(id=d["id"], action=d["action"], type=d["type"], name=d["name"], workspace=d.get("workspace"),
                   reason=d.get("reason", ""), changes=[Change(**c) for c in d.get("changes", [])],
                   file=d.get("file"), resource=res)


@dataclass
class Plan:
    actions: list[Action] = field(default_factory=list)
    commit: str | None = None
    source: str = ""
    state_serial: int = 0
    base: str | None = None  # for previews: the ref planned against
    held: str | None = None  # why the plan may not be applied as is (prune over the limit)
    diagnostics: list[dict] = field(default_factory=list)
    created_at: str = ""
    # ids in dependency order of everything desired, for the engine's ordering and Blocked propagation
    order: list[str] = field(default_factory=list)
    # who gains or loses access to which datasets when the plan applies ({subject, dataset, change, detail});
    # only computed for plans that touch a policy (engine/access_plan.py). Shown to reviewers, never
    # executed: apply ignores it and a saved plan's staleness is decided by commit and state serial alone.
    access: list[dict] = field(default_factory=list)
    # in-process only (never serialised): what the plan was made from, so that apply can remember the
    # plan that follows it (see engine/operations.py)
    origin: object = field(default=None, repr=False, compare=False)

    @property
    def changes(self) -> list[Action]:
        return [a for a in self.actions if a.changes_state]

    def counts(self) -> dict[str, int]:
        out = {CREATE: 0, UPDATE: 0, REPLACE: 0, DELETE: 0, KEEP: 0}
        for a in self.actions:
            out[a.action] += 1
        return out

    @property
    def has_changes(self) -> bool:
        return bool(self.changes)

    def to_json(self) -> dict:
        return {"format_version": FORMAT_VERSION, "commit": self.commit, "source": self.source,
                "state_serial": self.state_serial, "base": self.base, "held": self.held,
                "created_at": self.created_at, "summary": self.counts(), "order": self.order,
                "diagnostics": self.diagnostics, "actions": [a.to_json() for a in self.actions],
                "access": self.access}

    def dumps(self) -> str:
        from reconciler.core.jsontext import dumps_indented

        return dumps_indented(self.to_json())

    @classmethod
    def from_json(cls, d: dict) -> "Plan":
        if d.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"plan format_version {d.get('format_version')!r} is not {FORMAT_VERSION}")
        return cls(actions=[Action.from_json(a) for a in d.get("actions", [])], commit=d.get("commit"),
                   source=d.get("source", ""), state_serial=int(d.get("state_serial", 0)), base=d.get("base"),
                   held=d.get("held"), diagnostics=d.get("diagnostics", []), created_at=d.get("created_at", ""),
                   order=d.get("order", []), access=d.get("access", []))
