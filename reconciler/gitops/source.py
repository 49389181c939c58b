"""Where artefacts are read from: a git commit (local, bare or a mirrored URL) or a plain folder.

Both kinds implement the `Source` protocol of `reconciler.core.documents`.
Paths are repo-relative POSIX paths; for a folder inside a git work tree they
are relative to that folder. Symbolic links are not followed (git stores them
as links), so neither kind lists them as files.
"""
from __future__ import annotations

import hashlib
import os
import posixpath
import re
import shutil
import stat
import tempfile
from pathlib import Path
from typing import Iterator

import pygit2
from pygit2.enums import FetchPrune, FileMode

from reconciler.core.diagnostics import UserError

COMPLETE_MARK = ".complete"
SKIPPED_DIRS = {".git", ".reconciler"}
_SCP_LIKE_URL = re.compile(r"^[\w.+-]+@[\w.-]+:")
# zlib inflates at most ~1032:1: a loose object whose file holds n bytes has less than 1100 * n of content
_LOOSE_EXPANSION = 1100
_URL_USERINFO = re.compile(r"//[^/@]+@")


class GitSource:
    """The tree of one commit, or of one folder (`prefix`) inside it."""

    def __init__(self, repo: pygit2.Repository, commit: pygit2.Commit | str, prefix: str = "",
                 root_label: str | None = None):
        self.repo = repo
        self._commit = repo[commit].peel(pygit2.Commit) if isinstance(commit, str) else commit
        self.commit = str(self._commit.id)
        self.prefix = prefix.strip("/")
        self.root_label = root_label or _repo_label(repo, self.prefix)
        self.tree = _subtree(self._commit, self.prefix)
        self._files: dict[str, tuple[pygit2.Oid, int]] | None = None  # path -> (blob id, mode)
        self._links: dict[str, pygit2.Oid] = {}
        self._objects: str | None = None  # the loose objects' folder, once `fits` asks
        self._loose_folders: frozenset[str] = frozenset()  # its fan-out folders then (a packed object is in none)

    def _walk(self) -> dict[str, tuple[pygit2.Oid, int]]:
        if self._files is None:
            files: dict[str, tuple[pygit2.Oid, int]] = {}
            stack = [(self.tree, "")] if self.tree is not None else []
            while stack:
                tree, base = stack.pop()
                for entry in tree:
                    mode = entry.filemode
                    if mode == FileMode.TREE:
                        stack.append((entry, f"{base}{entry.name}/"))
                    elif mode == FileMode.LINK:
                        self._links[base + entry.name] = entry.id
                    elif mode in (FileMode.BLOB, FileMode.BLOB_EXECUTABLE):
                        files[base + entry.name] = (entry.id, mode)
                    # submodules (commits) have no content here
            self._files = files
        return self._files

    def list_files(self) -> Iterator[tuple[str, str]]:
        for path, (oid, _) in self._walk().items():
            yield path, str(oid)

    def _lookup(self, path: str) -> pygit2.Oid | None:
        """The blob id at `path`: from the listing when it was walked already, else by a path lookup in
        the tree (a warm daemon reads a few changed files of a new commit, never the whole tree)."""
        if self._files is not None:
            hit = self._files.get(path)
            return hit[0] if hit else None
        if self.tree is None:
            return None
        try:
            entry = self.tree[path]
        except (KeyError, ValueError):
            return None
        return entry.id if entry.filemode in (FileMode.BLOB, FileMode.BLOB_EXECUTABLE) else None

    def _blob_id(self, path: str) -> pygit2.Oid:
        oid = self._lookup(path)
        if oid is None:
            raise FileNotFoundError(f"{path} is not a file at commit {self.commit[:12]}")
        return oid

    def read(self, path: str) -> bytes:
        # straight from the object database: half the cost of building a Blob object for its bytes
        return self.repo.odb.read(self._blob_id(path))[1]

    def exists(self, path: str) -> bool:
        return self._lookup(path) is not None

    def size(self, path: str) -> int:
        """The blob's size from the object header, without inflating its content."""
        return self.repo.odb.read_header(self._blob_id(path))[1]

    def fits(self, path: str, max_bytes: int) -> bool:
        """Whether the blob at `path` surely holds at most `max_bytes`, told with one stat: a loose object (a
        fresh local commit) by its compressed file's size. Reading a loose object's header inflates its start,
        which cost as much as reading the whole of a small file (~0.15 s per 10,000); a packed object's header
        is cheap, and for one this says False (so does it for anything it cannot tell): ask `size`."""
        oid = self._lookup(path)
        if oid is None:
            return False
        if self._objects is None:
            self._objects = os.path.join(self.repo.path, "objects")
            try:  # one listing: in a packed repository most objects' folders do not exist, and a failed stat
                # cost more than the answer it gives (a folder made later only means a header read instead)
                self._loose_folders = frozenset(n for n in os.listdir(self._objects) if len(n) == 2)
            except OSError:
                pass
        name = str(oid)
        if name[:2] not in self._loose_folders:
            return False
        try:
            stored = os.stat(os.path.join(self._objects, name[:2], name[2:])).st_size
        except OSError:
            return False
        return stored * _LOOSE_EXPANSION <= max_bytes

    def materialise(self, dest: Path) -> Path:
        """The tree written out as plain files at `dest`, once: a finished copy carries
        COMPLETE_MARK; it is built in a temporary folder and renamed into place."""
        dest = Path(dest)
        if (dest / COMPLETE_MARK).exists():
            return dest
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-", dir=dest.parent))
        donor, same = self._donor(dest.parent)
        made: set[str] = set()
        try:
            for path, (oid, mode) in self._walk().items():
                target = tmp / path
                parent = target.parent
                if str(parent) not in made:
                    parent.mkdir(parents=True, exist_ok=True)
                    made.add(str(parent))
                if donor is not None and path not in same:
                    try:  # unchanged since the donor's commit: share its file (checkouts are read-only)
                        os.link(donor / path, target)
                        continue
                    except OSError:
                        pass
                target.write_bytes(self.repo[oid].data)
                if mode == FileMode.BLOB_EXECUTABLE:
                    target.chmod(0o755)
            for path, oid in self._links.items():
                target = tmp / path
                target.parent.mkdir(parents=True, exist_ok=True)
                os.symlink(self.repo[oid].data.decode("utf-8", "surrogateescape"), target)
            (tmp / COMPLETE_MARK).write_text(self.commit + "\n")
            if dest.exists():  # left by a crash of code that did not use a temporary folder
                shutil.rmtree(dest)
            os.rename(tmp, dest)
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
            if (dest / COMPLETE_MARK).exists():  # another process finished first
                return dest
            raise
        return dest

    def _donor(self, checkouts: Path) -> tuple[Path | None, set[str]]:
        """The newest finished checkout of another commit of this repository beside `checkouts`, and
        the paths that differ from it: a new commit of a large repository then writes only what
        changed and hard-links the rest (10,000 files written afresh took seconds per push)."""
        try:
            entries = [e for e in os.scandir(checkouts) if e.is_dir() and not e.name.startswith(".")]
        except OSError:
            return None, set()
        for entry in sorted(entries, key=lambda e: e.stat().st_mtime, reverse=True)[:3]:
            try:
                commit = (Path(entry.path) / COMPLETE_MARK).read_text().strip()
                return Path(entry.path), self.changed_paths(commit)
            except (OSError, UserError):
                continue
        return None, set()

    def changed_paths(self, other_commit_hex: str) -> set[str]:
        """Paths (relative to the prefix) that differ between `other_commit_hex` and this commit."""
        try:
            other = self.repo[other_commit_hex].peel(pygit2.Commit)
        except (KeyError, ValueError, pygit2.GitError):
            raise UserError(f"commit {other_commit_hex} is not in {self.root_label}") from None
        out: set[str] = set()
        _tree_changes(self.repo, _subtree(other, self.prefix), self.tree, "", out)
        return out


def _tree_changes(repo: pygit2.Repository, old: pygit2.Tree | None, new: pygit2.Tree | None, base: str,
                  out: set[str]) -> None:
    """Add to `out` the paths (under `base`) of the files that differ between trees `old` and `new` (either may
    be None), as a tree-to-tree diff lists them, old and new side. Subtrees with the same id are not entered:
    a one-file commit of a 10,000-file repository looks at the few trees on its path (~0.5 ms; libgit2's
    diff, which also loads the repository's diff settings, took ~2 ms)."""
    before = {e.name: e for e in old} if old is not None else {}
    for e in new if new is not None else ():
        o = before.pop(e.name, None)
        if o is None or o.id != e.id or o.filemode != e.filemode:
            _entry_changes(repo, o, e, base + e.name, out)
    for name, o in before.items():
        _entry_changes(repo, o, None, base + name, out)


def _entry_changes(repo, old, new, path: str, out: set[str]) -> None:
    old_tree = old is not None and old.filemode == FileMode.TREE
    new_tree = new is not None and new.filemode == FileMode.TREE
    if old_tree or new_tree:
        _tree_changes(repo, repo[old.id] if old_tree else None, repo[new.id] if new_tree else None, path + "/", out)
    if (old is not None and not old_tree) or (new is not None and not new_tree):
        out.add(path)  # a file (or link or submodule) on either side


class WorkTreeSource:
    """A plain folder read as it is on disk; blob ids are git blob hashes of the content."""

    commit = None

    def __init__(self, root: Path | str):
        self.root = Path(root).resolve()
        self.root_label = str(root)
        self._hashes: dict[str, tuple[tuple, str]] = {}  # path -> (stat key, blob id), reused across listings

    def list_files(self) -> Iterator[tuple[str, str]]:
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames[:] = [d for d in dirnames if d not in SKIPPED_DIRS and not os.path.islink(os.path.join(dirpath, d))]
            base = os.path.relpath(dirpath, self.root).replace(os.sep, "/")
            for name in filenames:
                full = os.path.join(dirpath, name)
                try:
                    st = os.lstat(full)
                except OSError:  # vanished while walking
                    continue
                if not stat.S_ISREG(st.st_mode):
                    continue
                path = name if base == "." else f"{base}/{name}"
                key = (st.st_mtime_ns, st.st_size, st.st_ino)
                known = self._hashes.get(path)
                if known is None or known[0] != key:
                    try:
                        known = (key, str(pygit2.hashfile(full)))
                    except (OSError, pygit2.GitError):
                        continue
                    self._hashes[path] = known
                yield path, known[1]

    def _full(self, path: str) -> Path:
        clean = posixpath.normpath(path)
        if clean.startswith(("/", "../")) or clean in ("..", ".") or os.path.isabs(path):
            raise FileNotFoundError(f"{path} is outside {self.root_label}")
        return self.root / clean

    def read(self, path: str) -> bytes:
        return self._full(path).read_bytes()

    def exists(self, path: str) -> bool:
        try:
            full = self._full(path)
        except FileNotFoundError:
            return False
        return full.is_file() and not full.is_symlink()

    def size(self, path: str) -> int:
        return self._full(path).stat().st_size

    def materialise(self, dest: Path) -> Path:
        return self.root


def is_url(repo: str) -> bool:
    return "://" in repo or bool(_SCP_LIKE_URL.match(repo))


def redact_url(url: str) -> str:
    """The URL without a password or token written into it (https://user:token@host/...)."""
    return _URL_USERINFO.sub("//***@", url)


def open_source(repo: str, ref: str | None, state_dir: Path) -> GitSource | WorkTreeSource:
    """What `--repo` and `--ref` name: a URL (mirrored under state_dir), a git repository
    (work tree, folder inside one, or bare) at `ref`, or a plain folder."""
    if is_url(repo):
        mirror = _update_mirror(repo, Path(state_dir))
        label = redact_url(repo)
        return GitSource(mirror, _resolve_commit(mirror, ref, label), root_label=label)
    path = Path(repo).expanduser()
    if not path.exists():
        raise UserError(f"repository path '{repo}' does not exist",
                        hint="pass --repo a folder, a git repository or a URL")
    if not path.is_dir():
        raise UserError(f"repository path '{repo}' is not a folder", hint="pass --repo the folder holding the artefacts")
    git_dir = pygit2.discover_repository(str(path))
    if git_dir is None:
        if ref is not None:
            raise UserError("--ref needs a git repository", hint=f"'{repo}' is a plain folder; drop --ref or use a git repository")
        return WorkTreeSource(path)
    git_repo = pygit2.Repository(git_dir)
    prefix = _prefix_in_work_tree(git_repo, path)
    commit = _resolve_commit(git_repo, ref, repo)
    if prefix and _subtree(commit, prefix) is None:
        if ref is None:
            # A folder not committed yet (just scaffolded by `reconciler init`): read what is on disk.
            return WorkTreeSource(path)
        raise UserError(f"folder '{prefix}' does not exist at ref '{ref}' of {git_repo.workdir}",
                        hint="commit the folder, or pick a ref that has it")
    return GitSource(git_repo, commit, prefix, root_label=str(repo))


def _prefix_in_work_tree(repo: pygit2.Repository, path: Path) -> str:
    if repo.is_bare or repo.workdir is None:
        return ""
    rel = os.path.relpath(os.path.realpath(path), os.path.realpath(repo.workdir)).replace(os.sep, "/")
    if rel in (".", "..") or rel.startswith("../") or rel.split("/")[0] == ".git":
        return ""
    return rel


def _subtree(commit: pygit2.Commit, prefix: str) -> pygit2.Tree | None:
    if not prefix:
        return commit.tree
    try:
        entry = commit.tree[prefix]
    except KeyError:
        return None
    return entry if isinstance(entry, pygit2.Tree) else None


def _repo_label(repo: pygit2.Repository, prefix: str) -> str:
    base = repo.workdir or repo.path
    return os.path.join(base, prefix) if prefix else base


def _branch_names(repo: pygit2.Repository, limit: int = 8) -> list[str]:
    names = sorted(repo.branches.local) + sorted(repo.branches.remote)
    return names[:limit]


def _resolve_commit(repo: pygit2.Repository, ref: str | None, label: str) -> pygit2.Commit:
    if repo.head_is_unborn and not list(repo.branches.local):
        raise UserError(f"the git repository {label} has no commits yet",
                        hint="commit the artefacts first, or point --repo at a folder outside git")
    if ref is None:
        if repo.head_is_unborn:
            raise UserError(f"HEAD of {label} names a branch with no commits",
                            hint=f"pass --ref; branches: {', '.join(_branch_names(repo))}")
        return repo.head.peel(pygit2.Commit)
    # In a mirror, remote branches are local ones: accept `origin/x` there too.
    candidates = [ref] + ([ref.split("/", 1)[1]] if ref.startswith("origin/") else [])
    for candidate in candidates:
        try:
            target = repo.revparse_single(candidate)
        except (KeyError, ValueError, pygit2.GitError):
            continue
        try:
            return target.peel(pygit2.Commit)
        except (ValueError, pygit2.GitError):
            raise UserError(f"ref '{ref}' of {label} does not name a commit") from None
    raise UserError(f"unknown ref '{ref}' in {label}",
                    hint=f"use a branch, tag or commit id; branches: {', '.join(_branch_names(repo)) or 'none'}")


class _Credentials(pygit2.RemoteCallbacks):
    """Credentials from the daemon's environment: RECONCILER_GIT_TOKEN (or _TOKEN_FILE) for
    https, RECONCILER_GIT_SSH_KEY or the ssh agent for ssh."""

    def credentials(self, url, username_from_url, allowed_types):
        from pygit2.enums import CredentialType

        if allowed_types & CredentialType.USERPASS_PLAINTEXT:
            token = os.environ.get("RECONCILER_GIT_TOKEN")
            token_file = os.environ.get("RECONCILER_GIT_TOKEN_FILE")
            if not token and token_file:
                token = Path(token_file).read_text().strip()
            if token:
                user = os.environ.get("RECONCILER_GIT_USERNAME") or username_from_url or "git"
                return pygit2.UserPass(user, token)
        if allowed_types & CredentialType.SSH_KEY:
            user = username_from_url or "git"
            key = os.environ.get("RECONCILER_GIT_SSH_KEY")
            if key:
                return pygit2.Keypair(user, key + ".pub", key, os.environ.get("RECONCILER_GIT_SSH_PASSPHRASE", ""))
            return pygit2.KeypairFromAgent(user)
        raise pygit2.Passthrough


def mirror_path(url: str, state_dir: Path) -> Path:
    return Path(state_dir) / "mirrors" / hashlib.sha1(url.encode()).hexdigest()


def _fetch(repo: pygit2.Repository, url: str) -> None:
    remote = repo.remotes["origin"]
    callbacks = _Credentials()
    try:
        remote.fetch(prune=FetchPrune.PRUNE, callbacks=callbacks)
        heads = remote.list_heads(callbacks=callbacks, connect=False)
    except (pygit2.GitError, OSError) as exc:
        raise UserError(f"cannot fetch {redact_url(url)}: {redact_url(str(exc))}",
                        hint="check the URL, the network and the credentials "
                             "(RECONCILER_GIT_TOKEN, RECONCILER_GIT_SSH_KEY or an ssh agent)") from None
    # Follow the remote's default branch, so HEAD means what it means there.
    default = next((h.symref_target for h in heads if h.name == "HEAD" and h.symref_target), None)
    if default and default in repo.references:
        repo.set_head(default)


def _update_mirror(url: str, state_dir: Path) -> pygit2.Repository:
    """A bare mirror of every branch and tag of `url`, cloned once, fetched on every call."""
    dest = mirror_path(url, state_dir)
    if (dest / "HEAD").exists():
        repo = pygit2.Repository(str(dest))
        _fetch(repo, url)
        return repo
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-", dir=dest.parent))
    try:
        repo = pygit2.init_repository(str(tmp), bare=True)
        repo.remotes.create("origin", url, "+refs/heads/*:refs/heads/*")
        repo.remotes.add_fetch("origin", "+refs/tags/*:refs/tags/*")
        _fetch(repo, url)
        del repo
        os.rename(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if not (dest / "HEAD").exists():
            raise
    return pygit2.Repository(str(dest))
