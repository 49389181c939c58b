"""Status reports committed to the status branch (SPEC.md section 4), never to the tracked branch.

`status_files` renders what state holds into files (pure, deterministic: an
unchanged state gives identical bytes, so the writer makes no commit).
`StatusBranch` commits such files with pygit2 objects only (no index file, no
work tree, no HEAD), so it works on the daemon's bare mirror, and pushes the
branch, replaying its own writes on top of the remote tip when someone else
moved it.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

import pygit2
import yaml
from pygit2.enums import FileMode

from reconciler.core.diagnostics import UserError
from reconciler.core.record import APPLYING, BLOCKED, DELETING, FAILED, PENDING, READY, Record
from reconciler.gitops.source import _Credentials, redact_url

DEFAULT_BRANCH = "reconciler/status"
MAX_MESSAGE = 120  # STATUS.md cell
MAX_YAML_MESSAGE = 4000  # status/*.yaml: a full provider message, within reason
HEALTH = {READY: "Healthy", FAILED: "Degraded", BLOCKED: "Degraded",
          APPLYING: "Progressing", PENDING: "Progressing", DELETING: "Progressing"}
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def health(phase: str) -> str:
    return HEALTH.get(phase, "Unknown")


def _short(commit: str | None) -> str:
    return commit[:12] if commit else "-"


def _one_line(text: str | None) -> str:
    return " ".join(str(text or "").split())


def _cell(text: str | None, limit: int = MAX_MESSAGE) -> str:
    text = _one_line(text)
    if len(text) > limit:
        text = text[: limit - 1].rstrip() + "…"
    return text.replace("\\", "\\\\").replace("|", "\\|") or " "


def _segment(part: str) -> str:
    """One path component that git and every file system accept (no '.', '..', '.git', slashes)."""
    part = _UNSAFE.sub("-", part)
    if not part or part.startswith("."):
        part = "_" + part
    return part


_REMEMBER_MAX = 200_000  # entries per rendering cache; a full one starts over


def _remember(cache: dict, key, value) -> None:
    if len(cache) > _REMEMBER_MAX:
        cache.clear()
    cache[key] = value


_PATHS: dict[tuple, str] = {}


def status_path(record: Record) -> str:
    key = (record.type, record.workspace, record.name)
    path = _PATHS.get(key)
    if path is None:
        path = f"status/{_segment(record.type)}/{_segment(record.workspace or '_')}/{_segment(record.name)}.yaml"
        _remember(_PATHS, key, path)
    return path


def preview_path(branch_name: str) -> str:
    """`plans/<branch>.md`; a branch with '/' becomes nested folders."""
    parts = [_segment(p) for p in branch_name.split("/") if p]
    return "plans/" + "/".join(parts or ["_"]) + ".md"


def _last_run(record: Record, runs: dict[str, dict] | None) -> dict | None:
    run = (runs or {}).get(record.id)
    if not run:
        return None
    return {"run_id": run.get("run_id"), "status": run.get("status"), "ended_at": run.get("ended_at")}


_RENDERED: dict[str, tuple[tuple, bytes]] = {}  # resource id -> (what it was rendered from, the bytes)


def _status_yaml(record: Record, runs: dict[str, dict] | None, drift: dict[str, str] | None) -> bytes:
    """A resource's status file; re-rendered only when what it shows changed (a daemon renders every
    resource on every reconcile: 2 s of YAML at 10,000 when done afresh)."""
    run = _last_run(record, runs)
    key = (record.type, record.name, record.workspace, record.phase, record.message, record.commit, record.hash,
           tuple(run.values()) if run else None, (drift or {}).get(record.id))
    hit = _RENDERED.get(record.id)
    if hit is not None and hit[0] == key:
        return hit[1]
    data = _render_status_yaml(record, run, drift)
    _remember(_RENDERED, record.id, (key, data))
    return data


def _render_status_yaml(record: Record, run: dict | None, drift: dict[str, str] | None) -> bytes:
    doc = {
        "id": record.id, "type": record.type, "name": record.name, "workspace": record.workspace,
        "phase": record.phase, "health": health(record.phase),
        "message": (record.message or "")[:MAX_YAML_MESSAGE],
        "applied_commit": record.commit, "spec_hash": record.hash,
    }
    if run:
        doc["last_run"] = run
    if drift and record.id in drift:
        doc["drift"] = drift[record.id]
    # libyaml's dumper: 10,000 resources are rendered on every reconcile
    return yaml.dump(doc, Dumper=yaml.CSafeDumper, sort_keys=True, allow_unicode=True,
                     default_flow_style=False).encode()


def _error_line(d: dict) -> str:
    place = d.get("file") or ""
    if place and d.get("line"):
        place += f":{d['line']}"
        if d.get("col"):
            place += f":{d['col']}"
    text = _one_line(d.get("message")).replace("```", "'''")
    return f"{place}: {text}" if place else text


def _products_markdown(products: list[dict]) -> list[str]:
    """One row per SLO (product and health on each, so a row reads on its own)."""
    lines = [f"## Data products ({len(products)})", "",
             "| product | health | slo | value | target | ok | detail |", "|---|---|---|---|---|---|---|"]
    for p in sorted(products, key=lambda p: p["name"]):
        head = f"| `{p['name']}` | {p['state']} |"
        if not p.get("slos"):
            lines.append(f"{head} - | - | - | - | {_cell(p.get('detail'))} |")
        for s in p.get("slos") or ():
            lines.append(f"{head} `{s['name']}` ({s['kind']}) | {_cell(s.get('value_text'), 30)} | "
                         f"{_cell(s.get('target_text'), 30)} | {'yes' if s['ok'] else '**breached**'} | "
                         f"{_cell(s.get('detail'))} |")
    return lines + [""]


def status_markdown(records: list[Record], runs: dict[str, dict] | None, source_commit: str | None,
                    errors: list[dict] | None = None, held: str | None = None,
                    drift: dict[str, str] | None = None, products: list[dict] | None = None) -> str:
    """`products`: the data products' health as the SLO evaluation found it (ProductStatus.to_json())."""
    rows = sorted(records, key=lambda r: r.id)
    counts: dict[str, int] = {}
    for r in rows:
        counts[health(r.phase)] = counts.get(health(r.phase), 0) + 1
    lines = ["# Reconciler status", "", f"Source commit: `{source_commit or 'worktree'}`", ""]
    summary = ", ".join(f"{counts[h]} {h}" for h in ("Healthy", "Progressing", "Degraded", "Unknown") if h in counts)
    lines += [f"**{len(rows)} resource(s)**" + (f": {summary}" if summary else ""), ""]
    if held:
        lines += [f"> :warning: **Held:** {_one_line(held)}", ""]
    if errors:
        lines += [f"## Validation errors ({len(errors)})", "", "```"]
        lines += [_error_line(d) for d in errors]
        lines += ["```", ""]
    if drift:
        lines += [f"## Drift ({len(drift)})", "", "| resource | drift |", "|---|---|"]
        lines += [f"| `{rid}` | {_cell(drift[rid])} |" for rid in sorted(drift)]
        lines.append("")
    if products:
        lines += _products_markdown(products)
    if not rows:
        lines.append("No resources.")
        return "\n".join(lines) + "\n"
    lines += ["## Resources", "", "| resource | phase | health | message | applied commit | last run |",
              "|---|---|---|---|---|---|"]
    lines += [_status_row(r, runs) for r in rows]
    return "\n".join(lines) + "\n"


_ROWS: dict[str, tuple[tuple, str]] = {}  # resource id -> (what its STATUS.md row shows, the row)


def _status_row(r: Record, runs: dict[str, dict] | None) -> str:
    """One resource's row of STATUS.md, made again only when what it shows changed."""
    run = (runs or {}).get(r.id)
    key = (r.phase, r.message, r.commit, run.get("run_id") if run else None, run.get("status") if run else None)
    hit = _ROWS.get(r.id)
    if hit is not None and hit[0] == key:
        return hit[1]
    last = f"{_cell(run.get('run_id'), 60)} {_cell(run.get('status'), 20)}" if run else "-"
    applied = f"`{_short(r.commit)}`" if r.commit else "-"
    line = f"| `{r.id}` | {r.phase} | {health(r.phase)} | {_cell(r.message)} | {applied} | {last} |"
    _remember(_ROWS, r.id, (key, line))
    return line


def status_files(records: list[Record], runs: dict[str, dict] | None, source_commit: str | None,
                 errors: list[dict] | None = None, held: str | None = None,
                 drift: dict[str, str] | None = None, products: list[dict] | None = None) -> dict[str, bytes]:
    """`STATUS.md` and one `status/<type>/<workspace or _>/<name>.yaml` per record (never plans/)."""
    files = {"STATUS.md": status_markdown(records, runs, source_commit, errors, held, drift, products).encode()}
    for r in records:
        files[status_path(r)] = _status_yaml(r, runs, drift)
    return files


@dataclass
class _Write:
    """One write, kept until pushed so it can be replayed on a remote tip that moved."""
    files: dict[str, bytes]
    message: str
    replace_prefixes: tuple[str, ...] = ()
    keep: tuple[str, ...] = ()
    delete: tuple[str, ...] = field(default_factory=tuple)


class _PushCallbacks(_Credentials):
    """Environment credentials (or the caller's callbacks) plus the remote's per-ref verdict."""

    def __init__(self, delegate: pygit2.RemoteCallbacks | None):
        super().__init__()
        self.delegate = delegate
        self.rejected: str | None = None

    def credentials(self, url, username_from_url, allowed_types):
        if self.delegate is not None:
            return self.delegate.credentials(url, username_from_url, allowed_types)
        return super().credentials(url, username_from_url, allowed_types)

    def push_update_reference(self, refname, message):
        if message:
            self.rejected = message


# how libgit2 and servers word "the remote moved" (local transport: "...contains commits that are not present locally")
_REJECTED = ("non-fast", "fastforward", "fast-forward", "fetch first", "rejected", "stale info", "not present locally")


class StatusBranch:
    def __init__(self, repo: pygit2.Repository, branch: str = DEFAULT_BRANCH,
                 author: tuple[str, str] = ("Reconciler", "reconciler@localhost")):
        self.ref = f"refs/heads/{branch}"
        if not pygit2.reference_is_valid_name(self.ref):
            raise UserError(f"status branch '{branch}' is not a valid git branch name",
                            hint="set status_branch to a name like reconciler/status")
        self.repo = repo
        self.branch = branch
        self.author = author
        self._pending: list[_Write] = []  # written since the last successful push, oldest first
        # the last tree written, flattened, and each file's last bytes with their blob id: a daemon writes
        # 10,000 status files per reconcile, nearly all unchanged (walking the tree and hashing every file
        # again cost ~0.3 s a reconcile)
        self._flat: tuple[pygit2.Oid, dict] | None = None
        self._blobs: dict[str, tuple[bytes, pygit2.Oid]] = {}

    # ---- reading -------------------------------------------------------------------------
    def tip(self) -> pygit2.Commit | None:
        ref = self.repo.references.get(self.ref)
        return ref.peel(pygit2.Commit) if ref is not None else None

    def read(self, path: str) -> bytes | None:
        tip = self.tip()
        if tip is None:
            return None
        try:
            entry = tip.tree[path]
        except KeyError:
            return None
        return entry.data if isinstance(entry, pygit2.Blob) else None

    def files(self) -> dict[str, bytes]:
        tip = self.tip()
        return {p: self.repo[oid].data for p, (oid, _) in _flatten(tip.tree).items()} if tip else {}

    # ---- writing -------------------------------------------------------------------------
    def write(self, files: dict[str, bytes], message: str, *, replace_prefixes: tuple[str, ...] = ("status/",),
              keep: tuple[str, ...] = ("plans/",)) -> str | None:
        """Commit `files` on the branch: paths under `replace_prefixes` (but not under `keep`) that
        `files` lacks are removed; everything else stays. None (and no commit) when nothing changes."""
        op = _Write(dict(files), message, tuple(replace_prefixes), tuple(keep))
        tip = self.tip()
        new = self._commit_on(tip, op)
        if new is None:
            return None
        self._move(new, tip)
        self._pending.append(op)
        return str(new)

    def write_preview(self, branch_name: str, markdown: str, source_commit: str) -> str | None:
        """`plans/<branch_name>.md`, everything else kept."""
        return self.write({preview_path(branch_name): markdown.encode()},
                          f"Plan preview of {branch_name} at {source_commit}", replace_prefixes=(), keep=())

    def _flatten(self, tree: pygit2.Tree | None) -> dict:
        if tree is None:
            return {}
        if self._flat is not None and self._flat[0] == tree.id:
            return dict(self._flat[1])
        return _flatten(tree)

    def _commit_on(self, base: pygit2.Commit | None, op: _Write) -> pygit2.Oid | None:
        flat = self._flatten(base.tree if base is not None else None)
        before = dict(flat)
        for path in list(flat):
            if path in op.files or path in op.delete:
                continue
            if path.startswith(op.replace_prefixes) and not path.startswith(op.keep):
                del flat[path]
        for path in op.delete:
            flat.pop(path, None)
        dirs = {p.rsplit("/", i)[0] for p in flat for i in range(1, p.count("/") + 1)}
        for path, data in op.files.items():
            _place(flat, dirs, path, self.repo, data, self._blobs)
        changes = {p: flat.get(p) for p in set(before) | set(flat) if before.get(p) != flat.get(p)}
        if base is not None and not changes:
            return None
        # only the folders on the way to a changed file are written again; the rest keep their tree ids
        # (a whole index of 10,000 status files cost ~0.3 s per reconcile)
        tree = _build_tree(self.repo, base.tree if base is not None else None, changes)
        if base is not None and tree == base.tree.id:
            return None
        if base is None and not flat:
            return None
        self._flat = (tree, flat)
        sig = pygit2.Signature(*self.author)
        return self.repo.create_commit(None, sig, sig, op.message, tree, [base.id] if base is not None else [])

    def _move(self, new: pygit2.Oid, old: pygit2.Commit | None) -> None:
        self.repo.references.create(self.ref, new, force=True)

    # ---- pushing -------------------------------------------------------------------------
    def push(self, remote_url: str, *, attempts: int = 3, credentials: pygit2.RemoteCallbacks | None = None) -> bool:
        """Push the branch to `remote_url`. When the remote's branch moved, the writes made since the
        last push are replayed on its tip and the push retried. False when nothing was written or the
        remote kept moving for `attempts` tries; UserError when the remote cannot be reached."""
        if self.tip() is None:
            return False
        label = redact_url(remote_url)
        remote = self.repo.remotes.create_anonymous(remote_url)
        for _ in range(max(1, attempts)):
            callbacks = _PushCallbacks(credentials)
            remote_tip = self._remote_tip(remote, callbacks, label)
            local = self.tip()
            if remote_tip is not None and remote_tip != local.id and not self.repo.descendant_of(local.id, remote_tip):
                self._rebase_on(remote_tip, local)
                local = self.tip()
            if remote_tip == local.id:  # already there (our writes were no-ops on the remote's tree)
                self._pending.clear()
                return True
            if self._push_once(remote, callbacks, label):
                self._pending.clear()
                return True
        return False

    def _remote_tip(self, remote: pygit2.Remote, callbacks: _PushCallbacks, label: str) -> pygit2.Oid | None:
        try:
            heads = remote.list_heads(callbacks=callbacks)
            oid = next((h.oid for h in heads if h.name == self.ref), None)
            if oid is not None and oid not in self.repo:
                # a private ref, outside refs/heads: a mirror's pruning fetch leaves it alone
                remote.fetch([f"+{self.ref}:refs/reconciler/remote/{self.branch}"], callbacks=_PushCallbacks(
                    callbacks.delegate))
        except (pygit2.GitError, OSError) as exc:
            raise _unreachable(label, exc) from None
        return oid

    def _rebase_on(self, remote_tip: pygit2.Oid, local: pygit2.Commit) -> None:
        ops = self._pending or [self._changes_since_base(remote_tip, local)]
        base = self.repo[remote_tip].peel(pygit2.Commit)
        for op in ops:
            new = self._commit_on(base, op)
            if new is not None:
                base = self.repo[new]
        self._move(base.id, local)

    def _changes_since_base(self, remote_tip: pygit2.Oid, local: pygit2.Commit) -> _Write:
        """Without remembered writes (a restarted daemon), what the local branch changed since it
        forked from the remote's, as one write."""
        merge_base = self.repo.merge_base(local.id, remote_tip)
        before = _flatten(self.repo[merge_base].peel(pygit2.Commit).tree) if merge_base else {}
        after = _flatten(local.tree)
        files = {p: self.repo[oid].data for p, (oid, mode) in after.items() if before.get(p) != (oid, mode)}
        return _Write(files, local.message, delete=tuple(p for p in before if p not in after))

    def _push_once(self, remote: pygit2.Remote, callbacks: _PushCallbacks, label: str) -> bool:
        try:
            remote.push([f"{self.ref}:{self.ref}"], callbacks=callbacks)
        except (pygit2.GitError, OSError) as exc:
            if any(word in str(exc).lower() for word in _REJECTED):
                return False
            raise _unreachable(label, exc) from None
        return callbacks.rejected is None


def _unreachable(label: str, exc: Exception) -> UserError:
    return UserError(f"cannot push the status branch to {label}: {redact_url(str(exc))}",
                     hint="check the URL, the network and the credentials "
                          "(RECONCILER_GIT_TOKEN, RECONCILER_GIT_SSH_KEY or an ssh agent)")


def _build_tree(repo: pygit2.Repository, old: pygit2.Tree | None,
                changes: dict[str, tuple[pygit2.Oid, int] | None]) -> pygit2.Oid:
    """`old` with `changes` (path -> (blob id, mode), or None to remove) applied; an emptied folder goes."""
    builder = repo.TreeBuilder(old) if old is not None else repo.TreeBuilder()
    here, below = {}, {}
    for path, value in changes.items():
        head, sep, rest = path.partition("/")
        if sep:
            below.setdefault(head, {})[rest] = value
        else:
            here[head] = value
    for name, value in here.items():  # removals first: a file may give way to a folder of that name
        if value is None and builder.get(name) is not None:
            builder.remove(name)
    for name, sub in below.items():
        entry = builder.get(name)
        subtree = entry if isinstance(entry, pygit2.Tree) else None
        oid = _build_tree(repo, subtree, sub)
        if len(repo[oid]) == 0:
            if entry is not None:
                builder.remove(name)
        else:
            builder.insert(name, oid, FileMode.TREE)
    for name, value in here.items():  # then files, which may replace a folder just emptied
        if value is not None:
            builder.insert(name, value[0], value[1])
    return builder.write()


def _flatten(tree: pygit2.Tree) -> dict[str, tuple[pygit2.Oid, int]]:
    """Every non-tree entry of `tree` by its path (links and submodules kept as they are)."""
    out: dict[str, tuple[pygit2.Oid, int]] = {}
    stack = [(tree, "")]
    while stack:
        t, base = stack.pop()
        for entry in t:
            if entry.filemode == FileMode.TREE:
                stack.append((entry, f"{base}{entry.name}/"))
            else:
                out[base + entry.name] = (entry.id, entry.filemode)
    return out


def _place(flat: dict, dirs: set[str], path: str, repo: pygit2.Repository, data: bytes,
           known: dict[str, tuple[bytes, pygit2.Oid]] | None = None) -> None:
    """Set `path` to `data`; a file where a folder must go (or the reverse) gives way to the new file.
    `known`: path -> (bytes, blob id) last written there; the same bytes again need no hashing."""
    path = path.strip("/")
    parts = path.split("/")
    for i in range(1, len(parts)):
        flat.pop("/".join(parts[:i]), None)
        dirs.add("/".join(parts[:i]))
    if path in dirs:
        for p in [p for p in flat if p.startswith(path + "/")]:
            del flat[p]
        dirs.discard(path)
    seen = known.get(path) if known is not None else None
    if seen is not None and seen[0] == data:
        oid = seen[1]
    else:
        oid = pygit2.hash(data)
        if known is not None:
            known[path] = (data, oid)
    if flat.get(path) == (oid, FileMode.BLOB):  # unchanged: not even an object lookup
        return
    if oid not in repo:  # a file seen before costs a hash, not an object write
        oid = repo.create_blob(data)
    flat[path] = (oid, FileMode.BLOB)
