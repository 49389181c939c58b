"""Custom stacks (`type: stack`): a command template run like the shell stack.

Every argv element and env value of the stack's `command`/`env` is a Jinja2
template, rendered in a sandbox with StrictUndefined so a missing variable is an
error naming the template rather than an empty argument. Variables: spec (the
job's spec, with the schema's top-level defaults filled in), run_dir, job_dir,
repo_dir, run_id, job, workflow, workspace, attempt, commit and secrets (the job's
declared secrets by env name). The templating helpers here are shared with the
operator stack.
"""
from __future__ import annotations

import copy
import re
import shlex
from typing import Any

from jinja2 import StrictUndefined, TemplateError, Undefined
from jinja2.sandbox import SandboxedEnvironment
from jsonschema import Draft202012Validator

from .base import JobContext, JobResult
from .process import base_env, failure_of, run_process

_JINJA = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True)
_ONE_EXPRESSION = re.compile(r"^\s*\{\{(?P<expr>.*?)\}\}\s*$", re.DOTALL)


class RenderError(Exception):
    """A template that cannot be rendered; str() names where it is and why."""


def render_text(template: str, variables: dict[str, Any], where: str) -> str:
    try:
        return _JINJA.from_string(template).render(variables)
    except TemplateError as exc:  # UndefinedError, TemplateSyntaxError, SecurityError
        raise RenderError(f"cannot render {where} {template!r}: {exc.message or exc}") from None


def render_value(value: Any, variables: dict[str, Any], where: str) -> Any:
    """`value` with every string rendered; a string that is one `{{ expr }}` keeps the expression's type."""
    if isinstance(value, dict):
        return {key: render_value(item, variables, f"{where}.{key}") for key, item in value.items()}
    if isinstance(value, list):
        return [render_value(item, variables, f"{where}[{i}]") for i, item in enumerate(value)]
    if not isinstance(value, str):
        return value
    whole = _ONE_EXPRESSION.match(value)
    if whole and "{{" not in whole["expr"] and "}}" not in whole["expr"]:
        try:
            result = _JINJA.compile_expression(whole["expr"].strip(), undefined_to_none=False)(**variables)
            if isinstance(result, Undefined):
                str(result)  # StrictUndefined raises here, naming what is missing
            return result
        except TemplateError as exc:
            raise RenderError(f"cannot render {where} {value!r}: {exc.message or exc}") from None
    return render_text(value, variables, where)


def with_defaults(spec: dict | None, schema: dict | None) -> dict:
    """The spec with the schema's top-level property defaults filled in (jsonschema does not apply them)."""
    filled = copy.deepcopy(spec or {})
    for key, prop in ((schema or {}).get("properties") or {}).items():
        if isinstance(prop, dict) and "default" in prop and key not in filled:
            filled[key] = copy.deepcopy(prop["default"])
    return filled


def schema_problems(spec: dict, schema: dict | None) -> list[str]:
    if not schema:
        return []
    found = sorted(Draft202012Validator(schema).iter_errors(spec), key=lambda e: list(map(str, e.absolute_path)))
    return [f"{'.'.join(map(str, e.absolute_path)) or 'spec'}: {e.message}" for e in found]


def section_of(document: dict | None, key: str) -> dict:
    """The type's own section (`stack:` / `operator:`) of a normalised document, or the section itself."""
    document = document or {}
    inner = document.get(key)
    return inner if isinstance(inner, dict) else document


def schema_of(section: dict) -> dict | None:
    return section.get("schema", section.get("schema_"))


def checked_spec(ctx: JobContext, section: dict, label: str, owner: str) -> tuple[dict, JobResult | None]:
    """The job's spec with the runtime's schema defaults filled in, or the failure when the schema rejects it
    (`owner` names the runtime: "stack" or "operator")."""
    schema = schema_of(section)
    spec = with_defaults(ctx.spec, schema)
    problems = schema_problems(spec, schema)
    if problems:
        return spec, JobResult(ok=False, retryable=False,
                               message=f"{label}: the job's spec does not match the {owner}'s schema: {problems[0]}")
    return spec, None


def template_variables(ctx: JobContext, spec: dict) -> dict[str, Any]:
    return {
        "spec": spec, "run_dir": str(ctx.run_dir), "job_dir": str(ctx.job_dir), "repo_dir": str(ctx.repo_dir),
        "run_id": ctx.run_id, "job": ctx.job, "workflow": ctx.workflow, "workspace": ctx.workspace,
        "attempt": ctx.attempt, "commit": ctx.commit, "secrets": dict(ctx.secret_env),
    }


class CustomStack:
    """Runs a job on a `type: stack` resource; the document comes from ctx.runtime_spec unless given here."""

    def __init__(self, name: str | None = None, document: dict | None = None):
        self.name = name or "custom"
        self.document = document

    def run(self, ctx: JobContext) -> JobResult:
        label = f"stack '{ctx.stack or self.name}'"
        section = section_of(self.document or ctx.runtime_spec, "stack")
        if not section.get("command"):
            return JobResult(ok=False, message=f"{label} has no command (is the stack applied?)", retryable=False)
        spec, failure = checked_spec(ctx, section, label, "stack")
        if failure is not None:
            return failure
        variables = template_variables(ctx, spec)
        try:
            argv = [render_text(str(part), variables, f"command[{i}]") for i, part in enumerate(section["command"])]
            env = {key: render_text(str(value), variables, f"env.{key}")
                   for key, value in (section.get("env") or {}).items()}
        except RenderError as exc:
            return JobResult(ok=False, message=f"{label}: {exc}", retryable=False)
        ctx.run_dir.mkdir(parents=True, exist_ok=True)
        ctx.log(f"running: {shlex.join(argv)}")
        outcome = run_process(argv, cwd=ctx.run_dir, env={**base_env(ctx), **env, **ctx.secret_env}, log=ctx.log,
                              deadline=ctx.deadline, cancel=ctx.cancel)
        failed = failure_of(outcome)
        if failed is not None:
            failed.message = f"{label}: {failed.message}"
            return failed
        return JobResult(ok=True, message=f"{label}: command exited with code 0 in {outcome.seconds:.1f}s")
