"""Artefact models: one pydantic model per type, and the functions the loader and planner use on them.

`validate_document` turns one parsed YAML document into a model or into Diagnostics whose `path` is the
key path inside the document (the caller maps paths to lines). `normalise` is what gets hashed and diffed.
"""
from __future__ import annotations

from dataclasses import dataclass

from importlib import import_module
from typing import TYPE_CHECKING

from pydantic import BaseModel, ValidationError

from reconciler.core.diagnostics import Diagnostic, error
from reconciler.core.ids import DEFAULT_WORKSPACE, valid_name
from reconciler.core.resource import JobSpec, Ref
from reconciler.core.scopes import BUILTIN_STACKS, REPLACE_FIELDS as _REPLACE

from .common import SCOPES, Header, did_you_mean
from .durations import format_duration, parse_duration
from .errors import diagnostics_from

if TYPE_CHECKING:  # pragma: no cover
    from .bundle import Member

SUPPORTED_VERSIONS = ("v1",)

# type -> (module, class): each model's module is imported when a document of its type is first validated,
# so a one-file plan pays for one type's models, not all ten (building pydantic models is most of importing them)
_MODELS: dict[str, tuple[str, str]] = {
    "workspace": ("workspace", "WorkspaceDocument"),
    "depot": ("depot", "DepotDocument"),
    "workflow": ("workflow", "WorkflowDocument"),
    "policy": ("policy", "PolicyDocument"),
    "service": ("service", "ServiceDocument"),
    "secret": ("secret", "SecretDocument"),
    "stack": ("stack", "StackDocument"),
    "operator": ("operator", "OperatorDocument"),
    "bundle": ("bundle", "BundleDocument"),
    "dataproduct": ("dataproduct", "DataproductDocument"),
}


@dataclass(frozen=True)
class TypeInfo:
    name: str
    scope: str  # "instance" | "workspace"
    replace_fields: tuple[tuple, ...] = ()  # key paths whose change forces a -/+ replace

    @property
    def model(self) -> type[BaseModel]:
        found = _LOADED.get(self.name)
        if found is None:  # import_module's own lookup cost ~5 us a document, 5 % of validating one
            module, cls = _MODELS[self.name]
            found = _LOADED[self.name] = getattr(import_module(f"{__name__}.{module}"), cls)
        return found


_LOADED: dict[str, type[BaseModel]] = {}  # type -> its model class, once imported


def preload(stop) -> None:
    """Import the models one type after another, the most common first, until `stop()` says their time is up
    (a helper process waiting for work: each module imported ahead is ~5-40 ms less once the work comes)."""
    for name in ("workflow", "depot", "policy", "service", "workspace", "secret", "bundle", "dataproduct", "stack",
                 "operator"):
        if stop():
            return
        TYPES[name].model
        if name == "workflow":
            if stop():
                return
            from croniter import croniter  # noqa: F401  (schedules are validated with it)


TYPES: dict[str, TypeInfo] = {name: TypeInfo(name, SCOPES[name], _REPLACE.get(name, ())) for name in _MODELS}


def _known_types() -> str:
    return ", ".join(TYPES)


def _header_diagnostics(data: dict) -> list[Diagnostic]:
    """Checks that decide which model applies: version and type."""
    has_version, has_type = "version" in data, "type" in data
    if not has_version and not has_type:
        return [error("not an artefact: a document needs `version: v1` and `type:` "
                      f"(one of {_known_types()})", path=())]
    out = []
    if not has_type:
        out.append(error(f"the document has `version` but no `type`; add `type:` (one of {_known_types()})",
                         path=("version",)))
    if not has_version:
        out.append(error(f"the document has `type` but no `version`; add `version: {SUPPORTED_VERSIONS[-1]}`",
                         path=("type",)))
    if has_version and data["version"] not in SUPPORTED_VERSIONS:
        version = data["version"]
        if isinstance(version, str):
            message = f"unknown version '{version}'; supported versions: {', '.join(SUPPORTED_VERSIONS)}"
        else:
            message = f"version must be a string; supported versions: {', '.join(SUPPORTED_VERSIONS)}"
        out.append(error(f"{message} (write `version: {SUPPORTED_VERSIONS[-1]}`)", path=("version",)))
    if has_type:
        type_ = data["type"]
        if not isinstance(type_, str):
            out.append(error(f"type must be a string, one of {_known_types()}", path=("type",)))
        elif type_ not in TYPES:
            suggestion = did_you_mean(type_, TYPES)
            out.append(error(f"unknown type '{type_}'{suggestion}{' ' if suggestion else '; '}"
                             f"known types: {_known_types()}", path=("type",)))
    return out


def validate_document(data: dict, *, prefix: bool = True) -> tuple[BaseModel | None, list[Diagnostic]]:
    """The document's model, or None and every error in it.

    With `prefix`, messages start with "TYPE 'NAME': " (or "TYPE: ") so they read well beside a file:line.
    """
    if not isinstance(data, dict):
        got = "a list" if isinstance(data, list) else "empty" if data is None else "a single value"
        return None, [error("an artefact must be a mapping with version, type, name and the type's section, "
                            f"not {got}", path=())]
    header = _header_diagnostics(data)
    if header:
        return None, header
    type_ = data["type"]
    model = TYPES[type_].model
    try:
        return model.model_validate(data), []
    except ValidationError as exc:
        label = ""
        if prefix:
            name = data.get("name")
            label = f"{type_} '{name}': " if valid_name(name) else f"{type_}: "
        return None, diagnostics_from(exc, model, data, label)


def normalise(model: BaseModel) -> dict:
    """The whole document as JSON-safe data with defaults filled in: what is hashed, diffed and recorded."""
    return model.model_dump(mode="json", exclude_none=True, by_alias=True)


def refs(model: BaseModel) -> list[Ref]:
    """What the document points at: datasets read/written, stacks, operators, secrets, explicit resources."""
    return model.refs() if isinstance(model, Header) else []


def job_specs(model: BaseModel) -> list[JobSpec]:
    """Workflow jobs whose spec must be checked against a custom stack's or an operator's JSON Schema."""
    return model.job_specs() if getattr(model, "type", None) == "workflow" else []


def bundle_members(model: BaseModel) -> list[tuple[tuple, Member]]:
    """(key path, member) of a bundle's or data product's resources; [] for other types.

    An inline member's `spec` is a whole artefact document: validate it with `validate_document` and
    prefix its diagnostics' paths with the member's path + ("spec",).
    """
    key = getattr(model, "type", None)
    if key in ("bundle", "dataproduct"):
        return [((key, "resources", i), member) for i, member in enumerate(getattr(model, key).resources)]
    return []


def identity(data: dict) -> tuple[str, str | None, str] | None:
    """(type, workspace or None, name) from raw data even when the document is invalid; None if unusable.

    For a workspace-scoped type whose `workspace:` is unusable the workspace is None: the caller cannot
    tell which workspace's resource it is, and should keep every resource of that type and name.
    """
    if not isinstance(data, dict):
        return None
    type_, name = data.get("type"), data.get("name")
    if not isinstance(type_, str) or type_ not in TYPES or not valid_name(name):
        return None
    if TYPES[type_].scope == "instance":
        return type_, None, name
    workspace = data.get("workspace")
    if workspace is None:
        return type_, DEFAULT_WORKSPACE, name
    return type_, workspace if valid_name(workspace) else None, name


__all__ = [
    "BUILTIN_STACKS", "SUPPORTED_VERSIONS", "TYPES", "TypeInfo", "bundle_members", "format_duration", "identity",
    "job_specs", "normalise", "parse_duration", "refs", "validate_document",
]
