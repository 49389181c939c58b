#!/usr/bin/env python3
"""A quick self-check of a generated (or hand-written) repository, independent of the Reconciler CLI.

    python bench/check_repo.py DIR

Parses every *.yaml / *.yml under DIR (minus `.reconciler/` and what `.reconcilerignore`
lists) with yaml.CSafeLoader and checks what the generator promises: known versions and
types, names matching the name rule, unique ids, known workspaces, dataset addresses that
resolve (depot://D/X to a depot D offering X, lake://W/T to a table some workflow writes),
job `depends_on` naming jobs of the same workflow, bundle member files that exist. It is
not `reconciler validate`; it keeps the generator honest while the CLI is being written.
Exit status 0 when clean, 1 with one line per problem otherwise.
"""
from __future__ import annotations

import posixpath
import re
import sys
import time
from pathlib import Path

import pathspec
import yaml

NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,62}$")
WORKSPACE_SCOPED = {"workflow", "service", "secret"}
TYPES = {"workspace", "depot", "workflow", "policy", "service", "secret", "stack", "operator", "bundle",
         "dataproduct"}
ADDRESS_RE = re.compile(r"^(depot|lake)://([^/]+)/(.+)$")


def yaml_files(root: Path) -> list[str]:
    ignore = root / ".reconcilerignore"
    spec = pathspec.PathSpec.from_lines("gitwildmatch", ignore.read_text().splitlines() if ignore.exists() else [])
    found = []
    for path in root.rglob("*"):
        rel = path.relative_to(root).as_posix()
        if path.suffix in (".yaml", ".yml") and path.is_file() and not rel.startswith((".reconciler/", ".git/")) \
                and not spec.match_file(rel):
            found.append(rel)
    return sorted(found)


def addresses(value, path=()):
    """(key path, address) of every dataset address anywhere in a document."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield from addresses(v, path + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from addresses(v, path + (i,))
    elif isinstance(value, str) and ADDRESS_RE.match(value):
        yield path, value


def check(root: Path) -> tuple[list[str], int]:
    problems: list[str] = []
    docs: list[tuple[str, dict]] = []
    for rel in yaml_files(root):
        try:
            for doc in yaml.load_all((root / rel).read_bytes(), Loader=yaml.CSafeLoader):
                if isinstance(doc, dict) and ("version" in doc or "type" in doc):
                    docs.append((rel, doc))
        except yaml.YAMLError as exc:
            problems.append(f"{rel}: does not parse: {exc}")

    ids: dict[str, str] = {}
    workspaces, depots, written = set(), {}, set()
    for rel, doc in docs:
        type_, name = doc.get("type"), doc.get("name")
        if doc.get("version") != "v1" or type_ not in TYPES or not NAME_RE.match(str(name)):
            problems.append(f"{rel}: bad header: version={doc.get('version')!r} type={type_!r} name={name!r}")
            continue
        ws = doc.get("workspace", "public") if type_ in WORKSPACE_SCOPED else None
        rid = f"{type_}:{ws}/{name}" if ws else f"{type_}:{name}"
        if rid in ids:
            problems.append(f"{rel}: duplicate id {rid}, also in {ids[rid]}")
        ids[rid] = rel
        section = doc.get(type_) or {}
        if type_ == "workspace":
            workspaces.add(name)
        if type_ in ("bundle", "dataproduct"):
            workspaces.update(w["name"] for w in section.get("workspaces", []))
            for member in section.get("resources", []):
                target = posixpath.normpath(posixpath.join(posixpath.dirname(rel), member.get("file", "")))
                if "file" in member and not (root / target).is_file():
                    problems.append(f"{rel}: member file {target} does not exist")
        if type_ == "depot":
            depots[name] = set(section.get("datasets") or [])
        if type_ == "workflow":
            for job in section.get("dag", []):
                for out in (job.get("spec") or {}).get("outputs", []):
                    written.add(out["dataset"])

    for rel, doc in docs:
        type_ = doc.get("type")
        if type_ in WORKSPACE_SCOPED and doc.get("workspace", "public") not in workspaces | {"public"}:
            problems.append(f"{rel}: unknown workspace {doc.get('workspace')!r}")
        for path, address in addresses(doc.get(type_) or {}):
            kind, owner, rest = ADDRESS_RE.match(address).groups()
            if kind == "depot" and (owner not in depots or (depots[owner] and rest not in depots[owner])):
                problems.append(f"{rel}: {'.'.join(map(str, path))}: {address} names no depot dataset")
            if kind == "lake" and "*" not in rest and address not in written:
                problems.append(f"{rel}: {'.'.join(map(str, path))}: no workflow writes {address}")
        if type_ == "workflow":
            jobs = [j.get("name") for j in (doc.get("workflow") or {}).get("dag", [])]
            for job in (doc.get("workflow") or {}).get("dag", []):
                for dep in job.get("depends_on", []):
                    if dep not in jobs:
                        problems.append(f"{rel}: job {job['name']!r} depends on unknown job {dep!r}")
    return problems, len(docs)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__.split("\n\n")[1].strip(), file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    problems, count = check(Path(argv[0]))
    for p in problems:
        print(p)
    print(f"{count} artefacts checked in {time.perf_counter() - t0:.2f}s: "
          f"{len(problems) or 'no'} problem{'' if len(problems) == 1 else 's'}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
