"""A validated, resolved resource: what the planner compares against recorded state."""
from __future__ import annotations

import hashlib
import json
import re
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


# a float's negative exponent in orjson's text ("1e-7"; json writes "1e-07")
_EXPONENT = re.compile(rb"\de-")
_ORJSON_OPTIONS = 0  # set on first use: orjson is imported only by the processes that hash


def spec_hash(spec: dict) -> str:
    """SHA-256 of the spec as `json.dumps(spec, sort_keys=True, separators=(",", ":"), default=str)` writes it:
    recorded states hold these hashes, so the text must never change. orjson writes the same bytes ~3x faster
    for plain JSON data (a cold load of 10,000 files hashes every spec); anything it could write otherwise (see
    _not_as_json; any type but dict, list, str, int, float, bool and None; keys that are not strings; ints
    beyond 64 bits) goes through json.dumps. NaN and infinities would too, but normalised specs cannot hold
    them: pydantic's JSON mode writes them as null, and the one float field (a retry's backoff) refuses them."""
    global _ORJSON_OPTIONS
    import orjson

    if not _ORJSON_OPTIONS:
        _ORJSON_OPTIONS = (orjson.OPT_SORT_KEYS | orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS
                           | orjson.OPT_PASSTHROUGH_SUBCLASS)
    try:
        text = orjson.dumps(spec, option=_ORJSON_OPTIONS, default=_not_plain)
    except TypeError:  # orjson.JSONEncodeError: a type, a key or an int it does not write as json does
        text = None
    if text is None or _not_as_json(text):
        text = json.dumps(spec, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(text).hexdigest()


def _not_as_json(text: bytes) -> bool:
    """Whether json.dumps may write this differently: any character outside ASCII or DEL (json escapes them), and
    floats below 1e-4 (orjson "0.00001" or "1e-7", json "1e-05" or "1e-07"); strings that merely look like
    those fall back too."""
    return (not text.isascii() or b"\x7f" in text or b"0.0000" in text
            or (b"e-" in text and _EXPONENT.search(text) is not None))


def _not_plain(value):
    raise TypeError(type(value).__name__)


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
