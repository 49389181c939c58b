"""The warm planner: plan a new commit by reading only what changed since a resolved one.

It keeps the last resolution. For a new commit it diffs the two trees by blob id,
parses and validates only the changed files, and lets the resolver re-link only
their resources when their ids, written tables and dependencies stay the same
(the graph order is then reused as is). Anything wider (ids added or removed,
bundles, stacks, operators, ignore rules, broken files) falls back to a full
resolve, which still reuses every cached parse and validation. Either way the
planner then compares hashes, and deepdiff only runs on specs whose hash changed.

The daemon keeps one in memory. A fresh CLI process gets the same reaction from a
snapshot: after a full resolve the resolver's state (no specs, no parsed data:
those stay in the document cache, read by key when something asks) is saved in
the state dir's cache, and the next `plan` or `validate` of another commit of the
same repository restores it and updates it with the changed files only.
"""
from __future__ import annotations

import hashlib
import marshal
from pathlib import Path

from reconciler.core.loader import IGNORE_FILE, LoadResult, gc_paused, load_file, load_ignore_rules, wanted
from reconciler.core.locate import YamlLocator
from reconciler.core.plan import Plan
from reconciler.core.planner import make_plan
from reconciler.core.record import Record
from reconciler.core.resolve import Resolution, Resolver, SnapshotMiss
from reconciler.engine.coldload import load_cold
from reconciler.store.doccache import DocCache
from reconciler.store.writebehind import write_behind, writes_behind

SNAPSHOT_VERSION = 1
# A snapshot is saved again once the commits it is updated to differ from it in this many files.
RESAVE_AFTER_FILES = 64


class WarmPlanner:
    def __init__(self, state_dir: Path, paths: list[str] | None = None,
                 known_subjects: frozenset[str] | None = None, cache: DocCache | None = None,
                 compact: bool = False, isolate: bool = False):
        self.paths = paths
        self.known_subjects = known_subjects  # the instance's users and groups, for policies' subjects
        self.state_dir = Path(state_dir)
        self.cache = cache or DocCache(self.state_dir)
        self.source = None
        self.resolver: Resolver | None = None
        self.full_resolves = 0  # how often a change needed the whole resolve (for tests and metrics)
        self.incremental = 0
        self.narrowed = 0  # plans that looked only at what may have moved (see plan())
        self.last_load: LoadResult | None = None  # the loader's result of the last full resolve
        self.restored = False  # the resolver came from a saved snapshot (a fresh process)
        self._changed_since_saved: set[str] | None = None  # files changed since the snapshot that was saved
        # a long-lived planner (the daemon) keeps only the compact state after a full resolve: no parsed
        # documents, no specs (read from the document cache when a plan needs one): ~150 MB less at 10,000
        self.compact = compact
        # full resolves in a child process that leaves a snapshot to restore: the parsed documents of a whole
        # repository never enter this process, whose memory would keep their high-water mark (the daemon)
        self.isolate = isolate
        self.helper = None  # a forked validator for the next update's changed files (engine/coldload.py Helper)
        # work for a cold load's worker once its share is done (engine/coldload.py SideJob): made by `side_for`
        # (the SideJob's module is imported only for a cold load), the last one made kept in `side`
        self.side_for = None
        self.side = None
        # the last plan: (its resolution, the records' serial, the desired ids it found out of sync), and the
        # ids an incremental update changed since; see plan()
        self._basis: tuple[Resolution, int, set[str]] | None = None
        self._dirty: set[str] = set()
        self._position: tuple[list[str], dict[str, int]] | None = None  # resolution order -> index

    def resolution(self, source, records: dict[str, Record]) -> Resolution:
        prior = _Prior(records)
        if not hasattr(source, "tree"):  # a plain folder has no tree to diff: resolve it whole
            return self._full(source, prior)
        if self.resolver is not None and self.source is not None and source.commit != self.source.commit:
            try:
                if self._update(source, prior):
                    self.incremental += 1
                    return self.resolver.out
            except SnapshotMiss:  # a restored resolver found a cached validation gone: resolve afresh
                self.resolver = None
        elif self.resolver is not None and self.source is not None and source.commit == self.source.commit \
                and self._same_keep(prior):
            self.resolver.prior_files = dict(prior)
            return self.resolver.out
        return self._full(source, prior)

    def plan(self, source, records: dict[str, Record], *, serial: int, label: str = "", max_prune: int = 10,
             allow_prune: bool = False, created_at: str = "", records_changed=None) -> Plan:
        """The plan of `source` against `records` (the state at `serial`). `records_changed(s)`: the ids of
        the records written after serial `s` up to `serial` (or more), or None when that is not known (e.g.
        store/state.py LiveRecords.changed_since). With it, a plan after an incremental update looks only at
        the resources the last plan found out of sync, the ones the update changed and the ones whose records
        were written since: the rest were in sync then and nothing they are compared with moved."""
        resolution = self.resolution(source, records)
        only = self._maybe_unsynced(resolution, records_changed)
        plan = make_plan(resolution, records, commit=source.commit, source=label, serial=serial,
                         max_prune=max_prune, allow_prune=allow_prune, created_at=created_at, only=only)
        self._basis = (resolution, serial, {a.id for a in plan.actions if a.resource is not None})
        self._dirty = set()
        return plan

    def _maybe_unsynced(self, resolution: Resolution, records_changed) -> list[str] | None:
        """The desired ids that may be out of sync now, in resolution order; None: all may be."""
        if self._basis is None or records_changed is None or self._basis[0] is not resolution:
            return None
        _, serial, unsynced = self._basis
        written = records_changed(serial)
        if written is None:
            return None
        ids = (unsynced | self._dirty | set(written)) & resolution.resources.keys()
        if len(ids) * 8 > len(resolution.order):  # many: walking them all in order costs no more
            return None
        if self._position is None or self._position[0] is not resolution.order:
            self._position = (resolution.order, {rid: i for i, rid in enumerate(resolution.order)})
        self.narrowed += 1
        return sorted(ids, key=self._position[1].__getitem__)

    # -- snapshots (fresh processes) ------------------------------------------------------------
    def _snapshot_key(self, source) -> str | None:
        repo = getattr(source, "repo", None)
        if repo is None or not hasattr(source, "tree"):
            return None
        ident = (SNAPSHOT_VERSION, str(Path(repo.path).resolve()), getattr(source, "prefix", ""),
                 tuple(self.paths or ()), None if self.known_subjects is None else tuple(sorted(self.known_subjects)))
        return "warm:" + hashlib.sha1(repr(ident).encode()).hexdigest()

    def save(self, force: bool = False) -> bool:
        """Save the resolver's state for fresh processes (after a full resolve, or once the commits it was
        updated to drifted far from the saved one). True when written."""
        if self.resolver is None or self.source is None:
            return False
        if not force and self._changed_since_saved is not None and len(self._changed_since_saved) < RESAVE_AFTER_FILES:
            return False
        key = self._snapshot_key(self.source)
        if key is None:
            return False
        if writes_behind():
            # a one-shot command (validate, plan): the snapshot is written by a child once it has answered
            cache, commit, resolver = self.cache.split_off(), self.source.commit, self.resolver
            write_behind(lambda: self._write_snapshot(cache, key, commit, resolver), cache.path.parent)
            written = True  # handed over: a child that fails only costs the next process a full resolve
        else:
            written = self._write_snapshot(self.cache, key, self.source.commit, self.resolver)
        if written:
            self._changed_since_saved = set()
        return written

    @staticmethod
    def _write_snapshot(cache, key: str, commit, resolver) -> bool:
        cache.save()  # the validations the snapshot points at go first
        return cache.put_snapshot(key, marshal.dumps((SNAPSHOT_VERSION, commit, resolver.export_state())))

    def restore(self, source) -> bool:
        """Take the snapshot saved for `source`'s repository, paths and subjects, if any and its commit is
        still in the repository. True when restored."""
        key = self._snapshot_key(source)
        raw = self.cache.get_snapshot(key) if key else None
        if raw is None:
            return False
        try:
            version, commit, state = marshal.loads(raw)
        except (ValueError, EOFError, TypeError):
            return False
        if version != SNAPSHOT_VERSION:
            return False
        try:
            old = type(source)(source.repo, commit, source.prefix, source.root_label)
        except Exception:  # noqa: BLE001  the commit is gone (a rewritten branch, a pruned mirror)
            return False
        resolver = self._from_state(state, old)
        if resolver is None:
            return False
        self.source, self.resolver, self.restored = old, resolver, True
        self._changed_since_saved = set()
        self._basis = None
        return True

    def _from_state(self, state: tuple, source) -> Resolver | None:
        """A resolver rebuilt from exported state, reading `source` and this planner's cache."""
        return Resolver.from_state(state, source, YamlLocator(source.read), memo=self.cache.validation_memo(),
                                   parse_member=_member_parser(source),
                                   blob_of=lambda p: _blob(source, p), known_subjects=self.known_subjects)

    # -- internals -------------------------------------------------------------------------
    def _same_keep(self, prior) -> bool:
        """Recorded resources only matter to a resolution through the ones kept for broken files."""
        out = self.resolver.out
        if not (out.broken_files or out.invalid_ids):
            return True
        return dict(prior) == self.resolver.prior_files

    def _resolver(self, source, prior) -> Resolver:
        blobs: dict[str, str] = {}

        def blob_of(path: str) -> str | None:
            if not blobs:
                blobs.update(source.list_files())
            return blobs.get(path)

        return Resolver(source, YamlLocator(source.read), dict(prior),
                        prior_specs=prior.runtime_specs(), parse_member=_member_parser(source),
                        memo=self.cache.validation_memo(), blob_of=blob_of, known_subjects=self.known_subjects)

    def _full(self, source, prior) -> Resolution:
        self.full_resolves += 1
        self._basis = None  # a new resolution: its first plan looks at everything (and the old one can go)
        if self.helper is not None:  # a cold load has workers of its own
            self.helper.dismiss()
            self.helper = None
        if self.isolate and self._full_elsewhere(source, prior):
            return self.resolver.out
        with gc_paused():
            self.side = self.side_for() if self.side_for is not None else None
            result: LoadResult = load_cold(source, self.paths, self.cache, self.state_dir, side=self.side)
            resolver = self._resolver(source, prior)
            if self.side is not None and self.side.started:
                resolver.policies_ahead = self.side.resolver_hook()
            resolver.resolve(result.files, result.documents)
            # the loader's own diagnostics (ignore rules, limits) that belong to no loaded file
            file_diags = {id(d) for fr in result.files.values() for d in fr.diagnostics}
            resolver.out.diagnostics.extend(d for d in result.diagnostics if id(d) not in file_diags)
        self.source, self.resolver, self.last_load, self.restored = source, resolver, result, False
        self._changed_since_saved = None  # not saved yet
        self.cache.save()
        if self.compact:
            self.save()  # a restart (or a CLI plan of this repository) starts from here
            self._compact()
        return resolver.out

    def _full_elsewhere(self, source, prior) -> bool:
        """The full resolve of `source` in a child process (`python -m reconciler.engine.warm REQUEST`), which
        fills the document cache (on every core) and saves a snapshot; then that snapshot is restored here."""
        import os
        import subprocess
        import sys
        import tempfile

        if self._snapshot_key(source) is None or source.commit is None:
            return False
        request = {"state_dir": str(self.state_dir), "repo": str(source.repo.path), "commit": source.commit,
                   "prefix": source.prefix, "label": source.root_label, "paths": list(self.paths or []),
                   "subjects": None if self.known_subjects is None else sorted(self.known_subjects),
                   "prior_files": dict(prior), "prior_specs": prior.runtime_specs()}
        try:
            self.state_dir.mkdir(parents=True, exist_ok=True)
            fd, path = tempfile.mkstemp(prefix=".resolve-", dir=self.state_dir)
            with os.fdopen(fd, "wb") as f:
                f.write(marshal.dumps(request))
        except (OSError, ValueError):
            return False
        try:
            done = subprocess.run([sys.executable, "-m", "reconciler.engine.warm", path], capture_output=True,
                                  text=True, timeout=3600)
        except (OSError, subprocess.SubprocessError):
            return False
        finally:
            Path(path).unlink(missing_ok=True)
        if done.returncode != 0:
            import logging

            logging.getLogger(__name__).warning("the resolve in a child process failed; resolving here: %s",
                                                done.stderr.strip()[-2000:])
            return False
        if not (self.restore(source) and self.source.commit == source.commit):
            return False
        self.cache.forget_read()
        self._changed_since_saved = set()
        return True

    def let_go(self) -> None:
        """After an apply that read many specs (a restored resource keeps its spec once read: a first sync of
        10,000 resources read them all, ~35 MB the daemon then held for good): rebuild the resolver from its
        own state, so that they go, with the last plan's basis; the next plan compares every resource once
        (~4 ms at 10,000). For a compact planner (the daemon), when it is idle."""
        if not self.compact or self.resolver is None or self.source is None:
            return
        self._basis = self._position = None
        self._compact()

    def _compact(self) -> None:
        """Swap the resolver for one rebuilt from its own exported state, and let go of everything parsed."""
        if not self.cache.save() and self.cache.dirty:
            return  # the cache could not be written: the specs must stay in memory
        resolver = self._from_state(self.resolver.export_state(), self.source)
        if resolver is None:
            return
        self.resolver, self.last_load = resolver, None
        self.cache.forget_read()

    def _update(self, source, prior) -> bool:
        if not self._same_keep(prior):
            return False
        changed_paths = self.source.changed_paths(source.commit)
        if IGNORE_FILE in changed_paths:
            return False
        rules = load_ignore_rules(source)
        blobs = {}  # the changed files the loader reads -> blob id, None where removed
        for path in changed_paths:
            if wanted(path, self.paths, rules):
                try:
                    blobs[path] = str(source.tree[path].id)
                except KeyError:
                    blobs[path] = None
        self._help(blobs, source)
        changed = {path: None if blob is None else load_file(source, path, blob, self.cache)
                   for path, blob in blobs.items()}
        if not changed:
            if any(p.endswith(".py") for p in changed_paths):
                return False  # a python file a job references may have changed: hashes must be recomputed
            self._moved(source, changed_paths)
            return True
        resolver = self.resolver
        resolver.source, resolver.locator = source, YamlLocator(source.read)
        resolver.blob_of = lambda p: _blob(source, p)
        if not resolver.update(changed):
            self.resolver = None
            return False
        self._dirty |= resolver.replaced.keys()
        self.cache.save()
        self._moved(source, changed_paths)
        return True

    def _help(self, blobs: dict[str, str | None], source) -> None:
        """The changed files missing from the cache, parsed and validated by the helper, if there is one
        (engine/coldload.py Helper); it is let go when there are none."""
        helper, self.helper = self.helper, None
        if helper is None:
            return
        todo = [(path, blob) for path, blob in blobs.items() if blob is not None and not self.cache.has(blob)]
        if todo:
            helper.validate(self.cache, todo, source)
        else:
            helper.dismiss()

    def _moved(self, source, changed_paths: set[str]) -> None:
        self.source = source
        if self._changed_since_saved is not None:
            self._changed_since_saved |= changed_paths


class _PriorData:
    """What a child process gets of the recorded resources: {id: file} and the runtimes' specs."""

    def __init__(self, files: dict[str, str], specs: dict[str, dict]):
        self.files, self.specs = files, specs

    def keys(self):
        return self.files.keys()

    def __getitem__(self, rid: str) -> str:
        return self.files[rid]

    def runtime_specs(self) -> dict[str, dict]:
        return self.specs


def _resolve_request(path: str) -> int:
    """The child side of WarmPlanner._full_elsewhere."""
    import pygit2

    from reconciler.gitops.source import GitSource

    with open(path, "rb") as f:
        r = marshal.loads(f.read())
    source = GitSource(pygit2.Repository(r["repo"]), r["commit"], r["prefix"], r["label"])
    subjects = None if r["subjects"] is None else frozenset(r["subjects"])
    planner = WarmPlanner(Path(r["state_dir"]), r["paths"] or None, subjects)

    def side_for():  # the cold load's worker checks the policies once its share is done
        from reconciler.engine.policy_ahead import PolicyAhead

        return PolicyAhead(source, subjects)
    planner.side_for = side_for
    with gc_paused():
        planner._full(source, _PriorData(r["prior_files"], r["prior_specs"]))
        return 0 if planner.save(force=True) else 1


class _Prior:
    """Recorded resources as {id: source file}, built only when a resolution really needs them."""

    def __init__(self, records: dict[str, Record]):
        self.records = records

    def keys(self):
        return self.records.keys()

    def __getitem__(self, rid: str) -> str:
        file_of = getattr(self.records, "file_of", None)  # remembered records answer without building one
        return (file_of(rid) if file_of is not None else self.records[rid].file) or ""

    def runtime_specs(self) -> dict[str, dict]:
        """The recorded stacks' and operators' specs: jobs on a runtime kept for a broken file are checked
        against its last applied schema."""
        type_of = getattr(self.records, "type_of", None)
        runtimes = [k for k in self.records if (type_of(k) if type_of is not None else self.records[k].type)
                    in ("stack", "operator")]
        return {k: self.records[k].spec for k in runtimes if self.records[k].spec}


def _member_parser(source):
    """Parses a bundle's member file (the parsers are imported when one is)."""
    def parse(path: str):
        from reconciler.core.yamlload import parse_file

        return parse_file(path, source.read(path), "")
    return parse


def _blob(source, path: str) -> str | None:
    try:
        return str(source.tree[path].id)
    except KeyError:
        return None


if __name__ == "__main__":  # a full resolve on behalf of a long-lived process (see WarmPlanner.isolate)
    import sys

    raise SystemExit(_resolve_request(sys.argv[1]))
