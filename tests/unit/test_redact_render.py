"""Secret-looking values never render (core/redact.py), and the indented JSON of `-o json` is the one
json.dumps(indent=2, default=str) writes (core/jsontext.py)."""
import json
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path

from reconciler.core.jsontext import dumps_indented
from reconciler.core.redact import REDACTED, redact, redact_path


def test_literals_under_sensitive_keys_are_replaced_at_any_depth():
    spec = {"depot": {"kind": "postgres", "password": "hunter2", "options": [{"api_key": "k-123", "port": 5432}],
                      "tokens": ["a", "b"], "privateKey": 7, "enabled_secret": True}}
    out = redact(spec)
    assert out["depot"]["password"] == REDACTED
    assert out["depot"]["options"] == [{"api_key": REDACTED, "port": 5432}]
    assert out["depot"]["tokens"] == [REDACTED, REDACTED]
    assert out["depot"]["privateKey"] == REDACTED
    assert out["depot"]["enabled_secret"] is True  # a flag is not a secret value
    assert "hunter2" not in json.dumps(out) and "k-123" not in json.dumps(out)
    assert spec["depot"]["password"] == "hunter2"  # the spec itself is left as it was


def test_secret_references_and_untouched_parts_are_returned_as_they_are():
    ref = {"secret": "pg-password", "workspace": "payments"}
    spec = {"depot": {"password": ref, "path": "data", "datasets": ["a", "b"]}, "owner": "team"}
    out = redact(spec)
    assert out == spec
    assert out is spec and out["depot"]["password"] is ref  # nothing replaced: nothing copied
    mixed = {"keep": {"x": [1, 2]}, "token": "t"}
    got = redact(mixed)
    assert got is not mixed and got["keep"] is mixed["keep"] and got["token"] == REDACTED


def test_a_diff_value_is_redacted_by_the_last_key_of_its_path():
    assert redact_path("depot.options[0].password", "p") == REDACTED
    assert redact_path("depot.options[0].host", "h") == "h"
    assert redact_path("depot.credentials", {"user": "u"}) == {"user": "u"}  # a dict: by its own keys


@dataclass
class _Thing:
    name: str


def test_indented_json_is_what_json_dumps_writes():
    data = {"actions": [{"id": "depot:raw", "n": 3, "ratio": 0.25, "ok": True, "none": None, "tuple": (1, "a"),
                         "empty": {}, "list": [], "nested": {"deep": [{"k": "v"}]}}],
            "when": datetime(2026, 12, 3, 13, 0, tzinfo=timezone.utc), "path": Path("/tmp/x"),
            "amount": Decimal("1.50"), "thing": _Thing("t"), 7: "non-str key", "text": 'quote " and \\ and \n'}
    assert dumps_indented(data) == json.dumps(data, indent=2, default=str)


def test_what_orjson_cannot_write_still_writes():
    data = {"big": 2 ** 70, "small": -1}
    assert json.loads(dumps_indented(data)) == data


def test_yaml_output_through_libyaml_is_safe_dumps_text():
    """`get -o yaml` writes with libyaml's emitter (cli/getters.py _dump): the same text as yaml.safe_dump,
    quoting YAML 1.1's look-alikes ('0755', 'yes') so that what is read back is what was shown."""
    import yaml

    data = [{"name": "caf\u00e9", "n": "0755", "b": "yes", "x": None, "l": ["a", {"k": "line1\nline2"}],
             "long": "word " * 40, "e": "", "num": 1.5e-07, "t": True}]
    fast = yaml.dump(data, Dumper=yaml.CSafeDumper, sort_keys=False, default_flow_style=False)
    assert fast == yaml.safe_dump(data, sort_keys=False, default_flow_style=False)
    assert yaml.safe_load(fast) == data
