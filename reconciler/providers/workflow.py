"""workflow: applying it runs its job DAG when its spec, or a file its jobs reference, changed
since the last successful run; never again for what already ran, also after a crash."""
from __future__ import annotations

from reconciler.core.record import Record
from reconciler.core.resource import Resource
from reconciler.providers.base import ApplyContext, Outcome


def next_fire(spec: dict, after=None) -> str | None:
    """The next time the workflow's cron schedule fires (ISO, UTC), or None without a schedule."""
    schedule = (spec.get("workflow") or {}).get("schedule")
    if not schedule or not schedule.get("cron"):
        return None
    from datetime import datetime, timezone
    from zoneinfo import ZoneInfo

    from croniter import croniter

    tz = ZoneInfo(schedule.get("timezone") or "UTC")
    base = (after or datetime.now(timezone.utc)).astimezone(tz)
    return croniter(schedule["cron"], base).get_next(datetime).astimezone(timezone.utc).isoformat(timespec="seconds")


class WorkflowProvider:
    type = "workflow"

    def apply(self, ctx: ApplyContext, resource: Resource, prior: Record | None) -> Outcome:
        from reconciler.engine.runner import WorkflowRunner, trigger_key

        runner = WorkflowRunner(ctx)
        key = trigger_key(resource, ctx.repo_dir())
        last = ctx.store.runs.last_success(resource.id)
        nxt = next_fire(resource.spec)
        healing = prior is not None and (prior.message or "").startswith("drift:")  # what it wrote is gone or changed
        if last is not None and last["trigger_key"] == key and not healing:
            return Outcome.success(f"up to date: run {last['run_id']} succeeded", last_run=last["run_id"],
                                   last_status="succeeded", next_run=nxt)
        outcome = runner.run(resource, trigger="apply", key=key)
        outputs = dict(last_run=outcome.run_id, last_status=outcome.status, next_run=nxt)
        if outcome.status == "succeeded":
            return Outcome.success(f"run {outcome.run_id} succeeded: {outcome.message}", **outputs)
        return Outcome.failure(f"run {outcome.run_id} {outcome.status}: {outcome.message}", **outputs)

    def delete(self, ctx: ApplyContext, record: Record) -> Outcome:
        # the lake tables it wrote stay (data is never dropped by a delete); its lineage goes
        ctx.store.runs.forget_workflow(record.id)
        return Outcome.success("removed; no further runs (its lake tables are kept)")

    def observe(self, ctx: ApplyContext, record: Record) -> dict | None:
        return None
