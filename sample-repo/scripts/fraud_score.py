"""Fraud scores for cleaned card transactions: the `fraud-score` job of workflow transactions-daily.

The python stack calls `score(ctx)` in a subprocess, where
  ctx.read(name) -> list[dict]     rows of the job input called `name`
  ctx.write(name, rows)            rows (list of dicts) for the job output called `name`
  ctx.log(msg)                     a line in the job's log
  ctx.params                       the job's `params` mapping

The score is a sum of simple, explainable signals, capped at 1.0; a transaction is
flagged when its score reaches `params.threshold` (default 0.6).
"""
from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta
from statistics import median

SIGNALS = {
    "amount_5x_merchant_median": 0.35,
    "amount_3x_merchant_median": 0.2,
    "night_time": 0.15,
    "card_burst": 0.3,  # 4+ transactions on one card within an hour
    "declined_on_card_same_day": 0.15,
    "outside_card_home_region": 0.1,
}


def _ts(value) -> datetime:
    return value if isinstance(value, datetime) else datetime.fromisoformat(str(value))


def score_rows(rows: list[dict], threshold: float = 0.6) -> list[dict]:
    """One output row per input transaction: score in [0, 1], flagged, and the signals that fired."""
    by_merchant: dict[str, list[float]] = defaultdict(list)
    by_card: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by_merchant[r["merchant_id"]].append(float(r["amount"]))
        by_card[r["card_number"]].append(r)
    merchant_median = {m: median(v) for m, v in by_merchant.items()}

    home_region = {}
    declined_days: dict[str, set] = defaultdict(set)
    card_times: dict[str, list[datetime]] = {}
    for card, txs in by_card.items():
        regions = [t["region"] for t in txs]
        home_region[card] = max(set(regions), key=regions.count)
        declined_days[card] = {_ts(t["ts"]).date() for t in txs if t["status"] == "declined"}
        card_times[card] = sorted(_ts(t["ts"]) for t in txs)

    out = []
    for r in rows:
        ts, amount, card = _ts(r["ts"]), float(r["amount"]), r["card_number"]
        fired = []
        ratio = amount / merchant_median[r["merchant_id"]] if merchant_median[r["merchant_id"]] else 0
        if ratio >= 5:
            fired.append("amount_5x_merchant_median")
        elif ratio >= 3:
            fired.append("amount_3x_merchant_median")
        if ts.hour < 5:
            fired.append("night_time")
        window = [t for t in card_times[card] if abs(t - ts) <= timedelta(hours=1)]
        if len(window) >= 4:
            fired.append("card_burst")
        if r["status"] != "declined" and ts.date() in declined_days[card]:
            fired.append("declined_on_card_same_day")
        if r["region"] != home_region[card]:
            fired.append("outside_card_home_region")
        value = round(min(1.0, sum(SIGNALS[s] for s in fired)), 3)
        out.append({
            "transaction_id": r["id"],
            "ts": ts.isoformat(),
            "card_last4": str(card)[-4:],
            "merchant_id": r["merchant_id"],
            "region": r["region"],
            "amount": amount,
            "currency": r["currency"],
            "score": value,
            "flagged": value >= threshold,
            "reasons": ",".join(fired),
        })
    return out


def score(ctx) -> None:
    threshold = float(ctx.params.get("threshold", 0.6))
    rows = ctx.read("transactions")
    scored = score_rows(rows, threshold)
    flagged = sum(1 for s in scored if s["flagged"])
    ctx.log(f"scored {len(scored)} transactions; {flagged} flagged at threshold {threshold}")
    ctx.write("fraud_scores", scored)
