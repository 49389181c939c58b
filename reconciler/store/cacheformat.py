"""What every cache in the state dir is valid for: the cache format, the parser, Python and the models' code.

Kept apart from the caches themselves so that a plan answered from its memo imports neither the
YAML parsers nor SQLite.
"""
from __future__ import annotations

import marshal
import sys
from dataclasses import fields
from pathlib import Path

from reconciler.core.diagnostics import Diagnostic
from reconciler.core.documents import PARSER_VERSION


def _models_fingerprint() -> str:
    """Validation results are cached too: any change to the models' or resolver's code invalidates them."""
    import hashlib

    core = Path(__file__).resolve().parent.parent / "core"  # found by path: importing the models costs 0.2 s
    h = hashlib.sha1()
    files = sorted((core / "resources").glob("*.py")) + [core / "resolve.py", core / "resource.py",
                                                         core / "planner.py", core / "plan.py"]
    for f in files:
        try:
            h.update(f.read_bytes())
        except OSError:
            h.update(f.name.encode())
    return h.hexdigest()


# Any change to what an entry holds or to what the parser yields must change this.
FORMAT = ("reconciler-doccache", 4, PARSER_VERSION, sys.version_info[:2], marshal.version,
          tuple(f.name for f in fields(Diagnostic)), _models_fingerprint())
