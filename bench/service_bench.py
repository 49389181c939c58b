"""A service answering 1,000-row pages of a masked, policy-filtered dataset, under load on loopback.

Generates a repository with a lake table of --rows rows (a `file` depot of CSV, a `sql` workflow
copying it into lake://bench/events), a mask policy (card_number: last4, the pii tag: hash) and an
allow policy with a row filter (`region <> 'APAC'`) for the service's consumer, and the service
`events-api` with a token for that consumer. Applies it with the real CLI, starts
`reconciler daemon` on it, then runs a load generator in this process: for each count in
--connections, that many threads, each on one keep-alive http.client connection, requesting
random 1,000-row JSON pages for --seconds (after a 2 s warm-up); reports requests/s and p50/p99
latency. The generator shares the machine's CPUs with the daemon.

Two runs, same daemon, same route, same page size and offsets:
  protected    the consumer's token: the masked, filtered view (what the service serves)
  unprotected  an admin user whom no policy names: the same service route over the same table
               with no mask and no filter (the engine's guard and views still run, as they always do)
The enforcement overhead is p50 (protected) / p50 (unprotected) - 1, and likewise for requests/s.

Then, with the daemon stopped, the server-side cost of one page without HTTP: QueryEngine.run for
each subject beside the same page read straight from DuckDB (the lake opened read-only, no engine,
no policies), each with the JSON encoding the route uses.

    python bench/service_bench.py [--rows 100000] [--seconds 10] [--connections 2,8] [--work DIR]
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PAGE = 1000
CONSUMER_TOKEN = "bench-consumer-token-4f1d"
ADMIN_TOKEN = "bench-admin-token-8a2c"
PATH = "/api/v1/services/bench/events-api/datasets/events"

FILES = {
    "workspace.yaml": "version: v1\ntype: workspace\nname: bench\nowner: team-bench\n",
    "depot.yaml": """version: v1
type: depot
name: raw-events
owner: team-bench
depot:
  kind: file
  path: data/events
  format: csv
  column_tags: {events.card_number: [pii]}
""",
    "workflow.yaml": """version: v1
type: workflow
name: load
workspace: bench
owner: team-bench
workflow:
  dag:
    - name: copy
      stack: sql
      spec:
        inputs: [{name: raw, dataset: "depot://raw-events/events"}]
        steps: [{name: events, sql: "SELECT * FROM raw"}]
        outputs: [{from: events, dataset: "lake://bench/events", mode: overwrite}]
""",
    "secret.yaml": "version: v1\ntype: secret\nname: consumer-token\nworkspace: bench\n"
                   "secret:\n  from: {env: BENCH_CONSUMER_TOKEN}\n",
    "policies.yaml": """version: v1
type: policy
name: mask-cards
policy:
  subjects: {users: [bench-consumer]}
  datasets: ["lake://bench/*"]
  mask:
    - {columns: [card_number], with: last4}
    - {tags: [pii], with: hash}
---
version: v1
type: policy
name: consumer-not-apac
policy:
  subjects: {users: [bench-consumer]}
  datasets: ["lake://bench/events"]
  access: allow
  filter: "region <> 'APAC'"
""",
    "service.yaml": """version: v1
type: service
name: events-api
workspace: bench
service:
  datasets: [{name: events, dataset: "lake://bench/events"}]
  formats: [json, csv]
  tokens: [{name: bench-consumer, secret: consumer-token}]
""",
}


def generate(repo: Path, rows: int) -> None:
    import duckdb
    import pygit2

    for rel, text in FILES.items():
        (repo / rel).parent.mkdir(parents=True, exist_ok=True)
        (repo / rel).write_text(text)
    (repo / "data" / "events").mkdir(parents=True, exist_ok=True)
    con = duckdb.connect()
    con.execute(f"""COPY (
        SELECT i AS id, TIMESTAMP '2025-01-01' + INTERVAL (i) SECOND AS ts,
               CAST(4000000000000000 + (i * 7919) % 999999999999 AS VARCHAR) AS card_number,
               round(((i * 37) % 50000) / 100.0, 2) AS amount,
               ['USD', 'EUR', 'GBP'][1 + i % 3] AS currency, printf('M%04d', i % 400) AS merchant_id,
               ['EU', 'US', 'UK', 'APAC'][1 + (i // 7) % 4] AS region
        FROM range({rows}) t(i)) TO '{repo / "data" / "events" / "events.csv"}' (HEADER)""")
    con.close()
    r = pygit2.init_repository(str(repo), initial_head="main")
    r.index.add_all()
    r.index.write()
    sig = pygit2.Signature("bench", "bench@example.com")
    r.create_commit("HEAD", sig, sig, "bench", r.index.write_tree(), [])


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def get(conn: http.client.HTTPConnection, path: str, token: str) -> bytes:
    conn.request("GET", path, headers={"Authorization": f"Bearer {token}"})
    resp = conn.getresponse()
    body = resp.read()
    if resp.status != 200:
        raise SystemExit(f"GET {path}: {resp.status} {body[:300]!r}")
    return body


def load(port: int, token: str, pages: int, seconds: float, connections: int, warmup: float = 2.0) -> dict:
    """Requests/s and latency percentiles of `connections` keep-alive clients asking random pages."""
    stop_at = time.monotonic() + warmup + seconds
    measure_from = time.monotonic() + warmup
    latencies: list[list[float]] = [[] for _ in range(connections)]
    sizes: list[int] = []

    def client(i: int) -> None:
        rnd = random.Random(i)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        while True:
            offset = rnd.randrange(pages) * PAGE
            t = time.monotonic()
            if t >= stop_at:
                break
            body = get(conn, f"{PATH}?limit={PAGE}&offset={offset}", token)
            done = time.monotonic()
            if t >= measure_from:
                latencies[i].append(done - t)
                if len(sizes) < 50:
                    sizes.append(len(body))
        conn.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(connections)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    all_ = sorted(x for per in latencies for x in per)
    q = statistics.quantiles(all_, n=100, method="inclusive")
    return {"requests": len(all_), "rps": len(all_) / seconds, "p50_ms": q[49] * 1000, "p99_ms": q[98] * 1000,
            "max_ms": all_[-1] * 1000, "kb": statistics.mean(sizes) / 1024}


def server_side(state: Path, rows: int, repeat: int = 100) -> dict:
    """Median ms per 1,000-row JSON page without HTTP, as the route builds it (DuckDB renders each row
    with to_json, the page is joined): through QueryEngine.run per subject, and straight from DuckDB."""
    import duckdb

    from reconciler.core.access import Subject
    from reconciler.query.engine import QueryEngine

    engine = QueryEngine(state)
    sql, params = engine.dataset_sql("lake://bench/events")
    page_sql = f"SELECT to_json(p) AS row FROM ({sql}) AS p"
    rnd = random.Random(7)
    out = {}
    for label, subject, pages in (("engine, consumer (masked, filtered)", Subject("bench-consumer"), rows * 3 // 4 // PAGE),
                                  ("engine, admin (no policy)", Subject("bench-admin", frozenset({"admins"}), True),
                                   rows // PAGE)):
        engine.run(subject, page_sql, params, limit=PAGE, offset=0)
        times = []
        for _ in range(repeat):
            t = time.perf_counter()
            res = engine.run(subject, page_sql, params, limit=PAGE, offset=rnd.randrange(pages) * PAGE)
            "[" + ",".join(r[0] for r in res.rows) + "]"
            times.append(time.perf_counter() - t)
        out[label] = statistics.median(times) * 1000
    engine.close()
    # the same page with no engine and no policy: the lake table itself, the same order as dataset_sql's
    order = " ORDER BY ALL" if sql.endswith(" ORDER BY ALL") else ""
    con = duckdb.connect(str(state / "lake.duckdb"), read_only=True)
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        cur = con.cursor()
        res = cur.execute(f"SELECT to_json(p) AS row FROM (SELECT * FROM bench.events{order}) AS p "
                          f"LIMIT {PAGE + 1} OFFSET {rnd.randrange(rows // PAGE) * PAGE}").fetchall()
        "[" + ",".join(r[0] for r in res[:PAGE]) + "]"
        cur.close()
        times.append(time.perf_counter() - t)
    con.close()
    out[f"DuckDB straight{order or ' (insertion order)'}"] = statistics.median(times) * 1000
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--connections", default="2,8", help="keep-alive clients, a comma-separated list of runs")
    ap.add_argument("--work", type=Path, help="keep the repository and state here")
    ap.add_argument("--json", type=Path, help="append the results as one JSON line to this file")
    a = ap.parse_args()
    work = a.work or Path(tempfile.mkdtemp(prefix="reconciler-service-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    repo, state, log = work / "repo", work / "state", work / "daemon.log"
    env = {**os.environ, "BENCH_CONSUMER_TOKEN": CONSUMER_TOKEN}
    env.pop("RECONCILER_STATE_DIR", None)
    p = None
    try:
        if not (repo / ".git").exists():
            generate(repo, a.rows)
        cli = [sys.executable, "-m", "reconciler"]
        r = subprocess.run(cli + ["apply", "--auto-approve", "--repo", str(repo), "--state-dir", str(state)],
                           env=env, capture_output=True, text=True)
        if r.returncode != 0:
            raise SystemExit(f"apply failed:\n{r.stdout}\n{r.stderr}")
        (work / "admin-token").write_text(ADMIN_TOKEN + "\n")
        port = free_port()
        (work / "reconciler.yaml").write_text(json.dumps({
            "repo": str(repo), "state_dir": str(state), "listen": f"127.0.0.1:{port}", "interval": "1h",
            "users": {"bench-admin": {"groups": ["admins"], "token_file": str(work / "admin-token")}},
            "groups": {"admins": {"admin": True}}}))
        p = subprocess.Popen(cli + ["daemon", "--config", str(work / "reconciler.yaml")], env=env,
                             stdout=subprocess.DEVNULL, stderr=open(log, "w"))
        deadline = time.monotonic() + 120
        while True:
            try:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                c.request("GET", "/readyz")
                if c.getresponse().status == 200:
                    break
            except OSError:
                pass
            if p.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the daemon did not get ready; see {log}")
            time.sleep(0.2)
        warm = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        first = json.loads(get(warm, f"{PATH}?limit=5", CONSUMER_TOKEN))
        assert all(not r["card_number"][:12].isdigit() for r in first["rows"]), "card numbers are not masked"
        get(warm, f"{PATH}?limit=5", ADMIN_TOKEN)
        warm.close()
        visible = a.rows * 3 // 4  # the filter hides one region in four
        levels = [int(c) for c in a.connections.split(",")]
        results = {}
        for n in levels:
            results[f"protected/{n}"] = load(port, CONSUMER_TOKEN, visible // PAGE, a.seconds, n)
            results[f"unprotected/{n}"] = load(port, ADMIN_TOKEN, a.rows // PAGE, a.seconds, n)
        p.send_signal(signal.SIGTERM)
        p.wait(60)
        p = None
        inner = server_side(state, a.rows)
        print(f"Service pages of {PAGE} rows over a {a.rows:,}-row lake table, keep-alive connections, "
              f"{a.seconds:g} s per run, loopback, {os.cpu_count()} CPUs")
        print(f"  {'run':<15} {'conns':>5} {'requests':>9} {'req/s':>7} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} "
              f"{'KB/page':>8}")
        for name, m in results.items():
            run, n = name.split("/")
            print(f"  {run:<15} {n:>5} {m['requests']:>9} {m['rps']:>7.0f} {m['p50_ms']:>8.1f} {m['p99_ms']:>8.1f} "
                  f"{m['max_ms']:>8.1f} {m['kb']:>8.0f}")
        overhead = {}
        for n in levels:
            pr, un = results[f"protected/{n}"], results[f"unprotected/{n}"]
            overhead[n] = (pr["p50_ms"] / un["p50_ms"] - 1, 1 - pr["rps"] / un["rps"])
            print(f"  enforcement overhead at {n} connections: p50 {overhead[n][0]:+.0%}, "
                  f"throughput {overhead[n][1]:+.0%}  (target < 20%)")
        best = max((results[f"protected/{n}"] for n in levels), key=lambda m: m["rps"])
        print(f"  targets: 300 req/s ({'met' if best['rps'] >= 300 else 'missed'}: best {best['rps']:.0f}), "
              f"p99 < 50 ms ({'met' if min(results[f'protected/{n}']['p99_ms'] for n in levels) < 50 else 'missed'})")
        print("Server-side cost of one JSON page, no HTTP (median ms):")
        for name, ms in inner.items():
            print(f"  {name:<40} {ms:6.1f}")
        if a.json:
            with a.json.open("a") as f:
                f.write(json.dumps({"rows": a.rows, "runs": results, "overhead": overhead,
                                    "server_side_ms": inner}) + "\n")
        return 0
    finally:
        if p is not None and p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(60)
            except subprocess.TimeoutExpired:
                p.kill()
        if a.work is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
