"""From loaded documents to resolved resources: models, ids, bundles, implicit dependencies, cycles.

Pure: reads member files only through the `Source`, positions only through the `Locator`.
A resource whose document is invalid is not returned but its id (when recognisable)
lands in `invalid_ids`, so the planner keeps its last applied state instead of pruning it.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass, field

from reconciler.core.diagnostics import Diagnostic, error, warning
from reconciler.core.documents import Document, Locator, Source
from reconciler.core.graph import CycleError, Graph
from reconciler.core.ids import DEFAULT_WORKSPACE, make_id, split_id
from reconciler.core.resource import Resource, spec_hash
from reconciler.core.scopes import BUILTIN_STACKS, has_opaque_job, workspace_scoped

BUNDLE_TYPES = ("bundle", "dataproduct")
# types whose change reaches into other resources' validation (members, job spec schemas)
RUNTIME_SHAPING = BUNDLE_TYPES + ("stack", "operator")
# types whose change reaches into the policy checks (patterns against depots' datasets, overlaps between policies)
POLICY_SHAPING = ("policy", "depot")


@dataclass
class Resolution:
    resources: dict[str, Resource] = field(default_factory=dict)
    diagnostics: list[Diagnostic] = field(default_factory=list)
    invalid_ids: set[str] = field(default_factory=set)  # recognised but invalid: keep, never prune
    broken_files: set[str] = field(default_factory=set)  # files with any error: their records are kept
    member_files: set[str] = field(default_factory=set)  # files read as bundle members
    order: list[str] = field(default_factory=list)  # topological (dependencies first)

    @property
    def has_errors(self) -> bool:
        return any(d.is_error for d in self.diagnostics)


@dataclass
class _Doc:
    """One artefact document, wherever it came from (a file, a member file, an inline member spec)."""

    data: dict
    file: str
    doc_index: int
    line: int
    prefix: tuple = ()  # key path of `data` inside its YAML document (inline bundle members)
    bundle: str | None = None
    member_key: str | None = None
    memo_key: tuple | None = None  # (blob id, document index[, workspace override]) when the result may be cached
    validated: "Validated | None" = None  # found or made ahead by Resolver._validate_ahead


@dataclass(frozen=True)
class Validated:
    """What validating one document yields; pure function of the document, so it is cached by blob id."""

    spec: dict | None  # normalised document, None when invalid
    hash: str
    refs: tuple
    job_specs: tuple
    diagnostics: tuple  # with key paths, not yet placed
    identity: tuple | None  # (type, workspace, name) even for an invalid document


LOCATE = object()  # a diagnostic's position: still to be found by the locator

VALIDATE_BATCH = 100  # documents per validate_many call: enough for its stages, few enough for the CPU's caches


def validate(data) -> Validated:
    return validate_many([data])[0]


def validate_many(documents: list) -> list[Validated]:
    """`validate` of each document, in stages over them all: every model built, then every spec normalised,
    then hashed, then its references listed. Each stage's code and data then stay in the CPU's caches:
    ~18 % less CPU over batches of ~100 documents than validating one whole document after another."""
    from reconciler.core import resources as models  # only when a document was not validated before

    checked = [models.validate_document(data) for data in documents]
    specs = []
    for model, diags in checked:
        spec = None
        if model is not None and not any(d.is_error for d in diags):
            spec = models.normalise(model)
            if workspace_scoped(spec["type"]) and not spec.get("workspace"):
                spec["workspace"] = DEFAULT_WORKSPACE
        specs.append(spec)
    hashes = [spec_hash(spec) if spec is not None else "" for spec in specs]
    out = []
    for data, (model, diags), spec, hash_ in zip(documents, checked, specs, hashes):
        if spec is None:
            ident = models.identity(data) if isinstance(data, dict) else None
            out.append(Validated(None, "", (), (), tuple(diags), ident))
        else:
            out.append(Validated(spec, hash_, tuple(models.refs(model)), tuple(models.job_specs(model)), tuple(diags),
                                 (spec["type"], spec.get("workspace"), spec["name"])))
    return out


def _suggest(word: str, candidates) -> str:
    close = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


class Resolver:
    def __init__(self, source: Source, locator: Locator, prior_ids=frozenset(),
                 prior_specs: dict[str, dict] | None = None, parse_member=None, memo=None, blob_of=None,
                 known_subjects: frozenset[str] | None = None):
        self.source = source
        # users and groups of the instance config, when one is known: policies' subjects are checked against
        # them (plus the repository's owner teams); None: no config, no subject check
        self.known_subjects = known_subjects
        self.blob_of = blob_of  # path -> blob id of a repository file, for files that jobs reference
        self.memo = memo  # get(key) / put(key, Validated), e.g. the state dir's DocCache
        self.locator = locator
        # recorded resources: id -> source file (a set of ids means: file unknown). Only those the plan will
        # keep (their file is broken) satisfy references: a reference to something being pruned is an error.
        self.prior_files = dict(prior_ids) if isinstance(prior_ids, dict) else dict.fromkeys(prior_ids)
        self.prior_specs = prior_specs or {}
        # parse_member(path) -> FileResult, for member files not already loaded
        self.parse_member = parse_member
        self.out = Resolution()
        self._origin: dict[str, _Doc] = {}
        self._validated: dict[str, Validated] = {}  # id -> its validation result
        self._links: tuple = (set(), {})  # known ids and table writers of the last link
        self._by_file: dict[str, set[str]] | None = None  # file -> ids, built on the first update
        # the last policy check: its errors, the policies they left out, the warnings it placed
        self._policy_errors: frozenset = frozenset()
        self._failed_policies: dict[str, Resource] = {}
        self._policy_warnings: list[Diagnostic] = []
        self.replaced: dict[str, Resource] = {}  # the last update's resources as they were before it
        # the full resolve's policy findings when worked out elsewhere: (resources, validated_hash) ->
        # [(Finding, position or LOCATE)] if they were worked out on these resources, else None (called only when
        # no invalid or kept resource leaves the datasets unsure; engine/policy_ahead.py)
        self.policies_ahead = None

    # -- diagnostics -------------------------------------------------------------------------
    def _place(self, d: Diagnostic, doc: _Doc, at=LOCATE) -> Diagnostic:
        """`d` at its key path's line and column in `doc` (`at`: that position, found already; None: unknown)."""
        if d.file is not None and d.line is not None:
            return d
        if at is LOCATE:
            path = tuple(doc.prefix) + tuple(d.path or ())
            at = self.locator.locate(doc.file, doc.doc_index, path) if self.locator else None
        line, col = at if at else (doc.line, None)
        return Diagnostic(d.severity, d.message, doc.file, line, col, d.hint)

    def _error(self, doc: _Doc, message: str, path: tuple = (), hint: str | None = None, at=LOCATE) -> None:
        self.out.diagnostics.append(self._place(error(message, path=path, hint=hint), doc, at))
        self.out.broken_files.add(doc.file)

    def _warn(self, doc: _Doc, message: str, path: tuple = (), hint: str | None = None, at=LOCATE) -> None:
        self.out.diagnostics.append(self._place(warning(message, path=path, hint=hint), doc, at))

    # -- entry point -------------------------------------------------------------------------
    def resolve(self, files: dict, documents: list[Document]) -> Resolution:
        """files: path -> FileResult of everything loaded; documents: the artefact documents."""
        for fr in files.values():
            if fr.broken:
                self.out.broken_files.add(fr.path)
                self.out.diagnostics.extend(fr.diagnostics)
            else:
                self.out.diagnostics.extend(d for d in fr.diagnostics if not d.is_error)
        self.files = files
        self.out.member_files = self._member_files(documents)
        docs = [_Doc(d.data, d.file, d.index, d.line, memo_key=(d.blob_id, d.index) if d.blob_id else None)
                for d in documents if d.file not in self.out.member_files]
        prefetch = getattr(self.memo, "prefetch", None)
        if prefetch is not None:  # one read of a persistent memo for the whole load
            prefetch([doc.memo_key for doc in docs if doc.memo_key is not None])
        self._validate_ahead(docs)
        for doc in docs:
            self._add_document(doc)
        self._link()
        self._hash_referenced_files()
        return self.out

    def _hash_referenced_files(self) -> None:
        for r in self.out.resources.values():
            self._hash_files_of(r)

    def _hash_files_of(self, r: Resource) -> None:
        """A python job's file is part of what its workflow is: a change to it alone re-applies (re-runs)
        the workflow, so the file's blob id joins the resource hash."""
        if self.blob_of is None or r.type != "workflow":
            return
        files = sorted({(j.get("spec") or {}).get("file") for j in r.spec["workflow"].get("dag", [])
                        if j.get("stack") == "python" and (j.get("spec") or {}).get("file")})
        if files:
            extra = "".join(f"\0{f}\0{self.blob_of(f) or 'missing'}" for f in files)
            r.hash = spec_hash({"spec": spec_hash(r.spec), "files": extra})

    def _member_files(self, documents: list[Document]) -> set[str]:
        from reconciler.core.loader import read_member

        found = set()
        for d in documents:
            t = d.data.get("type")
            section = d.data.get(t) if t in BUNDLE_TYPES else None
            members = section.get("resources") if isinstance(section, dict) else None
            for m in members if isinstance(members, list) else ():
                if isinstance(m, dict) and isinstance(m.get("file"), str):
                    path, _ = read_member(self.source, d.file, m["file"])
                    if path:
                        found.add(path)
        return found

    # -- one document ------------------------------------------------------------------------
    def _validate_ahead(self, docs: list[_Doc]) -> None:
        """Every document's validation, before any is added: from the memo, else made in batches
        (`validate_many`: less CPU than one after another) and put into the memo."""
        memo = self.memo
        missing = []
        for doc in docs:
            hit = memo.get(doc.memo_key) if memo is not None and doc.memo_key is not None else None
            if hit is None:
                missing.append(doc)
            else:
                doc.validated = hit
        for start in range(0, len(missing), VALIDATE_BATCH):
            batch = missing[start:start + VALIDATE_BATCH]
            for doc, v in zip(batch, validate_many([doc.data for doc in batch])):
                doc.validated = v
                if memo is not None and doc.memo_key is not None:
                    memo.put(doc.memo_key, v)

    def _validate(self, doc: _Doc) -> Validated:
        if doc.validated is not None:  # made ahead: handed over once (the document is kept as an origin)
            v, doc.validated = doc.validated, None
            return v
        if self.memo is not None and doc.memo_key is not None:
            hit = self.memo.get(doc.memo_key)
            if hit is not None:
                return hit
        v = validate(doc.data)
        if self.memo is not None and doc.memo_key is not None:
            self.memo.put(doc.memo_key, v)
        return v

    def _add_document(self, doc: _Doc) -> Resource | None:
        v = self._validate(doc)
        for d in v.diagnostics:
            self.out.diagnostics.append(self._place(d, doc))
        if v.spec is None:
            self.out.broken_files.add(doc.file)
            if v.identity:
                self.out.invalid_ids.add(make_id(v.identity[0], v.identity[2], v.identity[1]))
            return None
        spec = v.spec
        type_ = spec["type"]
        workspace = spec.get("workspace") if workspace_scoped(type_) else None
        rid = make_id(type_, spec["name"], workspace)
        if rid in self._origin:
            first = self._origin[rid]
            first_line = self.locator.locate(first.file, first.doc_index, tuple(first.prefix)) if self.locator else None
            where = f"{first.file}:{first_line[0] if first_line else first.line}"
            self._error(doc, f"duplicate resource {rid}: also defined at {where}", ("name",),
                        hint="rename one of them; ids are TYPE:NAME (TYPE:WORKSPACE/NAME for workspace-scoped types)")
            return None
        annotations = spec.get("annotations") or {}
        res = Resource(id=rid, type=type_, name=spec["name"], workspace=workspace, spec=spec, file=doc.file,
                       doc_index=doc.doc_index, line=doc.line, prune=annotations.get("reconciler/prune") != "false",
                       bundle=doc.bundle, hash=v.hash)
        self._origin[rid] = doc
        self.out.resources[rid] = res
        self._validated[rid] = v
        if type_ in BUNDLE_TYPES:
            self._expand_bundle(res, doc)
        return res

    def _expand_bundle(self, bundle: Resource, doc: _Doc) -> None:
        section = bundle.spec[bundle.type]
        raw_section = doc.data.get(bundle.type) or {}
        for i, ws in enumerate(section.get("workspaces") or []):
            ws_doc = {"version": "v1", "type": "workspace", "name": ws["name"]}
            if ws.get("description"):
                ws_doc["description"] = ws["description"]
            if bundle.spec.get("owner"):
                ws_doc["owner"] = bundle.spec["owner"]
            sub = _Doc(ws_doc, doc.file, doc.doc_index, doc.line, doc.prefix + (bundle.type, "workspaces", i),
                       bundle.id, f"workspace:{ws['name']}")
            self._add_document(sub)
        members: dict[str, str] = {}  # member key -> resource id
        member_deps: dict[str, list[str]] = {}
        for i, m in enumerate(section.get("resources") or []):
            mpath = doc.prefix + (bundle.type, "resources", i)
            if m.get("file"):
                path, diag = self._read_member_path(doc, m["file"], mpath + ("file",))
                if path is None:
                    continue
                fr = self.files.get(path) or (self.parse_member(path) if self.parse_member else None)
                if fr is None or fr.broken:
                    if fr is not None and path not in self.files:
                        self.out.diagnostics.extend(fr.diagnostics)
                    self.out.broken_files.add(path)
                    continue
                arts = [d for d in fr.documents if d.is_artefact]
                if len(arts) != 1:
                    self._error(doc, f"bundle member '{m['id']}': file {path} must hold exactly one artefact, found {len(arts)}",
                                mpath + ("file",))
                    continue
                data = dict(arts[0].data)
                sub = _Doc(None, path, arts[0].index, arts[0].line, (), bundle.id, m["id"],
                           memo_key=(arts[0].blob_id, arts[0].index, m.get("workspace")) if arts[0].blob_id else None)
            else:
                raw_spec = raw_section["resources"][i]["spec"] if _has(raw_section, i) else m["spec"]
                data, sub = dict(raw_spec), _Doc(None, doc.file, doc.doc_index, doc.line, mpath + ("spec",), bundle.id, m["id"])
            if data.get("type") in BUNDLE_TYPES:
                self._error(doc, f"bundle member '{m['id']}' is a {data.get('type')}: bundles cannot nest", mpath)
                continue
            if m.get("workspace"):
                if data.get("workspace") not in (None, m["workspace"]):
                    self._error(doc, f"bundle member '{m['id']}' sets workspace '{m['workspace']}' but its document says "
                                     f"'{data.get('workspace')}'", mpath + ("workspace",))
                    continue
                data["workspace"] = m["workspace"]
            sub.data = data
            res = self._add_document(sub)
            if res is not None:
                members[m["id"]] = res.id
                member_deps[res.id] = m.get("dependencies") or []
                bundle.depends_on.add(res.id)
        for rid, keys in member_deps.items():
            for k in keys:
                if k in members:
                    self.out.resources[rid].depends_on.add(members[k])
        for rid in list(self.out.resources):
            r = self.out.resources[rid]
            if r.bundle == bundle.id and r.type == "workspace":
                bundle.depends_on.add(rid)

    def _read_member_path(self, doc: _Doc, rel: str, path: tuple):
        from reconciler.core.loader import read_member

        resolved, diag = read_member(self.source, doc.file, rel)
        if diag is not None:
            self._error(doc, diag.message, path, diag.hint)
        return resolved, diag

    # -- references and graph ----------------------------------------------------------------
    def _known_and_writers(self) -> tuple[set[str], dict[str, set[str]]]:
        res = self.out.resources
        kept = {rid for rid, f in self.prior_files.items() if f is None or f in self.out.broken_files}
        known = set(res) | kept | self.out.invalid_ids
        writers: dict[str, set[str]] = {}
        for r in res.values():
            for ref in self._validated[r.id].refs:
                if ref.kind == "write":
                    writers.setdefault(ref.target, set()).add(r.id)
        return known, writers

    def _link(self) -> None:
        known, writers = self._links = self._known_and_writers()
        for target, ids in sorted(writers.items()):
            if len(ids) > 1:
                first = sorted(ids)[0]
                self._warn(self._origin[first], f"{target} is written by {len(ids)} workflows: {', '.join(sorted(ids))}",
                           hint="one owner per table keeps lineage and freshness meaningful; use mode append or merge "
                                "if several workflows feed it on purpose")
        bad = {rid for rid in list(self.out.resources) if not self._link_one(rid, known, writers)}
        bad |= self._check_policies(known, writers)
        for rid in bad:
            self._drop(rid)
        self._order()

    def _link_one(self, rid: str, known: set[str], writers: dict) -> bool:
        """Add one resource's implicit dependencies; False when one of its references is an error."""
        r = self.out.resources[rid]
        doc = self._origin[rid]
        v = self._validated[rid]
        ok = True
        if r.workspace:
            ws_id = make_id("workspace", r.workspace)
            if ws_id in known:
                r.depends_on.add(ws_id)
            elif r.workspace != DEFAULT_WORKSPACE:
                self._error(doc, f"{r.type} '{r.name}': workspace '{r.workspace}' is not defined", ("workspace",),
                            hint="add a `type: workspace` artefact, or list it in a bundle's workspaces"
                                 + _suggest(r.workspace, [split_id(k)[2] for k in known if k.startswith("workspace:")]))
                ok = False
        for ref in v.refs:
            target = self._ref_target(r, ref, known, writers, doc)
            if target is False:
                ok = False
            elif target:
                r.depends_on.add(target)
        for js in v.job_specs:
            if not self._check_job_spec(r, js, doc):
                ok = False
        return ok

    # -- policies ------------------------------------------------------------------------------
    def _check_policies(self, known: set[str], writers: dict) -> set[str]:
        """Place the findings of core/policy_checks.py; the ids of policies with errors (kept at their last
        applied state, like any resource whose references are wrong)."""
        findings, places = self._policy_findings(known, writers, ahead=self.policies_ahead)
        bad = set()
        for f, at in zip(findings, places):
            if f.severity == "error":
                self._error(self._origin[f.policy_id], f.message, f.path, f.hint, at)
                bad.add(f.policy_id)
        self._policy_errors = _error_keys(findings)
        self._failed_policies = {rid: self.out.resources[rid] for rid in bad}
        self._place_policy_warnings(findings, places)
        return bad

    def _recheck_policies(self) -> bool:
        """After an incremental update that changed what the policy checks see (a policy, a depot, an owner):
        the warnings are placed again; False when any policy's errors changed, since dropping or restoring
        a policy needs the whole resolve."""
        known, writers = self._links
        findings, places = self._policy_findings(known, writers, self._failed_policies.values())
        if _error_keys(findings) != self._policy_errors:
            return False
        gone = {id(d) for d in self._policy_warnings}
        self.out.diagnostics = [d for d in self.out.diagnostics if id(d) not in gone]
        self._place_policy_warnings(findings, places)
        return True

    def _place_policy_warnings(self, findings, places) -> None:
        start = len(self.out.diagnostics)
        for f, at in zip(findings, places):
            if f.severity != "error":
                self._warn(self._origin[f.policy_id], f.message, f.path, f.hint, at)
        self._policy_warnings = self.out.diagnostics[start:]

    def _policy_findings(self, known: set[str], writers: dict, failed=(), ahead=None) -> tuple[list, list]:
        """The policy checks' findings, and where each is placed (LOCATE: still to be found). `ahead`: see
        `policies_ahead`."""
        from reconciler.core import policy_checks

        policies = [r for r in self.out.resources.values() if r.type == "policy"] + list(failed)
        if not policies:
            return [], []
        absent = {k.partition(":")[0] for k in known - set(self.out.resources)}  # invalid, or kept for a broken file
        unsure = bool(absent & set(BUNDLE_TYPES))  # an invalid bundle's members are unknown
        unsure_lake, unsure_depots = unsure or "workflow" in absent, unsure or "depot" in absent
        if ahead is not None and not (unsure_lake or unsure_depots):
            answered = ahead(self.out.resources, self.validated_hash)
            if answered is not None:
                return [f for f, _ in answered], [at for _, at in answered]
        universe = policy_checks.DatasetUniverse.of(self.out.resources.values(), writers, unsure_lake=unsure_lake,
                                                    unsure_depots=unsure_depots)
        subjects = None
        if self.known_subjects is not None:
            subjects = set(self.known_subjects) | {policy_checks.EVERYONE}
            for r in self.out.resources.values():
                subjects |= subject_names(r.spec)
        findings = policy_checks.check_policies(policies, universe, subjects, self._filter_problem)
        return findings, [LOCATE] * len(findings)

    def _filter_problem(self, text: str) -> str | None:
        """policy_checks.filter_problem, remembered in the validation memo: the SQL parser is imported only
        when a filter is new."""
        from reconciler.core.policy_checks import filter_problem

        key = filter_key(text)
        hit = self.memo.get(key) if self.memo is not None else None
        if hit is not None:
            return hit or None
        problem = filter_problem(text)
        if self.memo is not None:
            self.memo.put(key, problem or "")
        return problem

    def validated_hash(self, rid: str) -> str | None:
        """The hash resource `rid`'s document validated to (its spec's; a resource's own hash may add the
        hashes of files it references)."""
        v = self._validated.get(rid)
        return v.hash if v is not None else None

    # -- incremental update (the daemon's warm path) ---------------------------------------------
    def update(self, changed: dict) -> bool:
        """Apply changed files (path -> FileResult, or None when removed) to the last resolution.

        Handles the common edit, specs changing inside files whose ids, written tables and
        dependencies stay the same, in time proportional to the change. Returns False when the change
        reaches further (ids appear or vanish, a bundle, stack or operator is involved, a file breaks
        or was broken, dependencies change); this resolver is then spent and the caller resolves
        everything again with a new one.
        """
        out = self.out
        paths = set(changed)
        if paths & (out.member_files | out.broken_files):
            return False
        if self._by_file is None:
            self._by_file = {}
            for rid, d in self._origin.items():
                self._by_file.setdefault(d.file, set()).add(rid)
        old_ids = set().union(*(self._by_file.get(p, ()) for p in paths))
        if any(rid not in out.resources or out.resources[rid].type in RUNTIME_SHAPING or out.resources[rid].bundle
               for rid in old_ids):
            return False
        new: dict[str, tuple[_Doc, Validated]] = {}
        count = 0
        for fr in changed.values():
            if fr is None or fr.broken:
                return False
            for d in fr.documents:
                if not d.is_artefact:
                    continue
                doc = _Doc(d.data, d.file, d.index, d.line, memo_key=(d.blob_id, d.index) if d.blob_id else None)
                v = self._validate(doc)
                if v.spec is None or any(x.is_error for x in v.diagnostics) or v.spec["type"] in RUNTIME_SHAPING:
                    return False
                new[_vid(v)] = (doc, v)
                count += 1
        if set(new) != old_ids or count != len(new):  # ids appeared, vanished or now collide
            return False
        known, writers = self._links  # unchanged: the same ids and the same written tables
        checked = self.known_subjects is not None
        # whether the policy checks must run again: they see something new, or their warnings' file changed
        recheck = any(d.file in paths for d in self._policy_warnings)
        for rid, (_, v) in new.items():
            old_writes, new_writes = _writes(self._validated[rid].refs), _writes(v.refs)
            if old_writes != new_writes or any(len(writers.get(t, ())) > 1 for t in new_writes):
                return False
            old_spec = self._validated[rid].spec
            recheck |= old_spec["type"] in POLICY_SHAPING and old_spec != v.spec \
                or _policy_facts(old_spec, checked) != _policy_facts(v.spec, checked)
        before = {rid: set(out.resources[rid].depends_on) for rid in old_ids}
        self.replaced = {rid: out.resources[rid] for rid in old_ids}
        for rid in old_ids:
            del out.resources[rid], self._origin[rid], self._validated[rid]
        out.diagnostics = [d for d in out.diagnostics if d.file not in paths]
        for doc, _ in new.values():
            self._add_document(doc)
        for rid in old_ids:
            if not self._link_one(rid, known, writers) or out.resources[rid].depends_on != before[rid]:
                return False
            self._hash_files_of(out.resources[rid])
        if recheck and not self._recheck_policies():
            return False
        for p in paths:  # a document may have moved between the changed files
            self._by_file.pop(p, None)
        for rid in old_ids:
            self._by_file.setdefault(self._origin[rid].file, set()).add(rid)
        return True

    # -- snapshots (engine/warm.py persists them so a fresh process can update instead of resolving) ----
    def export_state(self) -> tuple:
        """Everything `update` needs, as plain data (tuples, sets, dicts, strings): the resolution, where each
        resource came from, what linking found. Specs are not included: a restored resolver reads them
        from the validation memo by their keys when something asks (inline bundle members carry theirs)."""
        out = self.out
        in_failed = set(self._failed_policies)
        rows = []
        for rid, doc in self._origin.items():
            r = out.resources.get(rid) or self._failed_policies.get(rid)
            if r is None:  # dropped for a bad reference or a cycle: only its place is kept
                rows.append((rid, 0, doc.file, doc.doc_index, doc.line, tuple(doc.prefix), doc.bundle, doc.member_key,
                             doc.memo_key, None))
                continue
            where = 1 if rid in out.resources else 2 if rid in in_failed else 0
            spec = r.spec if doc.memo_key is None else None
            rows.append((rid, where, doc.file, doc.doc_index, doc.line, tuple(doc.prefix), doc.bundle, doc.member_key,
                         doc.memo_key, (r.type, r.name, r.workspace, r.hash, r.prune, frozenset(r.depends_on), spec)))
        known, writers = self._links
        warnings = {id(d) for d in self._policy_warnings}
        return (
            STATE_VERSION, tuple(rows), tuple(out.order),
            tuple(d.to_data() for d in out.diagnostics),
            tuple(i for i, d in enumerate(out.diagnostics) if id(d) in warnings),
            frozenset(out.invalid_ids), frozenset(out.broken_files), frozenset(out.member_files),
            frozenset(known), {t: frozenset(ids) for t, ids in writers.items()},
            self._policy_errors, dict(self.prior_files),
            None if self.known_subjects is None else frozenset(self.known_subjects),
        )

    @classmethod
    def from_state(cls, state: tuple, source: Source, locator: Locator, *, memo, parse_member=None, blob_of=None,
                   known_subjects: frozenset[str] | None = None) -> "Resolver | None":
        """A resolver that `update`s exactly as the one that exported `state` would; None when `state` was
        written by other code or for other subjects."""
        if not state or state[0] != STATE_VERSION:
            return None
        (_, rows, order, diags, warning_idx, invalid_ids, broken_files, member_files, known, writers,
         policy_errors, prior_files, subjects) = state
        if subjects != (None if known_subjects is None else frozenset(known_subjects)):
            return None
        self = cls(source, locator, prior_files, parse_member=parse_member, memo=memo, blob_of=blob_of,
                   known_subjects=known_subjects)
        out = self.out
        origin_rows: dict[str, tuple] = {}
        by_file: dict[str, set[str]] = {}
        memo_keys: dict[str, tuple] = {}
        for rid, where, file, doc_index, line, prefix, bundle, member_key, memo_key, res in rows:
            origin_rows[rid] = (file, doc_index, line, prefix, bundle, member_key, memo_key)
            by_file.setdefault(file, set()).add(rid)
            if memo_key is not None:
                memo_keys[rid] = memo_key
            if res is None:
                continue
            type_, name, workspace, hash_, prune, depends_on, spec = res
            r = RestoredResource.make(rid, type_, name, workspace, file, doc_index, line, set(depends_on), prune,
                                      bundle, hash_, spec, self._spec_loader(memo_key))
            if where == 1:
                out.resources[rid] = r
            elif where == 2:
                self._failed_policies[rid] = r
        self._origin = _RestoredOrigins(origin_rows)
        self._validated = _RestoredValidations(memo_keys, memo)
        self._by_file = by_file
        out.order = list(order)
        out.diagnostics = [Diagnostic(*d) for d in diags]
        self._policy_warnings = [out.diagnostics[i] for i in warning_idx]
        out.invalid_ids, out.broken_files, out.member_files = set(invalid_ids), set(broken_files), set(member_files)
        self._links = (set(known), {t: set(ids) for t, ids in writers.items()})
        self._policy_errors = policy_errors
        self.files = {}
        return self

    def _spec_loader(self, memo_key):
        if memo_key is None:
            return None
        memo = self.memo

        def load() -> dict:
            v = memo.get(memo_key) if memo is not None else None
            if v is None:
                raise SnapshotMiss(f"validation result {memo_key!r} is no longer cached")
            return v.spec
        return load

    def _ref_target(self, r: Resource, ref, known: set[str], writers: dict, doc: _Doc):
        """The resource id a reference depends on; None for no edge; False when the reference is an error."""
        kind, target = ref.kind, ref.target
        if kind in ("read", "write"):
            scheme, _, rest = target.partition("://")
            owner, _, dataset = rest.partition("/")
            if scheme == "depot":
                if kind == "write":
                    self._error(doc, f"{_what(r)}: cannot write into depot dataset {target}; outputs go to lake://WORKSPACE/TABLE", ref.path)
                    return False
                rid = make_id("depot", owner)
                if rid in known:
                    return rid
                self._error(doc, f"{_what(r)}: dataset {target} names unknown depot '{owner}'"
                            + _suggest(owner, [split_id(k)[2] for k in known if k.startswith("depot:")]), ref.path,
                            hint="define the depot, or fix the address (depot://DEPOT/DATASET)")
                return False
            if scheme == "lake":
                ws_id = make_id("workspace", owner)
                if kind == "write":
                    if r.type == "workflow" and owner != r.workspace:
                        self._error(doc, f"{_what(r)}: output {target} is in workspace '{owner}', but a workflow may only "
                                         f"write into its own workspace '{r.workspace}'", ref.path)
                        return False
                    return None
                table_writers = writers.get(target)
                if table_writers:
                    if r.id in table_writers:
                        return None  # a table the workflow writes itself: its own jobs order the reads
                    others = sorted(table_writers)  # the workflow writing it (several: depend on all of them)
                    r.depends_on.update(others[1:])
                    return others[0]
                if ws_id not in known and owner != DEFAULT_WORKSPACE:
                    self._error(doc, f"{_what(r)}: dataset {target} is in unknown workspace '{owner}'", ref.path)
                    return False
                if not any(i.startswith("workflow:") for i in self.out.invalid_ids):  # an invalid one may write it
                    self._warn(doc, f"{_what(r)}: no workflow in this repository writes {target}", ref.path,
                               hint="check the table name, or ignore this if the table is written outside Reconciler")
                return ws_id if ws_id in known else None
            self._error(doc, f"{_what(r)}: '{target}' is not a dataset address (depot://DEPOT/DATASET or lake://WORKSPACE/TABLE)", ref.path)
            return False
        if kind in ("stack", "operator"):
            rid = make_id(kind, target)
            if rid in known:
                return rid
            extra = BUILTIN_STACKS if kind == "stack" else ()
            self._error(doc, f"{_what(r)}: unknown {kind} '{target}'"
                        + _suggest(target, [split_id(k)[2] for k in known if k.startswith(kind + ":")] + list(extra)),
                        ref.path, hint=f"built-in stacks: {', '.join(BUILTIN_STACKS)}" if kind == "stack" else None)
            return False
        if kind == "secret":
            ws, _, name = target.rpartition("/")
            rid = make_id("secret", name, ws or r.workspace or DEFAULT_WORKSPACE)
            if rid in known:
                return rid
            self._error(doc, f"{_what(r)}: unknown secret '{name}' in workspace '{ws or r.workspace or DEFAULT_WORKSPACE}'", ref.path,
                        hint="define a `type: secret` artefact there (its value comes from the environment or a file)")
            return False
        if kind == "resource":
            rid = target
            type_, ws, name = split_id(target)
            if ws is None and workspace_scoped(type_):
                rid = make_id(type_, name, r.workspace or DEFAULT_WORKSPACE)
            if rid in known:
                return rid
            self._error(doc, f"{_what(r)}: depends_on names unknown resource '{target}'" + _suggest(rid, known), ref.path)
            return False
        return None

    def _check_job_spec(self, r: Resource, js, doc: _Doc) -> bool:
        runtime = self.out.resources.get(make_id(js.runtime_kind, js.runtime_name))
        spec = runtime.spec if runtime else self.prior_specs.get(make_id(js.runtime_kind, js.runtime_name))
        schema = ((spec or {}).get(js.runtime_kind) or {}).get("schema")
        if not schema:
            return True
        from jsonschema import Draft202012Validator

        ok = True
        for e in sorted(Draft202012Validator(schema).iter_errors(js.spec), key=lambda e: list(e.absolute_path)):
            ok = False
            where = ".".join(str(p) for p in e.absolute_path) or "spec"
            self._error(doc, f"{r.type} '{r.name}': job '{js.job}': {where}: {e.message} "
                             f"(checked against the JSON Schema of {js.runtime_kind} '{js.runtime_name}')",
                        tuple(js.path) + tuple(e.absolute_path))
        return ok

    def _drop(self, rid: str) -> None:
        self.out.resources.pop(rid, None)
        self.out.invalid_ids.add(rid)

    def _order(self) -> None:
        while True:
            g = Graph.build({rid: r.depends_on for rid, r in self.out.resources.items()})
            try:
                self.out.order = g.topological()
                return
            except CycleError as e:
                cycle = e.cycle
                first = self._origin[cycle[0]]
                shown = " -> ".join(f"{c} ({self._origin[c].file})" for c in cycle)
                self._error(first, f"dependency cycle: {shown}", (),
                            hint="remove one of these dependencies (depends_on, a dataset read, or a bundle dependency)")
                for c in set(cycle):
                    self._drop(c)


def _what(r: Resource) -> str:
    """How a reference's errors name the resource (only formatted when there is one to report)."""
    return f"{r.type} '{r.name}'"


def subject_names(spec: dict) -> set[str]:
    """Subjects a resource makes known: its owner team, and a service's token consumers (they act as users)."""
    out = {spec["owner"]} if isinstance(spec.get("owner"), str) else set()
    section = spec.get("service") if spec.get("type") == "service" else None
    for token in (section or {}).get("tokens") or ():
        if isinstance(token, dict) and isinstance(token.get("name"), str):
            out.add(token["name"])
    return out


def _error_keys(findings) -> frozenset:
    return frozenset((f.policy_id, f.message, f.path, f.hint) for f in findings if f.severity == "error")


def _policy_facts(spec: dict | None, subjects: bool) -> tuple:
    """What the policy checks read from a resource: the subjects it makes known (when they are checked) and
    whether it writes tables its spec does not declare."""
    if not spec:
        return ()
    return (tuple(sorted(subject_names(spec))) if subjects else (),
            spec.get("type") == "workflow" and has_opaque_job(spec))


def _writes(refs) -> list[str]:
    return sorted(r.target for r in refs if r.kind == "write")


def _vid(v: Validated) -> str:
    type_, ws, name = v.identity
    return make_id(type_, name, ws if workspace_scoped(type_) else None)


def _has(raw_section, i) -> bool:
    try:
        return isinstance(raw_section["resources"][i]["spec"], dict)
    except (KeyError, IndexError, TypeError):
        return False


def filter_key(text: str) -> tuple:
    """The validation memo's key for the verdict on one policy row filter."""
    from reconciler.core.policy_checks import FILTER_CHECK_VERSION

    return ("policy-filter", FILTER_CHECK_VERSION, text)


# Bump when what export_state writes changes meaning: older snapshots are then ignored.
STATE_VERSION = 1


class SnapshotMiss(LookupError):
    """A restored resolver needed a cached validation result that is gone: resolve everything again."""


class RestoredResource(Resource):
    """A resource restored from a snapshot: its spec is read from the validation memo on first use (a
    one-file plan of 10,000 resources looks at one spec)."""

    @classmethod
    def make(cls, rid, type_, name, workspace, file, doc_index, line, depends_on, prune, bundle, hash_, spec, loader):
        r = object.__new__(cls)
        r.__dict__.update(id=rid, type=type_, name=name, workspace=workspace, _spec=spec, _loader=loader, file=file,
                          doc_index=doc_index, line=line, depends_on=depends_on, prune=prune, bundle=bundle,
                          hash=hash_)
        return r

    @property
    def spec(self) -> dict:
        d = self.__dict__
        spec = d.get("_spec")
        if spec is None and d.get("_loader") is not None:
            spec = d["_spec"] = d["_loader"]()
        return spec

    @spec.setter
    def spec(self, value: dict) -> None:
        self.__dict__["_spec"] = value

    @property
    def spec_in_memory(self) -> bool:
        return self.__dict__.get("_spec") is not None


class _RestoredOrigins(dict):
    """id -> _Doc, built from the snapshot's rows on first use.

    A whole mapping to whoever walks it: iterating, `items()` and `len()` cover every id, the snapshot's rows
    (in their order) and those added since, as the fresh resolver's dict would. A walk that saw only the
    entries built so far made `export_state` of a restored resolver drop every resource nothing had looked
    at: a snapshot saved after an update of 64 files or more held those files' resources alone, and the
    next command that restored it failed (KeyError) planning the others."""

    def __init__(self, rows: dict[str, tuple]):
        super().__init__()
        self._rows = rows

    def __missing__(self, rid: str) -> _Doc:
        file, doc_index, line, prefix, bundle, member_key, memo_key = self._rows[rid]
        doc = self[rid] = _Doc(None, file, doc_index, line, tuple(prefix), bundle, member_key, memo_key)
        return doc

    def __contains__(self, rid) -> bool:
        return dict.__contains__(self, rid) or rid in self._rows

    def __delitem__(self, rid: str) -> None:
        self._rows.pop(rid, None)
        dict.pop(self, rid, None)

    def __iter__(self):
        yield from list(self._rows)
        yield from [rid for rid in dict.keys(self) if rid not in self._rows]

    def __len__(self) -> int:
        return len(self._rows) + sum(1 for rid in dict.keys(self) if rid not in self._rows)

    def keys(self):
        return list(self)

    def items(self):
        return [(rid, self[rid]) for rid in self]

    def values(self):
        return [self[rid] for rid in self]

    def get(self, rid, default=None):
        return self[rid] if rid in self else default


class _RestoredValidations(dict):
    """id -> Validated, read from the validation memo on first use."""

    def __init__(self, keys: dict[str, tuple], memo):
        super().__init__()
        self._keys = keys
        self._memo = memo

    def __missing__(self, rid: str) -> Validated:
        key = self._keys.get(rid)
        v = self._memo.get(key) if key is not None and self._memo is not None else None
        if not isinstance(v, Validated):
            raise SnapshotMiss(f"validation result of {rid} is no longer cached")
        self[rid] = v
        return v

    def __delitem__(self, rid: str) -> None:
        self._keys.pop(rid, None)
        dict.pop(self, rid, None)


def resolve(source: Source, locator: Locator, files: dict, documents: list[Document], prior_ids=frozenset(),
            prior_specs=None, parse_member=None, memo=None, blob_of=None,
            known_subjects: frozenset[str] | None = None) -> Resolution:
    return Resolver(source, locator, prior_ids, prior_specs, parse_member, memo, blob_of,
                    known_subjects).resolve(files, documents)

