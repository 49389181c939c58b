"""The daemon's reaction to a push, in a warm process: plan a one-file change of a 10,000-artefact repo.

Generates the repository, plans it once (cold, in this process), then commits one
edited workflow at a time (not timed) and times `WarmPlanner.plan` for the new
commit: the tree diff, parsing and validating the changed file, re-linking its
resource and planning. Every other change the planner is told that the records
did not move (as the daemon tells it what its LiveRecords read since the last
plan), so it compares only what may have moved; the changes between are planned
without that word and compare all 10,000 resources with their records. Also
times a change that needs the whole resolve again (a new artefact file), which
still reuses every cached parse and validation.

    python bench/warm_bench.py [--artefacts 10000] [--changes 21]
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pygit2

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gen_repo  # noqa: E402

from reconciler.core.record import READY, Record  # noqa: E402
from reconciler.engine.warm import WarmPlanner  # noqa: E402
from reconciler.gitops.source import GitSource  # noqa: E402


def commit(repo: pygit2.Repository, path: str, text: str) -> str:
    (Path(repo.workdir) / path).write_text(text)
    repo.index.add(path)
    repo.index.write()
    sig = pygit2.Signature("bench", "bench@example.com")
    return str(repo.create_commit("HEAD", sig, sig, "edit", repo.index.write_tree(), [repo.head.target]))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--artefacts", type=int, default=10_000)
    ap.add_argument("--changes", type=int, default=21)
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="reconciler-warm-"))
    try:
        root = work / "repo"
        gen_repo.generate(root, a.artefacts, max(1, a.artefacts // 50))
        repo = pygit2.Repository(str(root))
        planner = WarmPlanner(work / "state")
        t0 = time.perf_counter()
        first = planner.plan(GitSource(repo, str(repo.head.target)), {}, serial=0)
        cold = time.perf_counter() - t0
        records = {x.id: Record(id=x.id, type=x.type, name=x.name, workspace=x.workspace, spec=x.resource.spec,
                                hash=x.resource.hash, phase=READY, file=x.file, depends_on=sorted(x.resource.depends_on))
                   for x in first.actions if x.resource is not None}
        workflow = next(x.file for x in first.actions if x.type == "workflow")
        text = (root / workflow).read_text()
        # the records stay as the first plan left them (nothing is applied), and the planner is told so, as the
        # daemon tells it what its LiveRecords read since the last plan; every other change compares all
        # 10,000 resources with their records, as a planner told nothing does
        unchanged = lambda serial: set()  # noqa: E731
        times, walked = [], []
        for i in range(a.changes):
            c = commit(repo, workflow, text.replace("amount >", f"amount + {i} >", 1))
            told = i % 2 == 0
            t = time.perf_counter()
            plan = planner.plan(GitSource(repo, c), records, serial=1, records_changed=unchanged if told else None)
            (times if told else walked).append(time.perf_counter() - t)
            assert len(plan.changes) == 1, [x.id for x in plan.changes]
        new_file = workflow.rsplit("/", 1)[0] + "/extra-bench.yaml"
        extra = text.replace(f"name: {Path(workflow).stem}", "name: extra-bench", 1)
        c = commit(repo, new_file, extra)
        t = time.perf_counter()
        planner.plan(GitSource(repo, c), records, serial=1)
        fallback = time.perf_counter() - t
        print(f"Warm planner, {a.artefacts:,} artefacts, {a.changes} one-file changes (this process)")
        print(f"  first plan (cold, in process)          {cold:8.3f} s")
        print(f"  one-file change, median                {statistics.median(times) * 1000:8.1f} ms  (target < 10 ms)")
        print(f"  one-file change, max                   {max(times) * 1000:8.1f} ms")
        print(f"  the same, every resource compared      {statistics.median(walked) * 1000:8.1f} ms  (median; "
              "records' changes not told)")
        print(f"  new file (full resolve, caches warm)   {fallback * 1000:8.1f} ms")
        print(f"  incremental {planner.incremental}, narrowed {planner.narrowed}, full resolves {planner.full_resolves}")
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
