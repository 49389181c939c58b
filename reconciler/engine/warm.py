"""The warm planner: a long-lived process (the daemon) plans a new commit by reading only what changed.

It keeps the last load and resolution in memory. For a new commit it diffs the two
trees by blob id, parses and validates only the changed files, and lets the
resolver re-link only their resources when their ids, written tables and
dependencies stay the same (the graph order is then reused as is). Anything
wider (ids added or removed, bundles, stacks, operators, ignore rules, broken
files) falls back to a full resolve, which still reuses every cached parse and
validation. Either way the planner then compares hashes, and deepdiff only runs
on specs whose hash changed.
"""
from __future__ import annotations

from pathlib import Path

from reconciler.core.loader import IGNORE_FILE, LoadResult, gc_paused, load, load_file, load_ignore_rules, wanted
from reconciler.core.plan import Plan
from reconciler.core.planner import make_plan
from reconciler.core.record import Record
from reconciler.core.resolve import Resolution, Resolver
from reconciler.core.yamlload import YamlLocator, parse_file
from reconciler.store.doccache import DocCache


class WarmPlanner:
    def __init__(self, state_dir: Path, paths: list[str] | None = None,
                 known_subjects: frozenset[str] | None = None):
        self.paths = paths
        self.known_subjects = known_subjects  # the instance's users and groups, for policies' subjects
        self.cache = DocCache(Path(state_dir))
        self.source = None
        self.files: dict = {}
        self.resolver: Resolver | None = None
        self.full_resolves = 0  # how often a change needed the whole resolve (for tests and metrics)
        self.incremental = 0

    def resolution(self, source, records: dict[str, Record]) -> Resolution:
        prior = _Prior(records)
        if not hasattr(source, "tree"):  # a plain folder has no tree to diff: resolve it whole
            return self._full(source, prior)
        if self.resolver is not None and self.source is not None and source.commit != self.source.commit:
            if self._update(source, prior):
                self.incremental += 1
                return self.resolver.out
        elif self.resolver is not None and self.source is not None and source.commit == self.source.commit \
                and self._same_keep(prior):
            self.resolver.prior_files = dict(prior)
            return self.resolver.out
        return self._full(source, prior)

    def plan(self, source, records: dict[str, Record], *, serial: int, label: str = "", max_prune: int = 10,
             allow_prune: bool = False, created_at: str = "") -> Plan:
        resolution = self.resolution(source, records)
        return make_plan(resolution, records, commit=source.commit, source=label, serial=serial,
                         max_prune=max_prune, allow_prune=allow_prune, created_at=created_at)

    # -- internals -------------------------------------------------------------------------
    def _same_keep(self, prior: dict[str, str]) -> bool:
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
                        prior_specs=None, parse_member=lambda p: parse_file(p, source.read(p), ""),
                        memo=self.cache.validation_memo(), blob_of=blob_of, known_subjects=self.known_subjects)

    def _full(self, source, prior) -> Resolution:
        self.full_resolves += 1
        with gc_paused():
            result: LoadResult = load(source, self.paths, cache=self.cache)
            resolver = self._resolver(source, prior)
            resolver.resolve(result.files, result.documents)
        self.source, self.files, self.resolver = source, dict(result.files), resolver
        self.cache.save()
        return resolver.out

    def _update(self, source, prior) -> bool:
        if not self._same_keep(prior):
            return False
        changed_paths = self.source.changed_paths(source.commit)
        if IGNORE_FILE in changed_paths:
            return False
        rules = load_ignore_rules(source)
        changed = {}
        for path in changed_paths:
            if not wanted(path, self.paths, rules):
                continue
            try:
                blob = str(source.tree[path].id)
            except KeyError:
                changed[path] = None  # removed
                continue
            changed[path] = load_file(source, path, blob, self.cache)
        if not changed:
            if any(p.endswith(".py") for p in changed_paths):
                return False  # a python file a job references may have changed: hashes must be recomputed
            self.source = source
            return True
        resolver = self.resolver
        resolver.source, resolver.locator = source, YamlLocator(source.read)
        resolver.blob_of = lambda p: _blob(source, p)
        if not resolver.update(changed):
            self.resolver = None
            return False
        self.files.update({p: fr for p, fr in changed.items() if fr is not None})
        self.source = source
        return True


class _Prior:
    """Recorded resources as {id: source file}, built only when a resolution really needs them."""

    def __init__(self, records: dict[str, Record]):
        self.records = records

    def keys(self):
        return self.records.keys()

    def __getitem__(self, rid: str) -> str:
        return self.records[rid].file or ""


def _blob(source, path: str) -> str | None:
    try:
        return str(source.tree[path].id)
    except KeyError:
        return None
