"""The `shell` stack: one command in a subprocess, in the workspace's run folder.

`command` as a string runs through /bin/sh -c (pipes, &&, globbing); as a list it
runs directly with those arguments. The environment is deliberately small: PATH,
HOME, LANG, RECONCILER_* (run id, job, folders), the spec's `env`, then the job's
declared secrets.
"""
from __future__ import annotations

from .base import JobContext, JobResult
from .process import base_env, failure_of, run_process


class ShellStack:
    name = "shell"

    def run(self, ctx: JobContext) -> JobResult:
        command = ctx.spec["command"]
        argv = ["/bin/sh", "-c", command] if isinstance(command, str) else [str(part) for part in command]
        ctx.run_dir.mkdir(parents=True, exist_ok=True)
        env = {**base_env(ctx), **(ctx.spec.get("env") or {}), **ctx.secret_env}
        outcome = run_process(argv, cwd=ctx.run_dir, env=env, log=ctx.log, deadline=ctx.deadline, cancel=ctx.cancel)
        failed = failure_of(outcome)
        if failed is not None:
            return failed
        return JobResult(ok=True, message=f"command exited with code 0 in {outcome.seconds:.1f}s")
