#!/usr/bin/env python3
"""Times parsing alone: every *.yaml file of a generated repository through `parse_file`
(the yaml-rs fast path, libyaml for what it declines) and through `parse_file_libyaml`,
in one process, the cyclic GC paused as the loader pauses it.

    python bench/parse_bench.py                         # generates 10,000 artefacts in a temp dir
    python bench/parse_bench.py --repo /tmp/fy/repo     # an existing bench/gen_repo.py checkout
    python bench/parse_bench.py --artefacts 2000 --runs 7

Prints the median and minimum of `--runs` runs of each (CPU time of this process, and
wall time), the first fast-path run on its own (its verdict caches start empty, as in a
fresh CLI process), and how many files the fast path declined; then validating every
artefact document once (the models built beforehand), and what parsing plus validating
cost together: the floor of a cold `validate` on this machine.
"""
from __future__ import annotations

import argparse
import gc
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from reconciler.core.fastyaml import fast_parse  # noqa: E402
from reconciler.core.yamlload import parse_file, parse_file_libyaml  # noqa: E402


def _time(parse, files: list[tuple[str, bytes]]) -> tuple[float, float]:
    gc.disable()
    try:
        wall, cpu = time.perf_counter(), time.process_time()
        for path, data in files:
            parse(path, data, "")
        return time.process_time() - cpu, time.perf_counter() - wall
    finally:
        gc.enable()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repo", type=Path, help="a generated repository (default: generate one)")
    parser.add_argument("--artefacts", type=int, default=10_000)
    parser.add_argument("--folders", type=int, default=200)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        repo = args.repo
        if repo is None:
            sys.path.insert(0, str(ROOT / "bench"))
            from gen_repo import generate

            repo = Path(tmp) / "repo"
            generate(repo, args.artefacts, args.folders)
        files = [(str(p.relative_to(repo)), p.read_bytes()) for p in sorted(repo.rglob("*.yaml"))
                 if ".git" not in p.parts]
    size = sum(len(data) for _, data in files)
    declined = [path for path, data in files if fast_parse(path, data, "") is None]
    print(f"{len(files)} files, {size / 1e6:.1f} MB; the fast path declines {len(declined)}"
          + (f" (first: {declined[0]})" if declined else ""))

    # What a fresh process pays: the fast path's verdict caches start empty.
    from reconciler.core import fastyaml
    for cache in (fastyaml._KEYS, fastyaml._STRING_RISK, fastyaml._NUMBER_SAME):
        cache.clear()
    first = _time(parse_file, files)
    runs: dict[str, list[tuple[float, float]]] = {"libyaml": [], "fast path": []}
    for _ in range(args.runs):  # interleaved, so load from other processes hits both alike
        runs["libyaml"].append(_time(parse_file_libyaml, files))
        runs["fast path"].append(_time(parse_file, files))
    print(f"{'':10} {'cpu median':>11} {'cpu min':>8} {'wall median':>12}")
    for name, times in runs.items():
        cpu = [c for c, _ in times]
        wall = [w for _, w in times]
        print(f"{name:10} {statistics.median(cpu):10.3f}s {min(cpu):7.3f}s {statistics.median(wall):11.3f}s")
    print(f"{'first fast':10} {first[0]:10.3f}s {'':8} {first[1]:11.3f}s   (empty verdict caches)")

    # The floor of any cold validate: every artefact document validated once (models imported
    # beforehand), on top of parsing. Split over N processes at best it takes (parse + validate) / N.
    from reconciler.core.resolve import VALIDATE_BATCH, validate, validate_many

    documents = [doc.data for path, data in files for doc in parse_file(path, data, "").documents if doc.is_artefact]
    validate(documents[0])  # imports and builds the models outside the clock
    batches = [documents[i:i + VALIDATE_BATCH] for i in range(0, len(documents), VALIDATE_BATCH)]
    checks: dict[str, list[float]] = {"one by one": [], "batched": []}
    for _ in range(args.runs):  # interleaved
        gc.disable()
        try:
            cpu = time.process_time()
            for data in documents:
                validate(data)
            checks["one by one"].append(time.process_time() - cpu)
            cpu = time.process_time()
            for batch in batches:
                validate_many(batch)
            checks["batched"].append(time.process_time() - cpu)
        finally:
            gc.enable()
    parse_cpu = statistics.median(c for c, _ in runs["fast path"])
    for name, times in checks.items():
        how = "one whole document after another" if name == "one by one" else \
            f"validate_many, {VALIDATE_BATCH} at a time, as the loader does"
        print(f"{'validate':10} {statistics.median(times):10.3f}s {min(times):7.3f}s   ({len(documents)} documents: "
              f"models, references, spec hashes; {how})")
    check_cpu = statistics.median(checks["batched"])
    print(f"parse + validate: {parse_cpu + check_cpu:.3f}s of CPU; over 2 processes at best "
          f"{(parse_cpu + check_cpu) / 2:.3f}s, before reading blobs, resolving, planning and reporting")
    return 0


if __name__ == "__main__":
    sys.exit(main())
