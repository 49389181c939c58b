"""Shared fixtures: repositories built from a dict of files, the real CLI as a subprocess."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pygit2
import pytest

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_REPO = ROOT / "sample-repo"
SHARED = ROOT.parent / "shared"


@dataclass
class Result:
    code: int
    out: str
    err: str

    @property
    def json(self):
        return json.loads(self.out)

    def __str__(self):  # shown by pytest when an assertion about it fails
        return f"exit {self.code}\n--- stdout\n{self.out}\n--- stderr\n{self.err}"


def run_cli(*args, cwd=None, env=None, input=None, timeout=120, python_flags=()) -> Result:
    """Run the real `reconciler` CLI in a fresh process (`python_flags`: for the interpreter, e.g. -X importtime)."""
    full_env = {k: v for k, v in os.environ.items() if k != "RECONCILER_STATE_DIR"}
    full_env.update(env or {})
    p = subprocess.run([sys.executable, *python_flags, "-m", "reconciler", *map(str, args)], cwd=cwd, env=full_env,
                       input=input, capture_output=True, text=True, timeout=timeout)
    return Result(p.returncode, p.stdout, p.stderr)


def write_files(root: Path, files: dict[str, str | bytes]) -> None:
    for rel, content in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        if content is None:
            if p.exists():
                p.unlink()
            continue
        if isinstance(content, bytes):
            p.write_bytes(content)
        else:
            p.write_text(textwrap.dedent(content).lstrip("\n"))


class GitRepo:
    """A real git work tree; `commit(files)` writes, stages everything and commits with pygit2."""

    def __init__(self, path: Path):
        self.path = path
        path.mkdir(parents=True, exist_ok=True)
        self.repo = pygit2.init_repository(str(path), initial_head="main")
        self.sig = pygit2.Signature("Test", "test@example.com")

    def commit(self, files: dict[str, str | bytes | None] | None = None, message: str = "change") -> str:
        write_files(self.path, files or {})
        index = self.repo.index
        index.add_all()
        for e in list(index):
            if not (self.path / e.path).exists():
                index.remove(e.path)
        index.write()
        tree = index.write_tree()
        parents = [] if self.repo.head_is_unborn else [self.repo.head.target]
        oid = self.repo.create_commit("HEAD", self.sig, self.sig, message, tree, parents)
        return str(oid)


@pytest.fixture
def git_repo(tmp_path) -> GitRepo:
    return GitRepo(tmp_path / "repo")


@pytest.fixture
def state_dir(tmp_path) -> Path:
    return tmp_path / "state"


@pytest.fixture
def sample_repo(tmp_path) -> GitRepo:
    """A copy of sample-repo/ committed into a fresh git repository."""
    dest = tmp_path / "sample"
    shutil.copytree(SAMPLE_REPO, dest, ignore=shutil.ignore_patterns(".reconciler", "__pycache__"))
    repo = GitRepo(dest)
    repo.commit(message="sample")
    return repo


SAMPLE_ENV = {"PAYMENTS_API_TOKEN": "tok-sample-123"}


@pytest.fixture
def pg_conn():
    """An autocommit connection to the PostgreSQL on 127.0.0.1:5432 (database test): skipped where none runs,
    a failure where RECONCILER_REQUIRE_POSTGRES says one must (CI)."""
    psycopg = pytest.importorskip("psycopg")
    try:
        conn = psycopg.connect("host=127.0.0.1 port=5432 user=postgres dbname=test connect_timeout=3", autocommit=True)
    except psycopg.OperationalError as e:
        if os.environ.get("RECONCILER_REQUIRE_POSTGRES"):
            pytest.fail(f"PostgreSQL at 127.0.0.1:5432 is required here but unreachable: {e}")
        pytest.skip(f"no PostgreSQL reachable at 127.0.0.1:5432: {e}")
    yield conn
    conn.close()


def unreadable_in_children(source_class):
    """A subclass of the source class `source_class` whose reads fail in every process but the one that made
    it: forked workers cannot read their share (the process that forked them must cover for them)."""
    parent = os.getpid()

    class Unreadable(source_class):
        def read(self, path):
            if os.getpid() != parent:
                raise RuntimeError("no reading here")
            return super().read(path)

    return Unreadable


def free_port() -> int:
    """A port nothing listens on right now (bound, then released), for servers the tests start."""
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port
