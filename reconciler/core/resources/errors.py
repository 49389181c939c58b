"""Pydantic errors -> Diagnostics a person can act on.

Each error's `loc` is walked through the model classes alongside the input data, which gives the key
path inside the document (minus pydantic's internal entries), the model owning an unknown key (for
did-you-mean), the allowed values of a Literal, and names for list items ("job 'clean'").
"""
from __future__ import annotations

import types
import typing
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ValidationError

from reconciler.core.diagnostics import Diagnostic, error

from .common import CUSTOM_ERROR, PATTERN_MESSAGES, Model, did_you_mean

EXPECTED = {
    "string_type": "a string",
    "string_unicode": "a string",
    "int_type": "a whole number",
    "int_parsing": "a whole number",
    "int_from_float": "a whole number",
    "float_type": "a number",
    "float_parsing": "a number",
    "finite_number": "a finite number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "dict_type": "a mapping (key: value)",
    "model_type": "a mapping (key: value)",
    "model_attributes_type": "a mapping (key: value)",
    "list_type": "a list",
    "tuple_type": "a list",
}
BOUNDS = {"greater_than_equal": ("ge", "at least"), "greater_than": ("gt", "more than"),
          "less_than_equal": ("le", "at most"), "less_than": ("lt", "less than")}


@dataclass
class Place:
    """Where one error sits, found by walking its loc."""

    path: tuple = ()
    owner: type[BaseModel] | None = None  # model holding the last key of `path`
    annotation: Any = None  # annotation of the value at `path`, when known
    # path length -> ("job 'clean'", "name"): how to name the item there, and the key its name is under
    labels: dict[int, tuple[str, str]] = field(default_factory=dict)
    bad_key: bool = False  # the error is about the mapping key at `path`, not its value


def _unwrap(annotation: Any) -> Any:
    """Strip Annotated[...] and Optional[...] down to the type that errors are reported against."""
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(annotation) if a is not type(None)]
            if len(args) != 1:
                return annotation
            annotation = args[0]
        else:
            return annotation


def _aliases(model: type[BaseModel]) -> dict[str, str]:
    """YAML key -> python field name."""
    return {(info.alias or name): name for name, info in model.model_fields.items()}


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _child(node: Any, key: Any) -> Any:
    if isinstance(node, dict):
        return node.get(key)
    if isinstance(node, list) and isinstance(key, int) and 0 <= key < len(node):
        return node[key]
    return None


def _label(model: Any, node: Any) -> tuple[str, str] | None:
    if isinstance(model, type) and issubclass(model, Model) and model.label and isinstance(node, dict):
        name = node.get(model.label_key)
        if isinstance(name, str) and name:
            return f"{model.label} '{name}'", model.label_key
    return None


def locate(root: type[BaseModel], data: Any, loc: tuple) -> Place:
    place = Place()
    path: list = []
    annotation: Any = root
    node = data
    for part in loc:
        if part == "[key]":  # pydantic's marker for an error in a mapping's key
            place.bad_key = True
            continue
        annotation = _unwrap(annotation)
        origin = typing.get_origin(annotation)
        if _is_model(annotation):
            if label := _label(annotation, node):
                place.labels[len(path)] = label
            place.owner = annotation
            name = _aliases(annotation).get(part)
            annotation = annotation.child_annotation(name, node) if name else None
        elif origin in (list, tuple):
            args = typing.get_args(annotation)
            annotation = args[0] if args else None
            place.owner = None
        elif origin is dict:
            args = typing.get_args(annotation)
            annotation = args[1] if len(args) == 2 else None
            place.owner = None
        elif origin in (typing.Union, types.UnionType) and not (isinstance(node, dict) and part in node):
            continue  # a union member's tag, not a key of the document
        else:
            annotation = None
            place.owner = None
        path.append(part)
        node = _child(node, part)
    annotation = _unwrap(annotation)
    if label := _label(annotation, node):
        place.labels[len(path)] = label
    place.path = tuple(path)
    place.annotation = annotation
    return place


def render(place: Place, length: int | None = None) -> str:
    """'job 'clean'.retry.count' for the first `length` entries of the place's path."""
    path = place.path[:len(place.path) if length is None else length]
    # an error in the item's name itself is not named after that (bad) name
    usable = [n for n, (_, key) in place.labels.items()
              if n <= len(path) and not (len(path) == n + 1 and path[n] == key)]
    start = max(usable, default=None)
    text = place.labels[start][0] if start is not None else ""
    for part in path[start or 0:]:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text


def _describe(value: Any) -> str:
    if value is None:
        return "empty"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return f"'{value}'"
    return str(value)


def _yaml_scalar(value: Any) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


def message_for(err: dict, place: Place, data: Any) -> str:
    kind = err["type"]
    ctx = err.get("ctx") or {}
    value = err.get("input")
    subject = render(place)
    key = place.path[-1] if place.path else None
    parent = render(place, len(place.path) - 1) if place.path else ""

    if kind == CUSTOM_ERROR:
        return ctx.get("message", err["msg"])
    if kind in ("value_error", "assertion_error") or (kind == "string_pattern_mismatch"
                                                      and ctx.get("pattern") in PATTERN_MESSAGES):
        text = (PATTERN_MESSAGES[ctx["pattern"]](value) if kind == "string_pattern_mismatch"
                else str(ctx.get("error", err["msg"])))
        return f"{subject}: {text}" if subject else text
    if kind in ("extra_forbidden", "invalid_key"):
        owner = place.owner
        if owner is not None and issubclass(owner, Model) and key in owner.forbidden_keys:
            return owner.forbidden_keys[key]
        where = f" in {parent}" if parent else ""
        allowed = list(_aliases(owner)) if owner is not None else []
        hint = did_you_mean(key, allowed) or (f"; allowed fields: {', '.join(allowed)}" if allowed else "")
        return f"unknown field {key!r}{where}{hint}"
    if kind == "missing":
        if len(place.path) == 1 and isinstance(data, dict) and key == data.get("type"):
            return f"missing the '{key}' section; add `{key}:` with the {key}'s settings"
        where = f" in {parent}" if parent else ""
        return f"missing required field '{key}'{where}; add `{key}: ...`"
    if kind == "literal_error":
        options = [str(a) for a in typing.get_args(place.annotation)] or [ctx.get("expected", "")]
        if value is None:
            return f"{subject} is empty; it must be one of {', '.join(options)}"
        return (f"{subject} must be one of {', '.join(options)}, not {_describe(value)}"
                f"{did_you_mean(value, options)}")
    if place.bad_key:
        return f"key {key!r} in {parent or 'the document'} must be a string; quote it: \"{key}\": ..."
    if kind in EXPECTED:
        if value is None:
            return f"{subject} is empty; it must be {EXPECTED[kind]}"
        text = f"{subject} must be {EXPECTED[kind]}, not {_describe(value)}"
        if kind == "string_type" and isinstance(value, (int, float, bool)):
            name = key if isinstance(key, str) else subject
            text += f'; quote it: {name}: "{_yaml_scalar(value)}"'
        return text
    if kind in ("too_short", "too_long"):
        if kind == "too_short" and ctx.get("min_length") == 1:
            return f"{subject} must not be empty"
        bound = ctx.get("min_length") if kind == "too_short" else ctx.get("max_length")
        return f"{subject} must have {'at least' if kind == 'too_short' else 'at most'} {bound} items"
    if kind in BOUNDS:
        name, words = BOUNDS[kind]
        return f"{subject} must be {words} {ctx.get(name)}, not {_describe(value)}"
    text = err["msg"].replace("Input should be", "should be")
    return f"{subject}: {text}" if subject else text


def diagnostics_from(exc: ValidationError, root: type[BaseModel], data: Any, prefix: str = "") -> list[Diagnostic]:
    out = []
    seen = set()
    for err in exc.errors(include_url=False):
        place = locate(root, data, tuple(err["loc"]))
        message = prefix + message_for(err, place, data)
        if (place.path, message) in seen:  # the same complaint reached by two routes
            continue
        seen.add((place.path, message))
        out.append(error(message, path=place.path))
    return out
