"""Secret values never show: literal values under secret-looking keys are replaced before rendering.

By construction specs hold only secret *references* ({secret: NAME}) and secret
sources ({env: VAR}); this is the second line of defence for anything else.
"""
from __future__ import annotations

import re
from functools import lru_cache

SENSITIVE_KEY = re.compile(r"(pass(word|wd)?|secret|token|api[_-]?key|private[_-]?key|credential)s?$", re.I)
REDACTED = "(sensitive value)"


def redact(value, key: str | None = None):
    """`value` with every literal under a sensitive key replaced; the parts where nothing was replaced are
    returned as they are, not copied (a 10,000-resource plan's specs are millions of values)."""
    if isinstance(value, dict):
        if "secret" in value and set(value) <= {"secret", "workspace"}:
            return value  # a reference, not a value
        out = None
        for k, v in value.items():
            r = redact(v, k)
            if r is not v:
                if out is None:
                    out = dict(value)
                out[k] = r
        return value if out is None else out
    if isinstance(value, list):
        items = [redact(v, key) for v in value]
        return value if all(a is b for a, b in zip(items, value)) else items
    if key is not None and isinstance(value, (str, int, float)) and not isinstance(value, bool) and _sensitive(key):
        return REDACTED
    return value


@lru_cache(maxsize=4096)
def _sensitive(key) -> bool:
    return SENSITIVE_KEY.search(str(key)) is not None


def redact_path(path: str, value):
    """Redact a diff value by the last key of its path."""
    last = re.split(r"[.\[\]]+", path.strip("]"))[-1] if path else None
    return redact(value, last)
