#!/usr/bin/env python3
"""Generates a large, valid Reconciler repository for the benchmarks: one git commit (pygit2).

    python bench/gen_repo.py OUT_DIR [--artefacts 10000] [--folders 200]
    python bench/gen_repo.py OUT_DIR --change-one      # one more commit editing one workflow

OUT_DIR gets a git repository on branch `main` with the files checked out as well, its objects
in one pack file as git leaves them: `git commit` runs `git gc --auto`, which packs a repository once
it holds more than 6,700 loose objects, and a clone is packed from the start (`--loose` keeps the
objects loose, as the generator left them up to session 11: reading 10,000 loose files cost ~0.3 s
of CPU here against ~0.1 s packed).
Every folder `teams/team-NNN/` is one team: a workspace, then a repeating mix of file
depots, workflows (2-3 jobs: sql clean, quality checks, sometimes a sql rollup that also
joins an earlier workflow's table), access/mask/filter policies and services exposing
the workflows' tables. Every depot reads one tiny shared CSV folder, `data/shared/`.
Each artefact is one file of about 30 lines, valid against SPEC.md. Output is
deterministic for given arguments.

`BENCH.json` at the root records the arguments and the workflow file that
`--change-one` edits (its `WHERE amount > N` goes up by one on each call).
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pygit2

BRANCH = "main"
MANIFEST = "BENCH.json"
SHARED_DATA = "data/shared"
DATASETS = ("events", "orders", "payments")
# the kinds of artefact after each folder's workspace, repeated in this order
CYCLE = ("depot", "workflow", "workflow", "depot", "workflow", "policy", "workflow", "service")
SIGNATURE = ("Reconciler bench", "bench@example.com")
EPOCH = 1_735_689_600  # 2025-01-01T00:00:00Z: fixed commit times keep commit ids reproducible


def shared_csv(dataset: str) -> str:
    rows = ["id,ts,category,amount,region"]
    for i in range(1, 9):
        rows.append(f"{i},2025-01-0{1 + i % 5}T{8 + i:02d}:00:00,{('books', 'games', 'music')[i % 3]},"
                    f"{i * 7 + len(dataset)}.50,{('EU', 'US', 'UK')[i % 3]}")
    return "\n".join(rows) + "\n"


@dataclass
class Team:
    """What one folder has declared so far, so later artefacts can refer to it."""

    index: int
    depots: list[tuple[str, str]] = field(default_factory=list)  # (depot name, dataset)
    tables: list[str] = field(default_factory=list)  # lake tables written by the team's workflows
    policies: int = 0
    services: int = 0

    @property
    def workspace(self) -> str:
        return f"team-{self.index:03d}"

    @property
    def folder(self) -> str:
        return f"teams/{self.workspace}"


def header(type_: str, name: str, team: Team, description: str, workspace: bool, tier: str) -> str:
    ws = f"workspace: {team.workspace}\n" if workspace else ""
    return (f"version: v1\ntype: {type_}\nname: {name}\n{ws}"
            f"description: {description}\n"
            f"owner: {team.workspace}\n"
            f"tags:\n  - domain.{team.workspace}\n  - tier.{tier}\n"
            f"labels:\n  cost-center: \"{1000 + team.index}\"\n  generated-by: bench\n")


def workspace_doc(team: Team) -> str:
    return (header("workspace", team.workspace, team, f"Tables and workflows of {team.workspace}",
                   False, "gold")
            + "annotations:\n  reconciler/prune: \"false\"\n")


def depot_doc(team: Team, k: int) -> tuple[str, str]:
    name = f"{team.workspace}-src-{k:02d}"
    dataset = DATASETS[(team.index + k) % len(DATASETS)]
    team.depots.append((name, dataset))
    text = (header("depot", name, team, f"Shared {dataset} extract, copy {k} for {team.workspace}",
                   False, "silver")
            + "depot:\n"
            + "  kind: file\n"
            + f"  path: {SHARED_DATA}\n"
            + "  format: csv\n"
            + f"  datasets: [{dataset}]\n"
            + "  column_tags:\n"
            + f"    {dataset}.id: [key]\n"
            + f"    {dataset}.region: [location]\n")
    return name, text


def workflow_doc(team: Team, k: int, threshold: int | None = None) -> tuple[str, str]:
    name = f"flow-{k:02d}"
    table = f"flow_{k:02d}_clean"
    depot, dataset = team.depots[-1]
    upstream = team.tables[-1] if team.tables else None
    threshold = k % 10 if threshold is None else threshold
    lines = [
        header("workflow", name, team, f"Cleans {dataset} from {depot}", True, "bronze").rstrip("\n"),
        "workflow:",
        "  dag:",
        "    - name: clean",
        "      stack: sql",
        "      retry: {count: 1, delay: 5s}",
        "      spec:",
        f"        inputs: [{{name: src, dataset: \"depot://{depot}/{dataset}\"}}]",
        f"        steps: [{{name: valid, sql: \"SELECT * FROM src WHERE amount > {threshold}\"}}]",
        f"        outputs: [{{from: valid, dataset: \"lake://{team.workspace}/{table}\", mode: overwrite}}]",
        "    - name: checks",
        "      stack: quality",
        "      depends_on: [clean]",
        "      spec:",
        f"        dataset: \"lake://{team.workspace}/{table}\"",
        "        checks:",
        "          - row_count: {min: 1}",
        "          - not_null: [id, amount]",
        "          - unique: [id]",
    ]
    if upstream and k % 2 == 0:
        # a rollup joining an earlier workflow's table: workflow-to-workflow dependencies
        lines += [
            "    - name: rollup",
            "      stack: sql",
            "      depends_on: [clean]",
            "      spec:",
            "        inputs:",
            f"          - {{name: mine, dataset: \"lake://{team.workspace}/{table}\"}}",
            f"          - {{name: other, dataset: \"lake://{team.workspace}/{upstream}\"}}",
            "        steps:",
            "          - {name: daily, sql: \"SELECT m.category, count(*) AS n, sum(m.amount) AS total,"
            " count(o.id) AS matched FROM mine m LEFT JOIN other o ON o.id = m.id GROUP BY ALL\"}",
            f"        outputs: [{{from: daily, dataset: \"lake://{team.workspace}/flow_{k:02d}_daily\", "
            "mode: overwrite}]",
        ]
    team.tables.append(table)
    return name, "\n".join(lines) + "\n"


def policy_doc(team: Team) -> tuple[str, str]:
    team.policies += 1
    k = team.policies
    name = f"{team.workspace}-policy-{k:02d}"
    body = ["policy:",
            "  subjects:",
            f"    groups: [{team.workspace}-analysts]",
            f"    users: [user-{team.index:03d}-{k}]",
            "  datasets:",
            f"    - \"lake://{team.workspace}/*\""]
    if k % 3 == 1:
        body += ["  access: allow", "  filter: \"region = 'EU'\""]
    elif k % 3 == 2:
        body += ["  mask:", "    - {columns: [id], with: hash}", "    - {tags: [location], with: redact}"]
    else:
        body += ["  access: deny"]
    return name, header("policy", name, team, f"Access rule {k} for {team.workspace}", False, "gold") \
        + "\n".join(body) + "\n"


def service_doc(team: Team) -> tuple[str, str]:
    team.services += 1
    name = f"api-{team.services:02d}"
    table = team.tables[-1]
    text = (header("service", name, team, f"Serves {table} of {team.workspace}", True, "silver")
            + "service:\n"
            + "  datasets:\n"
            + f"    - {{name: clean, dataset: \"lake://{team.workspace}/{table}\"}}\n"
            + "  queries:\n"
            + "    - name: by-category\n"
            + "      sql: \"SELECT * FROM clean WHERE category = $category ORDER BY id\"\n"
            + "      params: {category: string}\n"
            + "  formats: [json, csv]\n")
    return name, text


def team_files(team: Team, count: int) -> dict[str, str]:
    files = {f"{team.folder}/workspace.yaml": workspace_doc(team)}
    for j in range(1, count):
        kind = CYCLE[(j - 1) % len(CYCLE)]
        if kind == "depot":
            name, text = depot_doc(team, len(team.depots) + 1)
        elif kind == "workflow":
            name, text = workflow_doc(team, len(team.tables) + 1)
        elif kind == "policy":
            name, text = policy_doc(team)
        else:
            name, text = service_doc(team)
        files[f"{team.folder}/{kind}-{name}.yaml"] = text
    return files


def repo_files(artefacts: int, folders: int) -> tuple[dict[str, str], str]:
    """Every file of the repository (path -> text), and the workflow file --change-one edits."""
    # a folder needs its workspace, a depot and a workflow before a service can refer to one
    folders = max(1, min(folders, artefacts // 3))
    files = {f"{SHARED_DATA}/{d}.csv": shared_csv(d) for d in DATASETS}
    per, extra = divmod(artefacts, folders)
    change_target = ""
    for i in range(folders):
        team_docs = team_files(Team(i), per + (1 if i < extra else 0))
        if i == folders // 2:
            change_target = next(p for p in team_docs if "/workflow-" in p)
        files.update(team_docs)
    files["README.md"] = (f"# Benchmark repository\n\n{artefacts} generated artefacts in {folders} folders "
                          "under `teams/`; see `bench/gen_repo.py` in the Reconciler project.\n")
    return files, change_target


# --------------------------------------------------------------------------- git

def _signature(offset: int) -> pygit2.Signature:
    return pygit2.Signature(*SIGNATURE, EPOCH + offset, 0)


def _tree(repo: pygit2.Repository, files: dict[str, bytes]) -> pygit2.Oid:
    """A nested git tree of `files` (POSIX path -> bytes), built bottom-up from blobs."""
    nested: dict = {}
    for path, data in files.items():
        *dirs, leaf = path.split("/")
        node = nested
        for d in dirs:
            node = node.setdefault(d, {})
        node[leaf] = data

    def build(node: dict) -> pygit2.Oid:
        tb = repo.TreeBuilder()
        for name, value in sorted(node.items()):
            if isinstance(value, dict):
                tb.insert(name, build(value), pygit2.GIT_FILEMODE_TREE)
            else:
                tb.insert(name, repo.create_blob(value), pygit2.GIT_FILEMODE_BLOB)
        return tb.write()

    return build(nested)


def generate(out: Path, artefacts: int = 10_000, folders: int = 200, loose: bool = False) -> pygit2.Repository:
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise SystemExit(f"{out} is not empty; choose a new directory")
    files, change_target = repo_files(artefacts, folders)
    files[MANIFEST] = json.dumps({"artefacts": artefacts, "folders": folders,
                                  "change_target": change_target}, indent=2) + "\n"
    data = {p: t.encode() for p, t in files.items()}
    repo = pygit2.init_repository(str(out), initial_head=BRANCH)
    for path, blob in data.items():  # a checkout too: file depots read data/shared from disk
        target = out / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(blob)
    tree = _tree(repo, data)
    sig = _signature(0)
    repo.create_commit(f"refs/heads/{BRANCH}", sig, sig, f"{artefacts} generated artefacts", tree, [])
    repo.index.read_tree(tree)
    repo.index.write()
    if not loose:
        pack(repo)
    return repo


def pack(repo: pygit2.Repository) -> None:
    """Every object into one pack (with deltas, as git gc writes it), and the loose copies removed."""
    objects = Path(repo.path) / "objects"
    repo.pack(str(objects / "pack"))
    for folder in objects.iterdir():
        if len(folder.name) == 2 and folder.is_dir():
            for loose in folder.iterdir():
                loose.unlink()
            folder.rmdir()


def change_one(out: Path) -> str:
    """Commits an edit of the manifest's workflow file on top of the branch head; returns the new commit id."""
    repo = pygit2.Repository(str(out))
    head = repo.revparse_single(f"refs/heads/{BRANCH}")
    target = json.loads(head.tree[MANIFEST].data)["change_target"]
    old = head.tree[target].data.decode()
    new, count = re.subn(r"WHERE amount > (\d+)", lambda m: f"WHERE amount > {int(m.group(1)) + 1}", old, 1)
    assert count == 1, f"{target} has no 'WHERE amount > N' to edit"
    (Path(out) / target).write_text(new)
    repo.index.read_tree(head.tree)
    repo.index.add(pygit2.IndexEntry(target, repo.create_blob(new.encode()), pygit2.GIT_FILEMODE_BLOB))
    tree = repo.index.write_tree()
    repo.index.write()
    depth = sum(1 for _ in repo.walk(head.id))
    sig = _signature(depth * 60)
    return str(repo.create_commit(f"refs/heads/{BRANCH}", sig, sig, f"bench: edit {target}", tree, [head.id]))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path, help="new or empty directory for the repository")
    ap.add_argument("--artefacts", type=int, default=10_000)
    ap.add_argument("--folders", type=int, default=200)
    ap.add_argument("--change-one", action="store_true",
                    help="add one commit to an existing generated repo, editing one workflow file")
    ap.add_argument("--loose", action="store_true", help="leave the objects loose instead of packing them")
    a = ap.parse_args(argv)
    if a.change_one:
        print(change_one(a.out))
    else:
        repo = generate(a.out, a.artefacts, a.folders, a.loose)
        print(f"{a.out}: {a.artefacts} artefacts, commit {repo.head.target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
