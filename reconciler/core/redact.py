"""Secret values never show: literal values under secret-looking keys are replaced before rendering.

By construction specs hold only secret *references* ({secret: NAME}) and secret
sources ({env: VAR}); this is the second line of defence for anything else.
"""
from __future__ import annotations

import re

SENSITIVE_KEY = re.compile(r"(pass(word|wd)?|secret|token|api[_-]?key|private[_-]?key|credential)s?$", re.I)
REDACTED = "(sensitive value)"


def redact(value, key: str | None = None):
    if isinstance(value, dict):
        if set(value) <= {"secret", "workspace"} and "secret" in value:
            return value  # a reference, not a value
        return {k: redact(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v, key) for v in value]
    if key is not None and isinstance(value, (str, int, float)) and not isinstance(value, bool) and SENSITIVE_KEY.search(str(key)):
        return REDACTED
    return value


def redact_path(path: str, value):
    """Redact a diff value by the last key of its path."""
    last = re.split(r"[.\[\]]+", path.strip("]"))[-1] if path else None
    return redact(value, last)
