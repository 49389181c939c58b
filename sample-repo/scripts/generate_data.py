#!/usr/bin/env python3
"""Writes the sample repository's data: data/transactions/transactions.csv and data/merchants.sqlite.

Deterministic (fixed seed, fixed as-of date), so re-running it reproduces the committed files
byte for byte. Standard library only. Run from anywhere:

    python sample-repo/scripts/generate_data.py
"""
from __future__ import annotations

import csv
import random
import sqlite3
from datetime import datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
AS_OF = datetime(2025, 1, 15, 0, 0, 0)  # transactions cover the 14 days before this (UTC)
DAYS = 14
N_TRANSACTIONS = 1200
N_CARDS = 300
SEED = 20250115

REGION = {"US": "US", "GB": "UK", "DE": "EU", "FR": "EU", "NL": "EU", "ES": "EU", "IE": "EU",
          "JP": "APAC", "SG": "APAC"}
CURRENCY = {"US": "USD", "UK": "GBP", "EU": "EUR", "APAC": "USD"}
# merchant category code -> (typical amount, words for names)
CATEGORIES = {
    "5411": (45.0, ["Grocery", "Market", "Foods"]),
    "5812": (32.0, ["Bistro", "Kitchen", "Diner"]),
    "5541": (55.0, ["Fuel", "Petrol", "Gas"]),
    "5732": (240.0, ["Electronics", "Tech Store", "Gadgets"]),
    "4121": (21.0, ["Cabs", "Rides", "Taxi"]),
    "7011": (180.0, ["Hotel", "Inn", "Suites"]),
    "5912": (18.0, ["Pharmacy", "Chemist", "Drugstore"]),
    "5999": (27.0, ["Goods", "Supplies", "Corner Shop"]),
}
PREFIXES = ["Northside", "Harbor", "Maple", "Blue Fern", "Granite", "Riverside", "Old Town", "Summit",
            "Lantern", "Orchard", "Copper", "Station"]


def luhn_card(rng: random.Random) -> str:
    """A fake 16-digit card number with a valid Luhn check digit, on test prefixes."""
    body = rng.choice(["4000", "5100"]) + "".join(str(rng.randrange(10)) for _ in range(11))
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch)
        if i % 2 == 0:  # these digits are doubled once the check digit is appended
            d *= 2
            d -= 9 if d > 9 else 0
        total += d
    return body + str((10 - total % 10) % 10)


def make_merchants(rng: random.Random) -> list[dict]:
    merchants = []
    countries = list(REGION)
    for i in range(1, 41):
        mcc = rng.choice(list(CATEGORIES))
        name = f"{rng.choice(PREFIXES)} {rng.choice(CATEGORIES[mcc][1])}"
        created = AS_OF - timedelta(days=rng.randrange(60, 1500))
        merchants.append({"id": f"M{i:04d}", "name": name, "mcc": mcc,
                          "country": countries[i % len(countries)],
                          "created_at": created.strftime("%Y-%m-%dT%H:%M:%S")})
    return merchants


def amount_for(rng: random.Random, mcc: str) -> float:
    return round(max(0.5, rng.lognormvariate(0, 0.6) * CATEGORIES[mcc][0]), 2)


def make_transactions(rng: random.Random, merchants: list[dict]) -> list[dict]:
    cards = [luhn_card(rng) for _ in range(N_CARDS)]
    start = AS_OF - timedelta(days=DAYS)
    rows = []
    for _ in range(N_TRANSACTIONS - 20):
        m = rng.choice(merchants)
        ts = start + timedelta(seconds=rng.randrange(DAYS * 86400))
        status = rng.choices(["approved", "declined", "reversed"], [92, 6, 2])[0]
        rows.append((ts, rng.choice(cards), amount_for(rng, m["mcc"]), m, status))
    # four compromised cards: a burst of five large night-time purchases abroad, to give the
    # fraud-score job something to find
    electronics = [m for m in merchants if m["mcc"] in ("5732", "7011")]
    for card in rng.sample(cards, 4):
        t0 = start + timedelta(days=rng.randrange(DAYS), hours=rng.randrange(0, 4))
        for k in range(5):
            m = rng.choice(electronics)
            rows.append((t0 + timedelta(minutes=7 * k + rng.randrange(5)), card,
                         round(rng.uniform(900, 2500), 2), m, "declined" if k == 4 else "approved"))
    rows.sort(key=lambda r: r[0])
    out = []
    for i, (ts, card, amount, m, status) in enumerate(rows, start=1):
        region = REGION[m["country"]]
        out.append({"id": i, "ts": ts.strftime("%Y-%m-%dT%H:%M:%S"), "card_number": card,
                    "amount": f"{amount:.2f}", "currency": CURRENCY[region], "merchant_id": m["id"],
                    "country": m["country"], "region": region, "status": status})
    # a few bad rows the clean job filters out: zero amounts and negative amounts
    for row in rng.sample(out, 12):
        row["amount"] = "0.00" if rng.random() < 0.4 else f"-{rng.uniform(1, 80):.2f}"
    return out


def write_csv(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]), lineterminator="\n")
        w.writeheader()
        w.writerows(rows)


def write_sqlite(path: Path, merchants: list[dict]) -> None:
    path.unlink(missing_ok=True)  # rebuilt from scratch so the file is reproducible
    con = sqlite3.connect(path)
    try:
        con.execute("CREATE TABLE merchants (id TEXT PRIMARY KEY, name TEXT NOT NULL, mcc TEXT NOT NULL,"
                    " country TEXT NOT NULL, created_at TEXT NOT NULL)")
        con.executemany("INSERT INTO merchants VALUES (:id, :name, :mcc, :country, :created_at)", merchants)
        con.commit()
    finally:
        con.close()


def main() -> None:
    rng = random.Random(SEED)
    merchants = make_merchants(rng)
    transactions = make_transactions(rng, merchants)
    write_csv(ROOT / "data" / "transactions" / "transactions.csv", transactions)
    write_sqlite(ROOT / "data" / "merchants.sqlite", merchants)
    print(f"wrote {len(transactions)} transactions and {len(merchants)} merchants under {ROOT / 'data'}")


if __name__ == "__main__":
    main()
