"""Bytecode for the package under test, as an installed package has it (shared by run.py and ab.py).

`pip install .` compiles every module of the package it installs into `__pycache__`, and Python writes
the bytecode of an editable checkout itself the first time it imports it, unless PYTHONDONTWRITEBYTECODE
is set; this machine sets it. A checkout installed with `pip install -e .` then recompiles every module
it imports from source on every start: ~0.08 s of a one-file `plan` (0.24-0.28 s with bytecode against
0.32-0.40 s without, six runs each, session 13), a cost no installed copy of the product pays. So the
benchmarks compile the package first (`compileall`, which writes the files whatever that variable says);
`--source` times the checkout as it starts without them. Up to session 12 they did not, and those
sessions' figures hold that cost.
"""
from __future__ import annotations

import compileall
import importlib.util
from pathlib import Path


def package_dir() -> Path:
    """The `reconciler` package this Python imports (an editable install: the checkout's)."""
    spec = importlib.util.find_spec("reconciler")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("the reconciler package is not importable here: install it (pip install -e .)")
    return Path(list(spec.submodule_search_locations)[0])


def compile_package(pkg: Path) -> None:
    """Write the bytecode of every module under `pkg`, as `pip install` does."""
    if not compileall.compile_dir(str(pkg), quiet=1):
        raise SystemExit(f"compiling {pkg} failed")
