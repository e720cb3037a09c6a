"""What a request cost, and writing it down: one log row and one atomic charge per request.

Cost is computed in integers: tokens x micro-dollars per million tokens is
pico-dollars, rounded once to the nano-dollars the DB stores, so log rows
and key totals always add up exactly. Settlements are written after the
response by a background writer (services/writer.py), batched; one the
database refuses (it is down for a moment) is spooled to a local file and
written later.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Callable

from ..adaptors.base import TOKEN_FIELDS, USAGE_FIELDS, Usage
from peewee import DataError, IntegrityError, SqliteDatabase

from ..db import db
from ..models import ApiKey, RequestLog, utcnow
from .pricing import PriceBook
from .writer import SettlementWriter

log = logging.getLogger("octorelay.accounting")


@dataclass
class RequestRecord:
    """Everything the log row needs; filled in as the request goes."""
    request_id: str
    key_id: int | None
    model: str
    stream: bool
    started: float = field(default_factory=time.perf_counter)
    upstream_model: str | None = None
    channel_id: int | None = None
    status: int = 0
    error_type: str | None = None
    usage: Usage = field(default_factory=Usage)
    ttft_ms: int | None = None
    attempts: int = 0
    client_disconnected: bool = False
    affinity: str | None = None  # session affinity: kept / new / moved, None when not followed
    metric_model: str = "-"  # the model as a metric label: known models only, "other" for the rest
    settled: bool = False
    cost_nanos: int = 0
    latency_ms: int = 0


USAGE_ZERO = dict.fromkeys(USAGE_FIELDS, 0)  # rows spooled by an older version lack the newer fields
LOG_FIELDS = ("request_id", "key_id", "channel_id", "model", "stream", "status", "error_type",
              "ttft_ms", "attempts", "client_disconnected", "latency_ms", "affinity")


class Spool:
    """Settlements the database refused, one JSON line each, until it takes them again.

    A local file (appends are serialised with flock across workers): it covers
    a database that is away for a moment; it is not a second database.
    """

    def __init__(self, path: str):
        self.path = path
        self._lock = threading.Lock()

    def add(self, row: dict) -> None:
        with self._lock, open(self.path, "a", encoding="utf-8") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            fh.write(json.dumps(row, separators=(",", ":")) + "\n")

    def pending(self) -> bool:
        try:
            return os.path.getsize(self.path) > 0
        except OSError:
            return False

    def drain(self, write) -> int:
        """Hand every spooled row to `write`; rows it still refuses stay spooled. Returns rows written."""
        if not self._lock.acquire(blocking=False):
            return 0  # another thread of this worker is draining
        try:
            with open(self.path, "r+", encoding="utf-8") as fh:
                fcntl.flock(fh, fcntl.LOCK_EX)
                rows = [json.loads(line) for line in fh if line.strip()]
                left, done = [], 0
                for row in rows:
                    if left:
                        left.append(row)
                        continue
                    try:
                        write(row)
                        done += 1
                    except (IntegrityError, DataError):  # never storable: set aside, keep going
                        log.error("spooled settlement refused by the database", extra={"fields": {
                            "request_id": row.get("request_id")}})
                        with open(self.path + ".rejected", "a", encoding="utf-8") as rejected:
                            rejected.write(json.dumps(row, separators=(",", ":")) + "\n")
                    except Exception:
                        left.append(row)
                fh.seek(0)
                fh.truncate()
                fh.writelines(json.dumps(row, separators=(",", ":")) + "\n" for row in left)
            return done
        except FileNotFoundError:
            return 0
        finally:
            self._lock.release()


def spool_path(database_url: str, folder: str | None = None) -> str:
    """One spool file per database, in `folder` (OCTORELAY_SPOOL_DIR) or the temp dir."""
    folder = folder or tempfile.gettempdir()
    digest = hashlib.sha256(database_url.encode()).hexdigest()[:12]
    return os.path.join(folder, f"octorelay-settlements-{digest}.jsonl")


def _storable(text: str) -> str:
    return text.replace("\x00", "\ufffd")[:200]


def _write_transaction():
    """SQLite: take the write lock up front (BEGIN IMMEDIATE), so a busy database waits out
    its busy_timeout; a deferred transaction that must upgrade to writing fails at once."""
    if isinstance(db.obj, SqliteDatabase):
        return db.atomic(lock_type="IMMEDIATE")
    return db.atomic()


class Ledger:
    """Writes each request's log row and charge, after the response, in batches; spools them
    while the database is away."""

    def __init__(self, prices: PriceBook, spool: Spool):
        self.prices = prices
        self.spool = spool
        self._statements: tuple[str, str, tuple] | None = None
        self.writer = SettlementWriter(self.write_batch)

    def settle(self, record: RequestRecord, done: Callable[[int], None] | None = None) -> None:
        """Queue the request's row and charge; `done(cost_nanos)` runs once they are committed
        (or spooled). Runs at the end of every routed request, streams included. Never raises."""
        record.settled = True
        record.latency_ms = int((time.perf_counter() - record.started) * 1000)
        row = {name: getattr(record, name) for name in LOG_FIELDS}
        row["model"] = _storable(record.model)  # any string a client sent must fit the column
        row.update(upstream_model=record.upstream_model, created_at=utcnow().isoformat(),
                   **{name: getattr(record.usage, name) for name in USAGE_FIELDS})
        self.writer.submit(row, done)

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until every settlement queued so far is committed (or spooled)."""
        return self.writer.flush(timeout)

    def close(self) -> None:
        self.writer.close()

    def write_batch(self, rows: list[dict]) -> list[int]:
        """Rows and charges in one transaction; returns each row's cost (0 when spooled)."""
        try:
            costs = [self._cost(row) for row in rows]  # may reload prices: inside the try
            self._insert(rows, costs)
        except (IntegrityError, DataError):  # one unstorable row must not sink the others
            costs = [self._write_one(row) for row in rows]
        except Exception as exc:
            for row in rows:
                self.spool.add(row)
            log.error("database unavailable: settlements spooled", extra={"fields": {
                "rows": len(rows), "request_ids": [row["request_id"] for row in rows[:20]],
                "error": type(exc).__name__, "detail": str(exc)[:200], "spool": self.spool.path}})
            return [0] * len(rows)
        if self.spool.pending():
            written = self.spool.drain(lambda r: self._write(r, replay=True))
            if written:
                log.warning("spooled settlements written", extra={"fields": {"rows": written}})
        return costs

    def _cost(self, row: dict) -> int:
        usage = Usage(**{name: row.get(name, 0) for name in USAGE_FIELDS})  # spooled before an upgrade
        return self.prices.cost_nanos(row["upstream_model"] or row["model"], usage)

    def _prepared(self) -> tuple[str, str, tuple]:
        """The INSERT and the charge UPDATE as SQL text, built once: peewee's query builder
        costs more per row than the database does."""
        if self._statements is None:
            p = db.param

            def q(name: str) -> str:
                return f"{db.quote[0]}{name}{db.quote[1]}"

            columns = (*LOG_FIELDS, *USAGE_FIELDS, "cost_nanos", "created_at")
            converters = tuple(RequestLog._meta.fields[name].db_value for name in columns)
            insert = (f"INSERT INTO {q(RequestLog._meta.table_name)} "
                      f"({', '.join(q(RequestLog._meta.fields[c].column_name) for c in columns)}) "
                      f"VALUES ({', '.join([p] * len(columns))})")
            nanos, tokens = q(ApiKey.used_nanos.column_name), q(ApiKey.used_tokens.column_name)
            charge = (f"UPDATE {q(ApiKey._meta.table_name)} SET {nanos} = {nanos} + {p}, "
                      f"{tokens} = {tokens} + {p} WHERE {q(ApiKey.id.column_name)} = {p}")
            self._statements = (insert, charge, (columns, converters))
        return self._statements

    def _insert(self, rows: list[dict], costs: list[int]) -> None:
        with db.connection_context(), _write_transaction():
            self._execute(rows, costs)

    def _execute(self, rows: list[dict], costs: list[int]) -> None:
        """The rows and their charges, inside the caller's transaction."""
        insert, charge, (columns, converters) = self._prepared()
        values, charges = [], {}
        for row, cost in zip(rows, costs):
            row = {**USAGE_ZERO, **row, "cost_nanos": cost, "created_at": datetime.fromisoformat(row["created_at"])}
            values.append(tuple(conv(row.get(name)) for name, conv in zip(columns, converters)))
            tokens = sum(row.get(name, 0) for name in TOKEN_FIELDS)
            if row["key_id"] is not None and (cost or tokens):
                total = charges.setdefault(row["key_id"], [0, 0])
                total[0] += cost
                total[1] += tokens
        cursor = db.cursor()
        cursor.executemany(insert, values)
        if charges:  # in key order, so concurrent writers lock key rows in the same order
            cursor.executemany(charge, [(n, t, key_id) for key_id, (n, t) in sorted(charges.items())])

    def _write_one(self, row: dict) -> int:
        try:
            return self._write(row, replay=False)
        except Exception as exc:
            self.spool.add(row)
            log.error("settlement refused: spooled", extra={"fields": {
                "request_id": row["request_id"], "key_id": row["key_id"], "error": type(exc).__name__,
                "detail": str(exc)[:200], "spool": self.spool.path}})
            return 0

    def _write(self, row: dict, *, replay: bool) -> int:
        """One row in its own transaction. A replayed row already in the table is skipped,
        so a settlement is never charged twice."""
        cost = self._cost(row)
        with db.connection_context(), _write_transaction():
            if replay and RequestLog.select().where(RequestLog.request_id == row["request_id"]).exists():
                return cost
            self._execute([row], [cost])
        return cost
