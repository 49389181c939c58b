"""The string types pydantic-core checks with a Rust regex (resources/common.py) accept exactly what the Python
rules they replaced accept, and each refusal keeps its message."""
from __future__ import annotations

import random
import re
from typing import Annotated

import pytest
from pydantic import TypeAdapter, ValidationError

from reconciler.core.ids import valid_name
from reconciler.core.resources import common, validate_document

# the rules as Python states them: whole-text matches, and "empty" as str.strip() sees it
_DEPOT = r"depot://[a-z][a-z0-9-]{0,62}/\S+"  # Python's \S: not str.isspace()
_LAKE = r"lake://[a-z][a-z0-9-]{0,62}/[A-Za-z_][A-Za-z0-9_]{0,62}"
RULES = {
    "Name": lambda v: re.fullmatch(r"[a-z][a-z0-9-]{0,62}", v) is not None,
    "Identifier": lambda v: re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,62}", v) is not None,
    "EnvName": lambda v: re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", v) is not None,
    "Text": lambda v: bool(v.strip()),
    "Dataset": lambda v: re.fullmatch(f"{_LAKE}|{_DEPOT}", v) is not None,
    "LakeDataset": lambda v: re.fullmatch(_LAKE, v) is not None,
    "DatasetGlob": lambda v: re.fullmatch(r"(lake|depot)://[A-Za-z0-9_.*?\-/\[\]]+", v) is not None,
}
# characters where regex dialects and whitespace rules differ, plus what the names are made of
ALPHABET = (list("abcz09-_AZ/:.*?[]{}$^\\") + [" ", "\t", "\n", "\r", "\x0b", "\x0c", "\x1c", "\x1f", "\x85",
                                                   "\xa0", "\u2028", "\u3000", "\u200b", "é"])
SEEDS = ["", "a", "ab-1", "lake://ws/t", "depot://d/x", "lake://ws/**", "depot://d-1/a b", "lake://Ws/t",
         "lake://ws/1t", "depot://d/", " ", "a\n", "lake://ws/t\n", "depot://d/x\n", "x" * 63, "a" * 64, "a" * 63,
         "\x1c", " \x1f ", "\x85", "_", "A_1", "1a", "ENV_1", "depot://d/\x1c", "lake://" + "a" * 63 + "/t"]


def _strings(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    out = list(SEEDS)
    for _ in range(count):
        base = rng.choice(SEEDS)
        chars = list(base)
        for _ in range(rng.randint(0, 3)):
            at = rng.randint(0, len(chars))
            if chars and rng.random() < 0.5:
                chars[min(at, len(chars) - 1)] = rng.choice(ALPHABET)
            else:
                chars.insert(at, rng.choice(ALPHABET))
        out.append("".join(chars))
    return out


@pytest.mark.parametrize("type_name", sorted(RULES))
def test_native_pattern_accepts_what_the_python_rule_accepts(type_name):
    adapter = TypeAdapter(Annotated[str, getattr(common, type_name).__metadata__[0]])
    rule = RULES[type_name]
    disagree = []
    for value in _strings(4000, seed=hash(type_name) & 0xFFFF):
        try:
            adapter.validate_python(value)
            native = True
        except ValidationError as exc:
            native = False
            (err,) = exc.errors()
            assert err["type"] == "string_pattern_mismatch" and err["ctx"]["pattern"] in common.PATTERN_MESSAGES
        if native != rule(value):
            disagree.append((value, native))
    assert not disagree, disagree[:10]


def test_ids_name_rule_refuses_a_trailing_line_break_too():
    assert valid_name("orders") and not valid_name("orders\n") and not valid_name("Orders")


def _workflow(**job_spec) -> dict:
    spec = {"inputs": [{"name": "src", "dataset": "depot://raw/events"}],
            "steps": [{"name": "clean", "sql": "SELECT 1"}],
            "outputs": [{"from": "clean", "dataset": "lake://ws/clean"}]}
    spec.update(job_spec)
    return {"version": "v1", "type": "workflow", "name": "load", "workspace": "ws",
            "workflow": {"dag": [{"name": "clean", "stack": "sql", "spec": spec}]}}


@pytest.mark.parametrize("change, path, message", [
    ({"steps": [{"name": "1st", "sql": "SELECT 1"}]}, ("workflow", "dag", 0, "spec", "steps", 0, "name"),
     "workflow 'load': job 'clean'.spec.steps[0].name: '1st' is not a valid SQL name: start with a letter or '_', "
     "then letters, digits or '_' (it is used as a table name in SQL)"),
    ({"steps": [{"name": "clean", "sql": "  \n"}]}, ("workflow", "dag", 0, "spec", "steps", 0, "sql"),
     "workflow 'load': step 'clean'.sql: must not be empty"),
    ({"inputs": [{"name": "src", "dataset": "s3://bucket/x"}]}, ("workflow", "dag", 0, "spec", "inputs", 0, "dataset"),
     "workflow 'load': input 'src'.dataset: 's3://bucket/x' is not a dataset address; "
     "write lake://WORKSPACE/TABLE or depot://DEPOT/DATASET"),
    ({"outputs": [{"from": "clean", "dataset": "depot://raw/x"}]}, ("workflow", "dag", 0, "spec", "outputs", 0, "dataset"),
     "workflow 'load': job 'clean'.spec.outputs[0].dataset: 'depot://raw/x' is not a lake table address: outputs "
     "are written into the platform's lake; write lake://WORKSPACE/TABLE (TABLE: letters, digits, '_')"),
])
def test_pattern_refusals_keep_their_messages(change, path, message):
    model, diagnostics = validate_document(_workflow(**change))
    assert model is None
    assert [(d.path, d.message) for d in diagnostics] == [(path, message)]


def test_a_bad_workspace_name_and_env_name():
    doc = _workflow()
    doc["workspace"] = "Team A"
    doc["workflow"]["dag"][0]["secrets"] = {"1TOKEN": {"secret": "token"}}
    _, diagnostics = validate_document(doc)
    assert [(d.path, d.message) for d in diagnostics] == [
        (("workspace",), "workflow 'load': workspace: 'Team A' is not a valid name: names start with a lowercase "
                         "letter and use only a-z, 0-9 and '-', at most 63 characters"),
        (("workflow", "dag", 0, "secrets", "1TOKEN"), "workflow 'load': job 'clean'.secrets.1TOKEN: '1TOKEN' is not "
                                                     "a valid environment variable name: use letters, digits and '_'"),
    ]
