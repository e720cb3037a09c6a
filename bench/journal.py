#!/usr/bin/env python
"""What the request journal (OCTORELAY_JOURNAL, services/journal.py) costs per request.

    python -m bench.journal [--pg postgresql://...] [--rounds 400]     # ~1 minute, prints a table

Two places pay for it:

- the request's own thread: `Ledger.journal()` builds the entry and queues it for the writer
  (measured with the real queue and writer thread, the database left out);
- the settlement writer, off the request's path: a request that ends within the writer's batch
  (short: its entry and its settlement are in the same batch) never touches the journal table;
  one that outlives the batch (long: a stream, a slow answer) costs an INSERT in one batch and a
  DELETE in a later one. Measured as the writer's time per request for batches of 1 and of 100
  requests (a burst), journal on minus journal off, through the real Ledger.write_batch on the
  real schema (SQLite in a temporary folder; PostgreSQL with --pg, whose tables are dropped and
  recreated: give it a scratch database).

Each cell is the median of --rounds rounds (a quarter as many for batches of 100). Rows are
settled with usage, so every batch also carries its log rows and the key's charge, as in
production.
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import uuid


ADMIN_TOKEN = "bench-admin-token-0123456789abcdef0123456789"
SECRET_KEY = "q2mS6yQ7n5bH0uF8YJwHk0j3QvZr2m1Ck9yXG1p4e6U="
MODEL = "claude-sonnet-4-6"


def build(database_url: str, spool_dir: str):
    from app import create_app
    from app.db import db, upgrade

    if database_url.startswith("postgres"):
        from app.db import open_database

        scratch = open_database(database_url, pooled=False)
        with scratch.connection_context():
            scratch.execute_sql("DROP SCHEMA public CASCADE")
            scratch.execute_sql("CREATE SCHEMA public")
        scratch.close()
    app = create_app({"DATABASE_URL": database_url, "OCTORELAY_ADMIN_TOKEN": ADMIN_TOKEN,
                      "OCTORELAY_SECRET_KEY": SECRET_KEY, "OCTORELAY_SPOOL_DIR": spool_dir, "LOG_LEVEL": "warning"})
    upgrade(db.obj)
    resp = app.test_client().post("/admin/keys", json={"name": "bench", "budget_usd": 1000},
                                  headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert resp.status_code == 201, resp.get_data(as_text=True)
    return app, resp.get_json()["id"]


class Rows:
    """The rows the ledger would queue, collected instead of written by its thread."""

    def __init__(self, ledger):
        self.ledger = ledger
        self.rows: list[dict] = []
        ledger.writer.submit = lambda row, done=None: self.rows.append(row)
        ledger.sweeper.ensure_started = lambda: None  # no heartbeat thread in the measurement

    def take(self) -> list[dict]:
        rows, self.rows = self.rows, []
        return rows


def records(key_id: int, n: int):
    from app.wire.usage import Usage
    from app.services.accounting import RequestRecord

    out = []
    for _ in range(n):
        record = RequestRecord(f"req_{uuid.uuid4().hex}", key_id, MODEL, True)
        record.upstream_model, record.status = MODEL, 200
        record.usage = Usage(input_tokens=120, output_tokens=40)
        out.append(record)
    return out


def writer_costs(ledger, key_id: int, n: int, rounds: int) -> dict[str, float]:
    """Median writer time per request, in µs, for off / short / long. The three run in turn
    within each round (their order rotating), so a machine busy with something else for a
    while slows all three alike."""
    from app.services.journal import worker_id

    rows = Rows(ledger)
    modes = ("off", "short", "long")
    samples: dict[str, list[float]] = {mode: [] for mode in modes}
    for i in range(rounds):
        for mode in modes[i % 3:] + modes[:i % 3]:
            batch = records(key_id, n)
            if mode == "long":
                for r in batch:
                    ledger.journal(r, 1_000_000, worker_id())
                first = rows.take()
                for r in batch:
                    ledger.settle(r)
                second = rows.take()
                t0 = time.perf_counter()
                ledger.write_batch(first)
                ledger.write_batch(second)
            else:
                for r in batch:
                    if mode == "short":
                        ledger.journal(r, 1_000_000, worker_id())
                    ledger.settle(r)
                t0 = time.perf_counter()
                ledger.write_batch(rows.take())
            samples[mode].append((time.perf_counter() - t0) / n * 1e6)
    return {mode: statistics.median(values) for mode, values in samples.items()}


def request_cost(ledger, key_id: int, calls: int = 20000) -> float:
    """µs per Ledger.journal() call on the request's thread: the entry, queued for a real writer
    thread whose batches go nowhere."""
    from app.services.journal import worker_id
    from app.services.writer import SettlementWriter

    real = ledger.writer
    ledger.writer = SettlementWriter(lambda rows: [0] * len(rows))
    ledger.sweeper.ensure_started = lambda: None
    batch = records(key_id, calls)
    worker = worker_id()
    samples = []
    for start in range(0, calls, 1000):
        t0 = time.perf_counter()
        for r in batch[start:start + 1000]:
            ledger.journal(r, 1_000_000, worker)
        samples.append((time.perf_counter() - t0) / 1000 * 1e6)
    ledger.writer.close()
    ledger.writer = real
    return statistics.median(samples)


def measure(name: str, database_url: str, rounds: int) -> list[list[str]]:
    from app.db import db
    from app.state import services

    with tempfile.TemporaryDirectory() as spool:
        app, key_id = build(database_url, spool)
        ledger = services(app).relay.ledger
        out = []
        hot = request_cost(ledger, key_id)
        for n in (1, 100):
            cost = writer_costs(ledger, key_id, n, rounds if n == 1 else max(rounds // 4, 10))
            off, short, long = cost["off"], cost["short"], cost["long"]
            out.append([name, str(n), f"{hot:.1f}", f"{off:.0f}", f"{short - off:+.1f}", f"{long - off:+.0f}"])
        ledger.close()
        db.obj.close_all()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pg", default=os.environ.get("OCTORELAY_BENCH_DATABASE_URL"),
                        help="a scratch PostgreSQL database (its public schema is dropped)")
    parser.add_argument("--rounds", type=int, default=400)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        rows += measure("SQLite", f"sqlite:///{folder}/bench.db", args.rounds)
    if args.pg:
        rows += measure("PostgreSQL", args.pg, args.rounds)
    print("| database | requests per writer batch | request thread, journal on (µs) | writer, journal off "
          "(µs/request) | writer, on − off, short requests (µs/request) | writer, on − off, long requests "
          "(µs/request) |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
