"""Drift of lake tables looked for with one lake connection shared by many workflows' checks (the
daemon's slices of a drift pass, engine/drift.py LakeLook): the same findings as a connection per check."""
import os
from pathlib import Path

import duckdb

from tests.conftest import SAMPLE_ENV, run_cli


def test_a_shared_lake_look_finds_what_one_look_per_check_finds(sample_repo, state_dir, monkeypatch):
    from reconciler.engine import drift
    from reconciler.providers.base import ApplyContext
    from reconciler.store.state import StateStore

    r = run_cli("apply", "--repo", sample_repo.path, "--state-dir", state_dir, "--auto-approve", "-o", "json",
                env=SAMPLE_ENV)
    assert r.code == 0, r
    con = duckdb.connect(str(state_dir / "lake.duckdb"))
    con.execute("ALTER TABLE payments.transactions_clean ADD COLUMN sneaky INTEGER")  # changed behind our back
    con.close()

    opened = []
    real_connect = duckdb.connect
    monkeypatch.setattr(duckdb, "connect", lambda *a, **k: (opened.append(a[0] if a else k.get("database", ":memory:")),
                                                        real_connect(*a, **k))[1])
    with StateStore.open(Path(state_dir)) as store:
        records = store.records()
        ctx = ApplyContext(state_dir=Path(state_dir), store=store, commit=None, repo_dir=lambda: Path(sample_repo.path),
                           resources={}, records=records, environ=dict(os.environ))
        # the sample has one workflow: check it three times over, as a slice would check three workflows
        checked = sorted(rid for rid, rec in records.items() if rec.type in ("workflow", "depot"))
        assert any(rid.startswith("workflow:") for rid in checked)
        lake_opens = lambda: sum(1 for p in opened if str(p).endswith("lake.duckdb"))  # noqa: E731
        one_each = {}
        for _ in range(3):
            for rid in checked:
                one_each.update(drift.detect(ctx, {rid: records[rid]}))
        assert lake_opens() == 3
        shared = {}
        with drift.LakeLook(ctx.lake_path) as look:
            for _ in range(3):
                for rid in checked:
                    shared.update(drift.detect(ctx, {rid: records[rid]}, look))
        assert lake_opens() == 4  # one more, for all of them
    assert shared == one_each
    assert shared == {"workflow:payments/transactions-daily": "columns of lake://payments/transactions_clean changed"}
