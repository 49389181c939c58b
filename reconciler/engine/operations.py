"""The operations the CLI and the daemon share: load desired state, plan, apply, delete.

This is the only place that wires the pure core to git, the state store and the
providers; the CLI only parses flags and renders what these return.
"""
from __future__ import annotations

import gc
import os
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from typing import TYPE_CHECKING

from reconciler.core.diagnostics import UserError
from reconciler.core.plan import Plan
from reconciler.core.record import Record
from reconciler.store.writebehind import retain

if TYPE_CHECKING:  # pragma: no cover
    from reconciler.core.resolve import Resolution
    from reconciler.engine.access_plan import InstanceSubjects
    from reconciler.engine.warm import WarmPlanner


@dataclass
class Target:
    """Where artefacts come from and where state lives (the common CLI flags)."""

    repo: str = "."
    ref: str | None = None
    state_dir: Path = field(default_factory=lambda: Path(os.environ.get("RECONCILER_STATE_DIR") or ".reconciler"))
    paths: list[str] | None = None
    # read `repo` as the files are on disk, even inside a git work tree (`reconciler dev` sees unsaved-to-git edits)
    worktree: bool = False
    # users and groups of the instance config (--config), when one is given: policies' subjects are validated
    # against them and the access diff of a plan reports on each user
    subjects: "InstanceSubjects | None" = None

    def __post_init__(self):
        # absolute: jobs run in subprocesses with other working directories and must find their files
        self.state_dir = Path(self.state_dir).absolute()


@dataclass
class Desired:
    source: object
    load: object  # LoadResult
    resolution: "Resolution"

    @property
    def diagnostics(self):
        return sorted(self.resolution.diagnostics, key=lambda d: d.sort_key())


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def open_source(target: Target):
    from reconciler.gitops.source import WorkTreeSource, open_source as _open

    if target.worktree:
        if target.ref is not None:
            raise UserError("a work tree is read as it is on disk and takes no ref", hint="drop --ref")
        if not Path(target.repo).is_dir():
            raise UserError(f"'{target.repo}' is not a folder", hint="pass the folder holding the artefacts")
        return WorkTreeSource(target.repo)
    return _open(target.repo, target.ref, Path(target.state_dir))


def load_desired(target: Target, records: dict[str, Record] | None = None, source=None,
                 snapshot: bool = True) -> Desired:
    """Everything at the target, parsed, validated and resolved, with what linking it found. A snapshot of
    an earlier resolve of this repository (engine/warm.py) makes a fresh process read only what changed;
    `snapshot=False` saves none after a full resolve (`validate`: plans and applies save theirs)."""
    from reconciler.engine.coldload import Helper

    # `validate` builds on a snapshot too: a helper validates the changed files while it is restored (forked
    # before the repository is opened, as `plan` forks it); a cold load's worker checks the policies once its
    # share is done
    helper = Helper.start(source, Path(target.state_dir))
    try:
        if source is None:
            source = open_source(target)
            helper = helper.for_source(source) if helper is not None else None
        return _desired(target, records or {}, source, snapshot, helper=helper,
                        side_for=lambda: _policies_ahead(target, source))[0]
    finally:
        if helper is not None:  # _desired uses it or lets it go; this is for a failure before (opening the repository)
            helper.dismiss()


def _desired(target: Target, records: dict[str, Record], source,
             snapshot: bool = True, helper=None, side_for=None) -> "tuple[Desired, WarmPlanner]":
    from reconciler.core.loader import gc_paused
    from reconciler.engine.warm import WarmPlanner

    warm = WarmPlanner(Path(target.state_dir), target.paths, _known_subjects(target))
    warm.helper, warm.side_for = helper, side_for
    # Loading allocates millions of long-lived objects and no garbage cycles: the cyclic GC would
    # rescan them on every allocation burst (~1.5 s of a 10,000-file validate), so it pauses, and
    # what was built is frozen out of later collections.
    try:
        with gc_paused():
            if hasattr(source, "tree"):
                warm.restore(source)  # without a snapshot the full resolve lets the helper go (WarmPlanner._full)
            resolution = warm.resolution(source, records)
            if snapshot:
                warm.save()
            gc.freeze()  # before the GC is on again, or its first pass scans everything built here
    finally:
        if warm.helper is not None:  # not needed after all (nothing changed), or an error
            warm.helper.dismiss()
            warm.helper = None
    desired = Desired(source, warm.last_load, resolution)
    retain((desired, warm, records))  # a one-shot command ends without freeing them (store/writebehind.py)
    return desired, warm


def read_records(state_dir: Path) -> tuple[dict[str, Record], int]:
    """The recorded resources and the state serial; from the daemon's API while its reconcile holds
    the state database (the serial is then unknown: 0, so a plan saved from it is refused as stale)."""
    from reconciler.store.state import StateStore

    try:
        with StateStore.open(Path(state_dir), read_only=True) as store:
            return store.records(), store.serial
    except UserError:
        records = records_from_daemon(Path(state_dir))
        if records is None:
            raise
        return records, 0


def from_daemon(state_dir: Path, path: str):
    """JSON from `/api/v1{path}` of the daemon that owns `state_dir` (it holds the state database during
    a reconcile), or None when no daemon answers. A 404 raises UserError with the daemon's reason."""
    import json
    import urllib.error
    import urllib.request

    try:
        info = json.loads((Path(state_dir) / "daemon.json").read_text())
        os.kill(int(info["pid"]), 0)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    headers = {}
    if info.get("token_file"):
        from reconciler.daemon.config import read_secret_file

        headers["Authorization"] = f"Bearer {read_secret_file(info['token_file'])}"
    request = urllib.request.Request(info["url"].rstrip("/") + "/api/v1" + path, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return json.loads(answer.read())
    except urllib.error.HTTPError as e:
        if e.code == 404:
            try:
                detail = json.loads(e.read()).get("detail")
            except (ValueError, AttributeError, OSError):
                detail = None
            raise UserError(detail or f"not found: {path}") from None
        return None
    except (OSError, ValueError):
        return None


def prune_checkouts(state_dir: Path, keep: set[str | None]) -> int:
    """Remove materialised trees of commits no record was applied from (each is a whole copy of the
    repository: tens of MB a push for a large one). Kept: every commit a record names (workflow runs
    and the query engine's depot copies read those) and `keep`'s others; a removed one is made again
    on demand. Returns how many were removed."""
    import shutil

    root = Path(state_dir) / "checkouts"
    if not root.is_dir():
        return 0
    removed = 0
    for entry in root.iterdir():
        if entry.name in keep or entry.name == "worktree" or not entry.is_dir():
            continue
        shutil.rmtree(entry, ignore_errors=True)
        removed += 1
    return removed


def records_from_daemon(state_dir: Path) -> dict[str, Record] | None:
    """Records as the daemon that owns `state_dir` serves them, or None when no daemon answers."""
    rows = from_daemon(state_dir, "/resources")
    if rows is None:
        return None
    fields = set(Record.__dataclass_fields__)
    return {r["id"]: Record(**{k: v for k, v in r.items() if k in fields}) for r in rows}


def base_records(target: Target, base_ref: str) -> dict[str, Record]:
    """The state a preview plans against: everything at `base_ref`, as if applied."""
    from reconciler.core.record import READY

    from reconciler.store.recordcache import LazyRecord

    base = load_desired(Target(target.repo, base_ref, target.state_dir, target.paths))
    # specs are read when the plan looks at them (resources restored from a snapshot read theirs on use)
    return {rid: LazyRecord.of(lambda _id, r=r: r.spec, id=rid, type=r.type, name=r.name, workspace=r.workspace,
                               hash=r.hash, phase=READY, message="", commit=None, file=r.file,
                               depends_on=sorted(r.depends_on), prune=r.prune, bundle=r.bundle, outputs={},
                               created_at=None, updated_at=None, applied_at=None, target_hash=None)
            for rid, r in base.resolution.resources.items()}


def make_plan(target: Target, *, base: str | None = None, max_prune: int = 10, allow_prune: bool = False):
    """The plan for `target` against the recorded state (or against `base` for previews),
    with the diagnostics of loading it. Memoised: see store/planmemo.py."""
    helper = None
    if not base:
        # a plan that builds on a snapshot validates the changed files on the other core meanwhile; forked
        # before the repository is opened, so that its imports (the critical path of a one-file plan) start
        # ~0.03 s sooner; a plan answered from its memo (the no-change case) lets it go
        from reconciler.engine.coldload import Helper

        helper = Helper.start(None, Path(target.state_dir))
    try:
        return _make_plan(target, base, max_prune, allow_prune, helper)
    finally:
        if helper is not None:  # _desired uses it or lets it go; this is for the memo's answer and for failures
            helper.dismiss()


def _make_plan(target: Target, base: str | None, max_prune: int, allow_prune: bool, helper):
    from reconciler.core.diagnostics import Diagnostic
    from reconciler.store.planmemo import PlanMemo

    source = open_source(target)
    memo = PlanMemo(Path(target.state_dir))
    options = dict(max_prune=max_prune, allow_prune=allow_prune, label=source_label(target))
    if target.subjects is not None:  # they change the diagnostics and the access diff
        options["subjects"] = target.subjects.key()
    key = None if base else memo.key(source, target.paths, Path(target.state_dir), **options)
    hit = memo.get(key)
    if hit is not None:
        plan = Plan.from_json(hit)
        plan.created_at = now_iso()
        return plan, [Diagnostic(**d) for d in plan.diagnostics]

    from reconciler.core.planner import make_plan as plan_

    helper = helper.for_source(source) if helper is not None else None
    if base:
        records, serial = base_records(target, base), 0
    else:
        records, serial = current_records(Path(target.state_dir))
    # a cold load's worker checks the policies and works out the access diff meanwhile, if the plan is what
    # it guesses
    desired, warm = _desired(target, records, source, helper=helper,
                             side_for=None if base else lambda: _plan_ahead(records, target, source))
    if warm.resolver is not None:
        _known_specs(records, warm.resolver.replaced, warm)
    plan = plan_(desired.resolution, records, commit=source.commit, source=source_label(target),
                 serial=serial, max_prune=max_prune, allow_prune=allow_prune, created_at=now_iso())
    plan.base = base
    side = warm.side.jobs[-1] if warm.side is not None else None  # _plan_ahead: the policies, then the access diff
    ahead = side.rows_for(plan, desired.resolution, warm.resolver.validated_hash) \
        if side is not None and side.started and warm.resolver is not None else None
    plan.access = ahead if ahead is not None else _access(plan, records, desired.resolution, target)
    # written after the command has answered (store/writebehind.py); a spec not in memory yet is read
    # now, though: the writer is a forked child, and a database connection must not cross a fork
    memo.put_later(key, plan, ready=all(a.resource is None or a.resource.spec_in_memory for a in plan.actions))
    if not base:
        plan.origin = (desired.resolution, options, warm)
    return plan, desired.diagnostics


def _policies_ahead(target: Target, source):
    from reconciler.engine.policy_ahead import PolicyAhead

    return PolicyAhead(source, _known_subjects(target))


def _known_subjects(target: Target) -> frozenset[str] | None:
    """The instance's users and groups that policies' subjects are checked against; None: not checked."""
    return target.subjects.known_for_validation() if target.subjects else None


def _plan_ahead(records: dict[str, Record], target: Target, source):
    """A cold plan's side jobs: the policy checks, needed first (by the resolve), then the access diff."""
    from reconciler.engine.access_ahead import AccessAhead
    from reconciler.engine.coldload import SideJobs

    return SideJobs(_policies_ahead(target, source), AccessAhead(records, Path(target.state_dir), target.subjects))


def _known_specs(records: dict[str, Record], replaced: dict, warm=None) -> None:
    """A changed resource's recorded spec, found without the state database (a remembered record reads it
    from there: ~0.1 s to import and open DuckDB): the spec the resource had before the change when that
    has the recorded hash, else the validated document of the applied commit's file with that hash, from
    the document cache (the file was edited again since the snapshot the resolver was restored from)."""
    from reconciler.store.recordcache import LazyRecord

    for rid, old in replaced.items():
        rec = records.get(rid)
        if not (isinstance(rec, LazyRecord) and not rec.spec_known and rec.hash):
            continue
        if rec.hash == old.hash:
            rec.spec = old.spec
        elif warm is not None:
            spec = _applied_spec(rec, warm)
            if spec is not None:
                rec.spec = spec


def _applied_spec(rec: Record, warm) -> dict | None:
    """The spec with `rec`'s hash among the documents of its file at its applied commit, if the document
    cache holds them (None otherwise: the caller reads the state database)."""
    import pygit2

    source = warm.source
    repo = getattr(source, "repo", None)
    if repo is None or not rec.commit or not rec.file:
        return None
    path = f"{source.prefix}/{rec.file}" if getattr(source, "prefix", "") else rec.file
    try:
        blob = str(repo[rec.commit].peel(pygit2.Commit).tree[path].id)
    except (KeyError, ValueError, pygit2.GitError):
        return None
    parsed = warm.cache.get(blob)
    for doc in parsed.documents if parsed is not None else ():
        v = warm.cache.get_validated((blob, doc.index))
        if getattr(v, "hash", None) == rec.hash and v.identity == (rec.type, rec.workspace, rec.name):
            return v.spec
    return None


def current_records(state_dir: Path) -> tuple[dict[str, Record], int]:
    """The recorded resources and the state serial: remembered from the last read while the state file
    is unchanged (store/recordcache.py), else read (and remembered)."""
    from reconciler.store import recordcache
    from reconciler.store.doccache import DocCache

    if not (Path(state_dir) / "state.duckdb").exists():
        return {}, 0  # nothing applied yet: no need to open (or import) DuckDB
    cache = DocCache(state_dir)
    hit = recordcache.remembered(cache, state_dir)
    if hit is not None:
        return hit
    records, serial = read_records(state_dir)
    recordcache.remember(cache, state_dir, records, serial)
    return records, serial


def _access(plan: Plan, records: dict[str, Record], resolution: "Resolution", target: Target) -> list[dict]:
    """The plan's access diff; nothing is imported or read for the plans (most) that touch no policy."""
    if not any(a.type == "policy" for a in plan.actions):
        return []
    from reconciler.engine.access_plan import plan_access

    return plan_access(plan, records, resolution.resources, Path(target.state_dir), target.subjects)


def source_label(target: Target) -> str:
    """Where the plan's artefacts came from: an absolute path, or the URL without any credentials in it
    (plans are saved and shown; credentials come from the environment)."""
    repo = target.repo
    if "://" in repo or repo.startswith("git@"):
        from reconciler.gitops.source import redact_url

        return redact_url(repo)
    return str(Path(repo).resolve())


def apply(target: Target, plan: Plan, *, parallelism: int = 4, on_event=None, stop: threading.Event | None = None,
          saved: bool = False, allow_prune: bool = False, purpose: str = "apply", lock: bool = True, source=None,
          store=None, live=None):
    """Apply `plan` under the state lock (`lock=False`: the caller, the daemon, holds it already).
    A saved plan is refused when the state moved since it was made. The daemon passes the state `store` it
    holds open for its cycle and its `live` records (store/state.py LiveRecords), read incrementally."""
    import contextlib

    from reconciler.engine.applier import apply_plan
    from reconciler.providers.base import ApplyContext
    from reconciler.providers.registry import get_provider
    from reconciler.store.lock import StateLock
    from reconciler.store.state import StateStore

    if plan.base:
        raise UserError("this plan is a preview against --base; previews are never applied",
                        hint="run `reconciler plan` without --base to make an applicable plan")
    if plan.held and not allow_prune:
        raise UserError(f"apply refused: {plan.held}")
    state_dir = Path(target.state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    held = store
    with (StateLock(state_dir, purpose) if lock else contextlib.nullcontext()), \
            (contextlib.nullcontext(held) if held is not None else StateStore.open(state_dir)) as store:
        if saved and store.serial != plan.state_serial:
            raise UserError(f"saved plan is stale: it was made at state serial {plan.state_serial}, "
                            f"the state is now at serial {store.serial}",
                            hint="run `reconciler plan --out FILE` again and apply the new plan")
        records = live.read(store)[0] if live is not None else store.records()
        # the tree the plan was made from: the same commit, even if the branch moved since
        if source is None or source.commit != plan.commit:
            origin = plan.source if plan.source and "***@" not in plan.source else target.repo  # redacted: --repo
            source = open_source(Target(origin, plan.commit, state_dir, target.paths)) if plan.commit else None
        repo_dir = _once(lambda: Path((source or open_source(target)).materialise(
            state_dir / "checkouts" / ((source.commit if source else None) or "worktree"))))
        resources = {a.id: a.resource for a in plan.actions if a.resource is not None}
        ctx = ApplyContext(state_dir=state_dir, store=store, commit=plan.commit, repo_dir=repo_dir,
                           resources=resources, records=records, environ=dict(os.environ))
        result = apply_plan(plan, ctx, get_provider, parallelism=parallelism, on_event=on_event, stop=stop)
        if plan.origin is None:  # nothing to remember the next plan from (the daemon's warm plans)
            return result
        after = store.records(), store.serial
    _remember_next_plan(target, plan, source, *after)
    return result


def _remember_next_plan(target: Target, plan: Plan, source, records: dict, serial: int) -> None:
    """The plan that follows an apply is known at its end: the same desired resources against the
    state just written. Remembering it makes the next `plan` of this commit answer at once."""
    if plan.origin is None or source is None:
        return
    from reconciler.core.planner import make_plan as plan_
    from reconciler.store.planmemo import PlanMemo

    from reconciler.store import recordcache

    resolution, options, warm = plan.origin
    following = plan_(resolution, records, commit=plan.commit, source=plan.source, serial=serial,
                      max_prune=options["max_prune"], allow_prune=options["allow_prune"], created_at=now_iso())
    following.access = _access(following, records, resolution, target)
    memo = PlanMemo(Path(target.state_dir))
    memo.put(memo.key(source, target.paths, Path(target.state_dir), **options), following.to_json())
    # the next process plans from these: the records just written and the resolution just applied
    recordcache.remember(warm.cache, Path(target.state_dir), records, serial)
    warm.save()


def ids_in_file(path: Path) -> list[str]:
    """Resource ids an artefact file defines (a bundle's file also names its members)."""
    from reconciler.core import resources as models
    from reconciler.core.ids import DEFAULT_WORKSPACE, make_id
    from reconciler.core.yamlload import parse_file

    try:
        data = path.read_bytes()
    except OSError as e:
        raise UserError(f"cannot read {path}: {e.strerror}")
    fr = parse_file(str(path), data, "")
    if fr.broken:
        raise UserError(f"{path} does not parse; nothing was deleted", diagnostics=fr.diagnostics)
    ids = []
    for doc in fr.documents:
        ident = models.identity(doc.data) if doc.is_artefact else None
        if ident:
            type_, ws, name = ident
            if models.TYPES.get(type_) and models.TYPES[type_].scope == "workspace":
                ws = ws or DEFAULT_WORKSPACE
            ids.append(make_id(type_, name, ws))
    if not ids:
        raise UserError(f"{path} defines no artefacts")
    return ids


def delete_resources(target: Target, ids: list[str], *, cascade: bool = False, confirm=None, on_event=None):
    """Delete recorded resources (bundle members with their bundle), dependents first.

    Refuses while other resources depend on them, unless `cascade`. `confirm(plan)` may veto.
    """
    import difflib

    from reconciler.core.plan import DELETE, Action, Plan
    from reconciler.core.planner import order_deletes
    from reconciler.engine.applier import apply_plan
    from reconciler.providers.base import ApplyContext
    from reconciler.providers.registry import get_provider
    from reconciler.store.lock import StateLock
    from reconciler.store.state import StateStore

    state_dir = Path(target.state_dir)
    if not (state_dir / "state.duckdb").exists():
        raise UserError(f"no state in {state_dir}: nothing has been applied there")
    with StateLock(state_dir, "delete"), StateStore.open(state_dir) as store:
        records = store.records()
        wanted: set[str] = set()
        for rid in ids:
            if rid not in records:
                close = difflib.get_close_matches(rid, list(records), n=3, cutoff=0.5)
                raise UserError(f"{rid} is not applied in {state_dir}",
                                hint=f"did you mean {', '.join(close)}?" if close else "list what is applied with `reconciler get`")
            wanted.add(rid)
            wanted |= {r.id for r in records.values() if r.bundle == rid}
        dependents = _dependents(records, wanted) - wanted
        if dependents and not cascade:
            raise UserError(f"cannot delete {', '.join(sorted(ids))}: {len(dependents)} resource(s) depend on it: "
                            f"{', '.join(sorted(dependents))}",
                            hint="delete those first, or use --cascade to delete them too (dependents first)")
        wanted |= dependents
        actions = order_deletes([Action(id=rid, action=DELETE, type=records[rid].type, name=records[rid].name,
                                         workspace=records[rid].workspace, file=records[rid].file,
                                         reason="requested" if rid in ids else "depends on a deleted resource")
                                  for rid in wanted], records)
        plan = Plan(actions=actions, state_serial=store.serial, created_at=now_iso())
        if confirm is not None and not confirm(plan):
            return plan, None
        ctx = ApplyContext(state_dir=state_dir, store=store, commit=None, repo_dir=lambda: Path(target.repo),
                           resources={}, records=records, environ=dict(os.environ))
        return plan, apply_plan(plan, ctx, get_provider, on_event=on_event)


def _dependents(records: dict[str, Record], roots: set[str]) -> set[str]:
    from reconciler.core.graph import Graph

    return Graph.build({rid: set(r.depends_on) for rid, r in records.items()}).transitive_dependents(roots)


def run_workflow(target: Target, name: str, workspace: str | None, *, trigger: str = "manual",
                 stop: threading.Event | None = None, lock: bool = True):
    """Run an applied workflow now, with its applied spec, at the commit it was applied from."""
    from reconciler.core.ids import DEFAULT_WORKSPACE, make_id
    from reconciler.engine.applier import _record_as_resource
    from reconciler.engine.runner import WorkflowRunner
    from reconciler.providers.base import ApplyContext
    from reconciler.store.lock import StateLock
    from reconciler.store.state import StateStore

    state_dir = Path(target.state_dir)
    rid = make_id("workflow", name, workspace or DEFAULT_WORKSPACE)
    if not (state_dir / "state.duckdb").exists():
        raise UserError(f"no state in {state_dir}: apply the workflow first")
    import contextlib

    with (StateLock(state_dir, f"run {rid}") if lock else contextlib.nullcontext()), StateStore.open(state_dir) as store:
        records = store.records()
        rec = records.get(rid)
        if rec is None or rec.spec is None:
            known = sorted(r.id for r in records.values() if r.type == "workflow")
            raise UserError(f"{rid} is not applied in {state_dir}",
                            hint=f"applied workflows: {', '.join(known)}" if known else "run `reconciler apply` first")
        resource = _record_as_resource(rec)

        def repo_dir() -> Path:
            checkout = state_dir / "checkouts" / (rec.commit or "worktree")
            if rec.commit and (checkout / ".complete").exists():
                return checkout
            src = open_source(Target(target.repo, rec.commit, state_dir, target.paths))
            return Path(src.materialise(checkout))

        ctx = ApplyContext(state_dir=state_dir, store=store, commit=rec.commit, repo_dir=_once(repo_dir),
                           resources={}, records=records, environ=dict(os.environ))
        return WorkflowRunner(ctx, stop=stop).run(resource, trigger=trigger)


def _once(fn):
    """fn() computed on the first call only (thread-safe): the repository checkout, made when a provider needs it."""
    cached: list = []
    lock = threading.Lock()

    def wrapper():
        with lock:
            if not cached:
                cached.append(fn())
            return cached[0]

    return wrapper
