"""`type: workflow`: a DAG of jobs, each on a stack (built-in or custom) or an operator, with an optional schedule."""
from __future__ import annotations

import functools
import zoneinfo
from typing import Any, Callable, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from reconciler.core.resource import JobSpec, Ref

from .builtin_stacks import BUILTIN_SPECS
from .common import (Duration, EnvName, Model, Name, PositiveDuration, SecretRefField, WorkspaceHeader,
                     did_you_mean, duplicates, fail, find_cycle, validate_also)

# croniter accepts these too, but schedulers take five fields: store the five-field form
CRON_MACROS = {
    "@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *", "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *", "@midnight": "0 0 * * *", "@hourly": "0 * * * *",
}
CRON_HELP = ('five fields: minute hour day-of-month month day-of-week, e.g. "0 2 * * *" (02:00 every day), '
             "or @hourly, @daily, @weekly, @monthly, @yearly")


@functools.cache
def _timezones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


@functools.lru_cache(maxsize=4096)
def _valid_cron(text: str) -> bool:
    from croniter import croniter  # only when a schedule is validated

    return len(text.split()) == 5 and croniter.is_valid(text)  # croniter's parse is slow: cache it


class Schedule(Model):
    cron: str
    timezone: str = "UTC"

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str) -> str:
        text = CRON_MACROS.get(value.strip().lower(), value.strip())
        if not _valid_cron(text):
            raise ValueError(f"'{value}' is not a valid cron expression; write {CRON_HELP}")
        return text

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown timezone '{value}'"
                             f"{did_you_mean(value, _timezones(), 'use an IANA name such as UTC or Europe/Paris')}"
                             ) from None
        return value


class Retry(Model):
    count: int = Field(0, ge=0)
    delay: Duration | None = None
    backoff: float = Field(1.0, ge=1, allow_inf_nan=False)  # each wait is the previous one times backoff


class Job(Model):
    label = "job"

    name: Name
    stack: Name | None = None
    operator: Name | None = None
    depends_on: list[Name] = Field(default_factory=list)
    retry: Retry | None = None
    timeout: PositiveDuration | None = None
    secrets: dict[EnvName, SecretRefField] = Field(default_factory=dict)  # env var -> secret, for the job
    # a built-in stack's spec model, or a free mapping checked later against a stack's/operator's JSON Schema
    spec: Any = Field(default_factory=dict, validate_default=True)

    @classmethod
    def child_annotation(cls, field_name: str, data: Any) -> Any:
        stack = data.get("stack") if isinstance(data, dict) else None
        if field_name == "spec" and isinstance(stack, str) and stack in BUILTIN_SPECS:
            return BUILTIN_SPECS[data["stack"]]
        return super().child_annotation(field_name, data)

    @field_validator("spec")
    @classmethod
    def _spec(cls, value: Any, info: ValidationInfo) -> Any:
        if value is None:
            value = {}
        if not isinstance(value, dict):
            raise ValueError("must be a mapping (key: value) of the job's settings")
        model = BUILTIN_SPECS.get(info.data.get("stack"))
        return model.model_validate(value) if model else value

    @model_validator(mode="after")
    def _runtime(self) -> "Job":
        if (self.stack is None) == (self.operator is None):
            fail([((), f"job '{self.name}' runs on exactly one of stack: (sql, quality, profile, python, shell "
                       "or a stack resource) or operator: (an operator resource)"
                       + ("; it has both" if self.stack else ""))])
        return self

    @property
    def runtime(self) -> tuple[str, str]:
        return ("stack", self.stack) if self.stack is not None else ("operator", self.operator)


class WorkflowSection(Model):
    schedule: Schedule | None = None
    dag: list[Job] = Field(min_length=1)

    @field_validator("dag", mode="wrap")
    @classmethod
    def _graph(cls, value: Any, handler: Callable[[Any], Any]) -> list[Job]:
        return validate_also(handler, value, graph_errors(value))


def graph_errors(jobs: Any) -> list[tuple[tuple, str]]:
    """Duplicate names, unknown or self dependencies and cycles among raw job mappings."""
    if not isinstance(jobs, list) or _listed_in_order(jobs):
        return []
    named = {i: job["name"] for i, job in enumerate(jobs) if isinstance(job, dict) and isinstance(job.get("name"), str)}
    names = list(named.values())
    deps = {i: [(j, d) for j, d in enumerate(jobs[i].get("depends_on") or []) if isinstance(d, str)]
            if isinstance(jobs[i].get("depends_on"), list) else [] for i in named}
    clashes = [(loc + ("name",), message) for loc, message in
               duplicates((((i,), name) for i, name in named.items()), "job")]
    errors = list(clashes)
    for i, name in named.items():
        for j, dep in deps[i]:
            if dep == name:
                errors.append(((i, "depends_on", j), f"job '{name}' depends on itself; remove '{dep}'"))
            elif dep not in names:
                errors.append(((i, "depends_on", j), f"job '{name}' depends on unknown job '{dep}'"
                               f"{did_you_mean(dep, names, 'jobs: ' + ', '.join(names))}"))
    if not clashes and (cycle := find_cycle({named[i]: [d for _, d in deps[i]] for i in named})):
        index = next(i for i, name in named.items() if name == cycle[0])
        where = (index, "depends_on", next(j for j, d in deps[index] if d == cycle[1]))
        errors.append((where, f"jobs form a cycle: {' -> '.join(cycle)}; remove one of these depends_on"))
    return errors


def _listed_in_order(jobs: list) -> bool:
    """Whether every job is a mapping with a name of its own and depends only on jobs listed before it: then
    `graph_errors` has nothing to say (no clash, no unknown or self dependency, and no cycle, since every edge
    points back). This is how workflows are written, and ~10x cheaper to tell than the whole check."""
    seen: set[str] = set()
    for job in jobs:
        if type(job) is not dict:
            return False
        name = job.get("name")
        if type(name) is not str or name in seen:
            return False
        deps = job.get("depends_on")
        if deps is not None:
            if type(deps) is not list:
                return False
            for dep in deps:
                if type(dep) is not str or dep not in seen:
                    return False
        seen.add(name)
    return True


class WorkflowDocument(WorkspaceHeader):
    type: Literal["workflow"]
    workflow: WorkflowSection

    def section_refs(self) -> list[Ref]:
        out: list[Ref] = []
        for i, job in enumerate(self.workflow.dag):
            base = ("workflow", "dag", i)
            if isinstance(job.spec, Model):  # a built-in stack's: its refs are made at their full key paths
                out += job.spec.dataset_refs(base + ("spec",))
            elif job.stack is not None:
                out.append(Ref("stack", job.stack, base + ("stack",)))
            if job.operator is not None:
                out.append(Ref("operator", job.operator, base + ("operator",)))
            if job.secrets:
                out += [Ref("secret", ref.target, base + ("secrets", env)) for env, ref in job.secrets.items()]
        return out

    def job_specs(self) -> list[JobSpec]:
        specs = []
        for i, job in enumerate(self.workflow.dag):
            if not isinstance(job.spec, Model):  # built-in stacks' specs are checked by their models
                kind, name = job.runtime
                specs.append(JobSpec(kind, name, job.name, job.spec, ("workflow", "dag", i, "spec")))
        return specs
