"""Which runtime runs a job: a built-in stack, a custom stack defined in YAML, or an operator."""
from __future__ import annotations

import importlib

BUILTIN = {
    "sql": ("reconciler.stacks.sql", "SqlStack"),
    "quality": ("reconciler.stacks.quality", "QualityStack"),
    "profile": ("reconciler.stacks.profile", "ProfileStack"),
    "python": ("reconciler.stacks.python", "PythonStack"),
    "shell": ("reconciler.stacks.shell", "ShellStack"),
}


def _load(module: str, cls: str):
    return getattr(importlib.import_module(module), cls)


def runtime_for(job: dict):
    """(runtime kind, runtime name, stack object) for a job of a workflow document."""
    if job.get("operator"):
        return "operator", job["operator"], _load("reconciler.stacks.operator", "OperatorStack")()
    name = job["stack"]
    if name in BUILTIN:
        return "stack", name, _load(*BUILTIN[name])()
    return "stack", name, _load("reconciler.stacks.custom", "CustomStack")()
