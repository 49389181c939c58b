"""spec_hash: recorded states hold these hashes, so its text must stay json.dumps' text byte for byte,
whichever encoder writes it (core/resource.py)."""
import datetime
import enum
import hashlib
import json
import math
import random
import struct
import uuid
from dataclasses import dataclass

import pytest

from reconciler.core.resource import spec_hash

from .test_models import errors, workflow_doc


def as_json(spec) -> str:
    return hashlib.sha256(json.dumps(spec, sort_keys=True, separators=(",", ":"), default=str).encode()).hexdigest()


class Text(str):
    pass


class Kind(str, enum.Enum):
    A = "a"


@dataclass
class Point:
    x: int = 1


@pytest.mark.parametrize("spec", [
    {"name": "x", "workflow": {"dag": [{"name": "a", "retry": {"backoff": 1.0, "count": 3}}]}},
    {"b": [1.0, 2.5, 0.95, 1e-4, 1e-5, 7.4e-05, 1e-7, 1e15, 1e16, 1.5e300, -0.0, 5e-324, 123456789012345678.0]},
    {"é": "ü", "snowman": "\u2603", "line sep": "\u2028", "del": "\x7f", "nul": "\x00\x1f\t\n", "q": 'a"b\\c</'},
    {1: 2, 10: 3, 9: 4}, {"big": 2**64, "small": -2**63, "edge": 2**63 - 1},
    {"d": datetime.datetime(2024, 1, 2, 3, 4, 5), "day": datetime.date(2024, 1, 2), "u": uuid.UUID(int=5)},
    {"sub": Text("x"), "enum": Kind.A, "dc": Point(), "t": (1, "2"), "n": None, "yes": True},
    {"text": "1e-5 and 0.00001 in strings", "nested": {"z": 1, "a": [{"y": 2, "b": {}}]}},
])
def test_the_same_hash_as_json_dumps(spec):
    assert spec_hash(spec) == as_json(spec)


def test_random_floats_hash_as_json_dumps_writes_them():
    rng = random.Random(20261203)
    for i in range(20000):
        kind = i % 4
        if kind == 0:
            x = struct.unpack("d", struct.pack("Q", rng.getrandbits(64)))[0]
        elif kind == 1:
            x = rng.random() * 10 ** rng.randint(-30, 30)
        elif kind == 2:
            x = round(rng.uniform(-1e5, 1e5), rng.randint(0, 8))
        else:
            x = float(rng.randint(-10**20, 10**20))
        if math.isfinite(x):
            assert spec_hash({"v": [x, -x]}) == as_json({"v": [x, -x]}), x


def test_a_backoff_must_be_finite():
    """The one float field of the models: an infinite backoff would hash as null with one encoder."""
    doc = workflow_doc()
    doc["workflow"]["dag"][0]["retry"] = {"count": 2, "backoff": float("inf")}
    found = errors(doc)
    assert any(path[-1] == "backoff" and "finite number" in message for path, message in found), found
