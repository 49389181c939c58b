"""`type: bundle`: resources applied as one unit, given by file or inline, with their dependencies."""
from __future__ import annotations

from typing import Any, Callable, Literal

from pydantic import Field, field_validator, model_validator

from .common import Header, Model, Name, Text, did_you_mean, duplicates, fail, find_cycle, validate_also


class BundleWorkspace(Model):
    label = "workspace"
    name: Name
    description: str | None = None


class Member(Model):
    label = "member"
    label_key = "id"

    id: Name
    # one artefact file, relative to the bundle's file; '..' is fine while it stays inside the repository,
    # which the loader checks (read_member) because only it knows where the bundle file is
    file: Text | None = None
    spec: dict[str, Any] | None = None  # a whole artefact document, validated as one by the loader
    workspace: Name | None = None  # default workspace of workspace-scoped documents in the member
    dependencies: list[Name] = Field(default_factory=list)  # ids of members applied before this one

    @model_validator(mode="after")
    def _file_or_spec(self) -> "Member":
        if self.file is not None and self.spec is not None:
            fail([(("spec",), f"member '{self.id}' gives both file: and spec:; keep one")])
        if self.file is None and self.spec is None:
            fail([((), f"member '{self.id}' needs file: (an artefact file relative to the bundle's file) "
                       "or spec: (a whole artefact document)")])
        if self.spec is not None and not ("version" in self.spec and "type" in self.spec):
            fail([(("spec",), f"member '{self.id}': spec: is a whole artefact document; give it version: v1 "
                              "and type: as well")])
        return self


class BundleSection(Model):
    workspaces: list[BundleWorkspace] = Field(default_factory=list)
    resources: list[Member] = Field(default_factory=list)

    @field_validator("workspaces")
    @classmethod
    def _workspace_names(cls, value: list[BundleWorkspace]) -> list[BundleWorkspace]:
        if errors := duplicates((((i, "name"), w.name) for i, w in enumerate(value)), "workspace"):
            fail(errors)
        return value

    @field_validator("resources", mode="wrap")
    @classmethod
    def _members(cls, value: Any, handler: Callable[[Any], Any]) -> list[Member]:
        return validate_also(handler, value, member_errors(value))


def member_errors(members: Any) -> list[tuple[tuple, str]]:
    """Duplicate ids, dependencies on unknown members or on themselves, and cycles, from raw member mappings."""
    if not isinstance(members, list):
        return []
    named = {i: m["id"] for i, m in enumerate(members) if isinstance(m, dict) and isinstance(m.get("id"), str)}
    ids = list(named.values())
    deps = {i: [(j, d) for j, d in enumerate(members[i]["dependencies"]) if isinstance(d, str)]
            if isinstance(members[i].get("dependencies"), list) else [] for i in named}
    clashes = [(loc + ("id",), message) for loc, message in
               duplicates((((i,), member_id) for i, member_id in named.items()), "member")]
    errors = list(clashes)
    for i, member_id in named.items():
        for j, dep in deps[i]:
            if dep == member_id:
                errors.append(((i, "dependencies", j), f"member '{dep}' depends on itself; remove it"))
            elif dep not in ids:
                errors.append(((i, "dependencies", j), f"member '{member_id}' depends on unknown member "
                               f"'{dep}'{did_you_mean(dep, ids, 'members: ' + ', '.join(ids))}"))
    if not clashes and (cycle := find_cycle({named[i]: [d for _, d in deps[i]] for i in named})):
        index = next(i for i, member_id in named.items() if member_id == cycle[0])
        where = (index, "dependencies", next(j for j, d in deps[index] if d == cycle[1]))
        errors.append((where, f"members form a cycle: {' -> '.join(cycle)}; remove one of these dependencies"))
    return errors


class BundleDocument(Header):
    type: Literal["bundle"]
    bundle: BundleSection
