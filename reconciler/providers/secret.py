"""secret: a named value from the daemon's environment or a file, never from git.

Applying a secret checks that its value can be read and records a fingerprint
(so a changed value is visible) but never the value itself. Other providers
read values through `resolve_secret` at the moment they need them.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

from reconciler.core.ids import make_id
from reconciler.core.record import Record
from reconciler.core.resource import Resource
from reconciler.providers.base import ApplyContext, Outcome


def fingerprint(value: str) -> str:
    return hashlib.sha256(b"reconciler-secret:" + value.encode()).hexdigest()[:16]


def read_secret_source(label: str, source: dict | None, environ: dict[str, str]) -> tuple[str | None, str | None]:
    """(value, error) from a secret's `from:` section; `label` names the secret in the error."""
    source = source or {}
    if source.get("env"):
        var = source["env"]
        if var not in environ:
            return None, f"secret '{label}': environment variable {var} is not set; set it in the daemon's environment"
        if environ[var] == "":
            return None, f"secret '{label}': environment variable {var} is empty; give it the secret's value"
        return environ[var], None
    if source.get("file"):
        path = Path(source["file"]).expanduser()
        where = path if path.is_absolute() else Path.cwd() / path
        if not path.is_file():
            return None, f"secret '{label}': file {source['file']} does not exist (looked in {where})"
        try:
            value = path.read_text()
        except OSError as exc:
            return None, f"secret '{label}': cannot read file {where}: {exc.strerror}"
        except UnicodeDecodeError:
            return None, f"secret '{label}': file {where} is not UTF-8 text"
        # files written by `echo` or editors end in a newline that is not part of the value
        value = value[:-2] if value.endswith("\r\n") else value[:-1] if value.endswith("\n") else value
        if value == "":
            return None, f"secret '{label}': file {where} is empty; put the secret's value in it"
        return value, None
    return None, f"secret '{label}': `from` must give `env` or `file`"


def resolve_secret(ctx: ApplyContext, ref: dict, default_workspace: str) -> tuple[str | None, str | None]:
    """The value behind a `{secret: NAME[, workspace: WS]}` reference, as (value, error).

    The secret's definition comes from the desired resources (or, when it left git in the same
    change, from its last recorded spec); its value from ctx.environ or its file.
    """
    name = ref.get("secret")
    workspace = ref.get("workspace") or default_workspace
    label = f"{workspace}/{name}"
    rid = make_id("secret", name, workspace)
    resource = ctx.resources.get(rid)
    spec = resource.spec if resource is not None else None
    if spec is None:
        record = ctx.records.get(rid)
        spec = record.spec if record is not None else None
    if spec is None:
        return None, (f"secret '{label}' is not defined; add a `type: secret` document named {name} "
                      f"in workspace {workspace}")
    return read_secret_source(label, (spec.get("secret") or {}).get("from"), ctx.environ)


class SecretProvider:
    type = "secret"

    def apply(self, ctx: ApplyContext, resource: Resource, prior: Record | None) -> Outcome:
        label = f"{resource.workspace}/{resource.name}" if resource.workspace else resource.name
        source = (resource.spec.get("secret") or {}).get("from")
        value, err = read_secret_source(label, source, ctx.environ)
        if err:
            return Outcome.failure(err)
        where = f"environment variable {source['env']}" if source.get("env") else f"file {source['file']}"
        return Outcome.success(f"value found in {where}", fingerprint=fingerprint(value))

    def delete(self, ctx: ApplyContext, record: Record) -> Outcome:
        return Outcome.success("forgotten (the value itself lives outside reconciler)")

    def observe(self, ctx: ApplyContext, record: Record) -> dict | None:
        if not record.spec:
            return None
        source = (record.spec.get("secret") or {}).get("from")
        value, err = read_secret_source(record.name, source, ctx.environ)
        return {"error": err} if err else {"fingerprint": fingerprint(value)}
