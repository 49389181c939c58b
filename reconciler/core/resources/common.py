"""Pieces every artefact model shares: the base model, value types, the common header, error helpers.

Cross-field checks raise `fail([(key_path, message), ...])`: pydantic merges those errors into the
document's ValidationError with the key paths prefixed, so one document reports all of its errors.
"""
from __future__ import annotations

import difflib
from typing import Annotated, Any, Callable, ClassVar, Iterable, Literal, NoReturn

from pydantic import (AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints,
                      ValidationError, ValidationInfo, field_validator)
from pydantic_core import PydanticCustomError

from reconciler.core.ids import DEFAULT_WORKSPACE, NAME_RE, make_id
from reconciler.core.resource import Ref

from .durations import parse_duration

# type -> scope; the single list of artefact types (TYPES in __init__ adds the models)
from reconciler.core.scopes import SCOPES  # noqa: E402  (one table, shared with the model-free core)

CUSTOM_ERROR = "reconciler"  # pydantic error type of messages that are already complete sentences


def fail(errors: Iterable[tuple[tuple, str]]) -> NoReturn:
    """Raise several errors at once, each at a key path relative to the value being validated."""
    raise ValidationError.from_exception_data(
        "reconciler",
        [{"type": PydanticCustomError(CUSTOM_ERROR, "{message}", {"message": message}), "loc": tuple(loc),
          "input": None} for loc, message in errors],
    )


def validate_also(handler: Callable[[Any], Any], value: Any, errors: list[tuple[tuple, str]]) -> Any:
    """Run pydantic's own validation (`handler`) and report its errors together with `errors`.

    Checks on the raw input placed in a wrap validator this way still run when a nested value is
    broken, so a document shows every error at once.
    """
    try:
        result = handler(value)
    except ValidationError as exc:
        if not errors:
            raise
        line_errors = []
        for err in exc.errors(include_url=False):
            kind = err["type"]
            if kind == CUSTOM_ERROR:
                kind = PydanticCustomError(CUSTOM_ERROR, "{message}", {"message": err["ctx"]["message"]})
            line = {"type": kind, "loc": err["loc"], "input": err.get("input")}
            if "ctx" in err and not isinstance(kind, PydanticCustomError):
                line["ctx"] = err["ctx"]
            line_errors.append(line)
        line_errors += [{"type": PydanticCustomError(CUSTOM_ERROR, "{message}", {"message": message}),
                         "loc": tuple(loc), "input": None} for loc, message in errors]
        raise ValidationError.from_exception_data("reconciler", line_errors) from None
    if errors:
        fail(errors)
    return result


def did_you_mean(word: object, options: Iterable[str], otherwise: str = "") -> str:
    """"; did you mean 'x'?" when a close option exists, else "; <otherwise>" (or "" without it)."""
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6) if isinstance(word, str) else []
    if close:
        return f"; did you mean '{close[0]}'?"
    return f"; {otherwise}" if otherwise else ""


def duplicates(items: Iterable[tuple[tuple, str]], what: str) -> list[tuple[tuple, str]]:
    """Errors for each repeated name among (key path, name) pairs: '<what> 'x' is defined twice'."""
    seen: set[str] = set()
    errors = []
    for loc, name in items:
        if name in seen:
            errors.append((loc, f"{what} '{name}' is defined more than once; names must be unique"))
        seen.add(name)
    return errors


def find_cycle(edges: dict[str, list[str]]) -> list[str] | None:
    """One cycle as [a, b, ..., a], or None; edges map a node to the nodes it depends on."""
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in edges.get(node, ()):
            if nxt not in edges:
                continue
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for start in edges:
        if start not in state and (found := visit(start)):
            return found
    return None


class Model(BaseModel):
    """Base of every artefact model: unknown keys are errors (with did-you-mean, see errors.py)."""

    model_config = ConfigDict(extra="forbid")

    # key -> message, for keys that are wrong for a known reason rather than misspelt
    forbidden_keys: ClassVar[dict[str, str]] = {}
    # how messages name an item of this model, e.g. "job" -> "job 'clean'"; label_key holds its name
    label: ClassVar[str | None] = None
    label_key: ClassVar[str] = "name"

    @classmethod
    def child_annotation(cls, field_name: str, data: Any) -> Any:
        """The annotation of field `field_name` for these input data (overridden where it depends on data)."""
        return cls.model_fields[field_name].annotation


# ---- value types -------------------------------------------------------------------------------

NAME_RULE = "names start with a lowercase letter and use only a-z, 0-9 and '-', at most 63 characters"
ADDRESS_HELP = "write lake://WORKSPACE/TABLE or depot://DEPOT/DATASET"

# Checks that are one regular expression run in pydantic-core itself (a StringConstraints pattern): no call
# into Python for each value, which was a fifth of validating a workflow, and the serializer then knows the
# field is a plain string (normalise ~30 % faster). errors.py words a mismatch with PATTERN_MESSAGES. The
# patterns are Rust's: `$` is the end of the text (Python's `$` also takes a trailing line break, which the
# Python checks here and in ids.py refuse with `\Z`) and `\s` is Unicode White_Space, which is str.isspace()
# without \x1c-\x1f (so those are named where a Python check would count them as spaces).
PATTERN_MESSAGES: dict[str, Callable[[str], str]] = {}


def _pattern(pattern: str, message: Callable[[str], str]) -> StringConstraints:
    PATTERN_MESSAGES[pattern] = message
    return StringConstraints(pattern=pattern)


_NAME = r"[a-z][a-z0-9-]{0,62}"
_TABLE = r"[A-Za-z_][A-Za-z0-9_]{0,62}"
_NOT_SPACE = r"[^\s\x1c-\x1f]"  # what str.strip() keeps
_LAKE = rf"lake://{_NAME}/{_TABLE}"
_DEPOT = rf"depot://{_NAME}/{_NOT_SPACE}+"

Name = Annotated[str, _pattern(rf"^{_NAME}$", lambda value: f"'{value}' is not a valid name: {NAME_RULE}")]
Identifier = Annotated[str, _pattern(
    rf"^{_TABLE}$", lambda value: f"'{value}' is not a valid SQL name: start with a letter or '_', "
                                  "then letters, digits or '_' (it is used as a table name in SQL)")]
EnvName = Annotated[str, _pattern(
    r"^[A-Za-z_][A-Za-z0-9_]*$",
    lambda value: f"'{value}' is not a valid environment variable name: use letters, digits and '_'")]
Text = Annotated[str, _pattern(_NOT_SPACE, lambda value: "must not be empty")]
Dataset = Annotated[str, _pattern(rf"^(?:{_LAKE}|{_DEPOT})$",
                                  lambda value: f"'{value}' is not a dataset address; {ADDRESS_HELP}")]
LakeDataset = Annotated[str, _pattern(
    rf"^{_LAKE}$", lambda value: f"'{value}' is not a lake table address: outputs are written into the platform's "
                                 "lake; write lake://WORKSPACE/TABLE (TABLE: letters, digits, '_')")]
DatasetGlob = Annotated[str, _pattern(
    r"^(?:lake|depot)://[A-Za-z0-9_.*?\-/\[\]]+$",
    lambda value: f"'{value}' is not a dataset pattern; write lake://WORKSPACE/TABLE or "
                  "depot://DEPOT/DATASET, with * (one part) or ** (any parts)")]


def _check_duration(value: Any) -> Any:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        parse_duration(value)
        return f"{value}s"
    if isinstance(value, str):
        parse_duration(value)
        return value.strip()
    return value  # not a string: the str check reports it


def _non_empty(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    return value


def _positive_duration(value: str) -> str:
    if parse_duration(value) <= 0:
        raise ValueError(f"'{value}' must be longer than zero")
    return value


Duration = Annotated[str, BeforeValidator(_check_duration)]
PositiveDuration = Annotated[Duration, AfterValidator(_positive_duration)]


def _check_rel_path(value: str) -> str:
    parts = value.replace("\\", "/").split("/")
    if value.startswith("/") or ".." in parts:
        raise ValueError(f"'{value}' must be a path relative to the repository, inside it (no leading '/', no '..')")
    return _non_empty(value)


RelPath = Annotated[str, AfterValidator(_check_rel_path)]


def _check_resource_id(value: str) -> str:
    type_, sep, rest = value.partition(":")
    if not sep or not rest:
        raise ValueError(f"'{value}' is not a resource id; write TYPE:NAME, or TYPE:WORKSPACE/NAME "
                         "for workflows, services and secrets")
    if type_ not in SCOPES:
        raise ValueError(f"'{value}' names unknown type '{type_}'"
                         f"{did_you_mean(type_, SCOPES, 'known types: ' + ', '.join(SCOPES))}")
    workspace, slash, name = rest.rpartition("/")
    if slash and SCOPES[type_] == "instance":
        raise ValueError(f"'{value}': a {type_} is instance-scoped; write {type_}:{name}")
    for part in ([workspace, name] if slash else [name]):
        if not NAME_RE.match(part):
            raise ValueError(f"'{value}' is not a resource id: '{part}' is not a valid name ({NAME_RULE})")
    return value


ResourceId = Annotated[str, AfterValidator(_check_resource_id)]


# ---- secret references -------------------------------------------------------------------------

class SecretRef(Model):
    """`{secret: NAME}` or `{secret: NAME, workspace: WS}`."""

    secret: Name
    workspace: Name | None = None

    @property
    def target(self) -> str:
        return f"{self.workspace}/{self.secret}" if self.workspace else self.secret


def _reject_literal_secret(value: Any, info: ValidationInfo) -> Any:
    if isinstance(value, (str, int, float)) and not isinstance(value, bool):
        what = "the password" if info.field_name == "password" else "this value"
        raise ValueError(f"put {what} in a secret: write {{secret: NAME}} and add a secret resource that takes "
                         "it from the daemon's environment or a file; secret values never go into git")
    return value


SecretRefField = Annotated[SecretRef, BeforeValidator(_reject_literal_secret)]


# ---- the common header -------------------------------------------------------------------------

PRUNE_ANNOTATION = "reconciler/prune"


class Header(Model):
    """Fields every artefact has. Subclasses add `type: Literal[...]` and the type's own section."""

    version: Literal["v1"]
    type: str
    name: Name
    description: str | None = None
    owner: str | None = None
    tags: list[str] = Field(default_factory=list)
    labels: dict[str, str] = Field(default_factory=dict)
    depends_on: list[ResourceId] = Field(default_factory=list)
    annotations: dict[str, str] = Field(default_factory=dict)

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        type_name = _type_literal(cls)
        if type_name and SCOPES.get(type_name) == "instance" and type_name != "workspace":
            cls.forbidden_keys = {"workspace": f"a {type_name} is instance-scoped and belongs to no workspace; "
                                               "remove `workspace:`"}

    @field_validator("annotations")
    @classmethod
    def _check_annotations(cls, value: dict[str, str]) -> dict[str, str]:
        prune = value.get(PRUNE_ANNOTATION)
        if prune is not None and prune not in ("true", "false"):
            fail([((PRUNE_ANNOTATION,), f'annotation {PRUNE_ANNOTATION} must be "true" or "false" (quoted), '
                                         f"not '{prune}'")])
        return value

    @property
    def prune(self) -> bool:
        return self.annotations.get(PRUNE_ANNOTATION, "true") == "true"

    @property
    def scope_workspace(self) -> str:
        """The workspace references without one resolve in: the resource's own, `public` for instance types."""
        workspace = getattr(self, "workspace", None)
        return workspace if isinstance(workspace, str) else DEFAULT_WORKSPACE

    def header_refs(self) -> list[Ref]:
        out = []
        for i, rid in enumerate(self.depends_on):
            type_, _, rest = rid.partition(":")
            if SCOPES[type_] == "workspace" and "/" not in rest:
                rid = make_id(type_, rest, self.scope_workspace)  # TYPE:NAME means "in my workspace"
            out.append(Ref("resource", rid, ("depends_on", i)))
        return out

    def section_refs(self) -> list[Ref]:
        return []

    def refs(self) -> list[Ref]:
        return self.section_refs() + self.header_refs()


def _type_literal(cls: type) -> str | None:
    field = cls.model_fields.get("type")
    args = getattr(field.annotation, "__args__", ()) if field else ()
    return args[0] if len(args) == 1 and isinstance(args[0], str) else None


class WorkspaceHeader(Header):
    """Header of workspace-scoped types (workflow, service, secret)."""

    workspace: Name = DEFAULT_WORKSPACE
