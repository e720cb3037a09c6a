"""What a request cost, and writing it down: one log row and one atomic charge per request.

Cost is computed in integers: tokens x micro-dollars per million tokens is
pico-dollars, rounded once to the nano-dollars the DB stores, so log rows
and key totals always add up exactly. Settlements are written after the
response by a background writer (services/writer.py), batched; one the
database refuses (it is down for a moment) is spooled to a local file
(services/spool.py) and written later.
"""
from __future__ import annotations

import functools
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Callable, Sequence

from peewee import DataError, IntegrityError, SqliteDatabase

from .. import periods
from ..db import db
from ..models import ApiKey, RequestJournal, RequestLog, utcnow
from ..wire.usage import TOKEN_FIELDS, USAGE_FIELDS, Usage
from .journal import Sweeper
from .pricing import PriceBook
from .spool import Spool
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
    affinity_pending: tuple[str, bool] | None = None  # a turn routed without a lookup: the writer records it
    usage_estimated: bool = False  # some counts are the relay's estimate (the upstream never sent them)
    metric_model: str = "-"  # the model as a metric label: known models only, "other" for the rest
    settled: bool = False
    cost_nanos: int = 0
    latency_ms: int = 0


USAGE_ZERO = dict.fromkeys(USAGE_FIELDS, 0)  # rows spooled by an older version lack the newer fields
LOG_FIELDS = ("request_id", "key_id", "channel_id", "model", "stream", "status", "error_type",
              "ttft_ms", "attempts", "client_disconnected", "latency_ms", "affinity", "usage_estimated")


def _charge_sql(q, p) -> str:
    """The atomic charge of one key: `used = used + n`, in the budget period (app/periods.py)
    of the rows' `created_at`. A key whose period has ended since its last charge starts again
    from this charge (the reset and the charge are one UPDATE, so concurrent writers on every
    instance agree); a row of a period that has already ended (written late, or by an instance
    whose clock is behind) is logged but no longer counts against the key."""
    period, start = q(ApiKey.budget_period.column_name), q(ApiKey.period_start.column_name)
    current = f"(CASE {period} WHEN 'day' THEN {p} WHEN 'week' THEN {p} WHEN 'month' THEN {p} END)"
    ended = f"({period} IS NOT NULL AND ({start} IS NULL OR {start} < {current}))"
    earlier = f"({start} > {current})"  # null (false) for a key without a period
    sets = [f"{col} = CASE WHEN {ended} THEN {p} WHEN {earlier} THEN {col} ELSE {col} + {p} END"
            for col in (q(ApiKey.used_nanos.column_name), q(ApiKey.used_tokens.column_name))]
    sets.append(f"{start} = CASE WHEN {ended} THEN {current} ELSE {start} END")
    return f"UPDATE {q(ApiKey._meta.table_name)} SET {', '.join(sets)} WHERE {q(ApiKey.id.column_name)} = {p}"


def _charge_params(key_id: int, day: datetime, nanos: int, tokens: int) -> tuple:
    """The parameters of _charge_sql, in order, for rows created on `day` (UTC)."""
    starts = _period_starts(day, isinstance(db.obj, SqliteDatabase))
    # each used_* column: ended? -> n; earlier? -> unchanged; else + n.  period_start: ended? -> current
    return (*starts, nanos, *starts, nanos, *starts, tokens, *starts, tokens, *starts, *starts, key_id)


@functools.lru_cache(maxsize=64)
def _period_starts(day: datetime, as_text: bool) -> tuple:
    """The day, week and month starts of `day`, as the driver stores them: sqlite3 writes a
    datetime as `isoformat(" ")`; doing that once here, not for 15 parameters of every charge,
    keeps the period-aware charge near the plain one's cost (measured: 28 us -> 3 us)."""
    starts = periods.starts_at(day)
    return tuple(s.isoformat(" ") for s in starts) if as_text else starts


def _storable(text: str) -> str:
    return text.replace("\x00", "\ufffd")[:200]


def _write_transaction():
    """SQLite: take the write lock up front (BEGIN IMMEDIATE), so a busy database waits out
    its busy_timeout; a deferred transaction that must upgrade to writing fails at once."""
    if isinstance(db.obj, SqliteDatabase):
        return db.atomic(lock_type="IMMEDIATE")
    return db.atomic()


JOURNAL_COLUMNS = ("request_id", "key_id", "model", "stream", "worker", "reservation_nanos", "started_at")
JOURNAL_CHUNK = 100  # journal entries per statement: 700 parameters, within every driver's limit
LOG_CHUNK = 100  # log rows per INSERT on PostgreSQL: ~3,000 parameters of its 65,535


def _chunks(items: list, size: int):
    for start in range(0, len(items), size):
        yield items[start:start + size]


class Ledger:
    """Writes each request's log row and charge, after the response, in batches; spools them
    while the database is away."""

    def __init__(self, prices: PriceBook, spool: Spool):
        self.prices = prices
        self.spool = spool
        self._statements: tuple[str, str, str, tuple] | None = None
        self.writer = SettlementWriter(self.write_batch, on_idle=self.replay_spool)
        self._journaled: set[str] = set()  # journal entries committed and not settled yet (writer thread only)
        self.sweeper = Sweeper(self)
        self.clock = utcnow  # naive UTC now: a row's created_at, hence its budget period (tests inject one)
        # turns routed without an affinity lookup -> their outcomes (Relay wires Affinity.record in)
        self.record_affinity: Callable[[list[tuple[tuple[str, bool], int]]], list[str]] | None = None

    def settle(self, record: RequestRecord, done: Callable[[int], None] | None = None) -> None:
        """Queue the request's row and charge; `done(cost_nanos)` runs once they are committed
        (or spooled). Runs at the end of every routed request, streams included. Never raises."""
        record.settled = True
        record.latency_ms = int((time.perf_counter() - record.started) * 1000)
        row = {name: getattr(record, name) for name in LOG_FIELDS}
        row["model"] = _storable(record.model)  # any string a client sent must fit the column
        row.update(upstream_model=record.upstream_model, created_at=self.clock().isoformat(),
                   **{name: getattr(record.usage, name) for name in USAGE_FIELDS})
        if record.affinity_pending is not None:
            row["affinity_pending"] = record.affinity_pending
        self.writer.submit(row, done)

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until every settlement queued so far is committed (or spooled)."""
        return self.writer.flush(timeout)

    def close(self) -> None:
        self.sweeper.close()
        self.writer.close()

    def journal(self, record: RequestRecord, reservation_nanos: int, worker: str) -> None:
        """Note an admitted request before it goes upstream (services/journal.py): a worker that dies
        mid-request still leaves a row and a charge. Written with the next batch; a request that
        ends within the same batch never touches the journal table at all."""
        self.sweeper.ensure_started()
        self.writer.submit({"journal": True, "request_id": record.request_id, "key_id": record.key_id,
                            "model": _storable(record.model), "stream": int(record.stream), "worker": worker,
                            "reservation_nanos": reservation_nanos, "started_at": utcnow()})

    def write_batch(self, rows: list[dict]) -> list[int]:
        """Rows and charges in one transaction; returns each row's cost (0 when spooled).
        Journal entries ride along in the same transaction (never spooled: best effort)."""
        self._record_affinity(rows)
        journal = [row for row in rows if row.get("journal")]
        settled = [row for row in rows if not row.get("journal")] if journal else rows
        costs = self._write_settlements(settled, journal)
        if not journal:
            return costs
        out = iter(costs)
        return [0 if row.get("journal") else next(out) for row in rows]

    def _record_affinity(self, rows: list[dict]) -> None:
        """Turns routed without a lookup get their affinity outcome here, in one store call for
        the batch (services/affinity.py); the row keeps only the outcome."""
        pending = [row for row in rows if "affinity_pending" in row]
        if not pending:
            return
        turns = [(row.pop("affinity_pending"), row["channel_id"]) for row in pending]
        if self.record_affinity is None:
            return
        try:
            outcomes = self.record_affinity(turns)
        except Exception:  # a bug, not an outage (the store's failures are handled there): rows go on
            log.exception("affinity outcomes failed")
            return
        for row, result in zip(pending, outcomes, strict=True):
            row["affinity"] = result

    def _write_settlements(self, rows: list[dict], journal: list[dict]) -> list[int]:
        try:
            costs = [self._cost(row) for row in rows]  # may reload prices: inside the try
            self._insert(rows, costs, journal)
        except (IntegrityError, DataError):  # one unstorable row must not sink the others
            costs = [self._write_one(row) for row in rows]
        except Exception as exc:
            for row in rows:
                self.spool.add(row)
            log.error("database unavailable: settlements spooled", extra={"fields": {
                "rows": len(rows), "request_ids": [row["request_id"] for row in rows[:20]],
                "journal_entries_dropped": len(journal),
                "error": type(exc).__name__, "detail": str(exc)[:200], "spool": self.spool.path}})
            return [0] * len(rows)
        self.replay_spool()
        return costs

    def replay_spool(self) -> None:
        """Write what was spooled while the database was away: after each batch that went through,
        and when the writer is idle (so a quiet worker's rows do not wait for its next request).
        Writer thread only."""
        if self.spool.pending():
            written = self.spool.drain(lambda r: self._write(r, replay=True))
            if written:
                log.warning("spooled settlements written", extra={"fields": {"rows": written}})

    def _journal_writes(self, journal: Sequence[dict], settled: list[dict]) -> None:
        """Inside the batch's transaction: forget the settled requests' entries written by earlier
        batches, add the entries of requests still running. One statement per JOURNAL_CHUNK
        entries (not one per entry: psycopg2's executemany is a round trip per row), so a burst
        costs the writer a few statements, however many requests it brings."""
        settled_ids = {row["request_id"] for row in settled}
        gone = sorted(rid for rid in settled_ids if rid in self._journaled)
        fresh = [row for row in journal if row["request_id"] not in settled_ids]
        cursor = db.cursor()
        p = db.param
        for chunk in _chunks(gone, JOURNAL_CHUNK):
            cursor.execute(f"DELETE FROM request_journal WHERE request_id IN ({', '.join([p] * len(chunk))})", chunk)
        one = f"({', '.join([p] * len(JOURNAL_COLUMNS))})"
        started_at = RequestJournal.started_at.db_value
        for chunk in _chunks(fresh, JOURNAL_CHUNK):
            cursor.execute(
                f"INSERT INTO request_journal ({', '.join(JOURNAL_COLUMNS)}) VALUES {', '.join([one] * len(chunk))}",
                [value for r in chunk for value in (
                    r["request_id"], r["key_id"], r["model"], r["stream"], r["worker"], r["reservation_nanos"],
                    started_at(r["started_at"]))])

    def settle_orphan(self, entry: RequestJournal) -> bool:
        """A request whose worker died: one row (status 500, `orphaned`), charged its reservation.
        Whoever deletes the journal entry settles it, so two sweepers never both do."""
        row = {"request_id": entry.request_id, "key_id": entry.key_id, "channel_id": None, "model": entry.model,
               "stream": bool(entry.stream), "status": 500, "error_type": "orphaned", "ttft_ms": None,
               "attempts": 0, "client_disconnected": False, "latency_ms": 0, "upstream_model": None,
               "created_at": entry.started_at.isoformat()}
        with db.connection_context(), _write_transaction():
            if not RequestJournal.delete().where(RequestJournal.request_id == entry.request_id).execute():
                return False
            if RequestLog.select().where(RequestLog.request_id == entry.request_id).exists():
                return False  # settled after all (its row came through the spool)
            self._execute([row], [entry.reservation_nanos])
        return True

    def _cost(self, row: dict) -> int:
        usage = Usage(**{name: row.get(name, 0) for name in USAGE_FIELDS})  # spooled before an upgrade
        return self.prices.cost_nanos(row["upstream_model"] or row["model"], usage)

    def _prepared(self) -> tuple[str, str, str, tuple]:
        """The INSERT (up to VALUES, and one row's group) and the charge UPDATE as SQL text, built
        once: peewee's query builder costs more per row than the database does."""
        if self._statements is None:
            p = db.param

            def q(name: str) -> str:
                return f"{db.quote[0]}{name}{db.quote[1]}"

            columns = (*LOG_FIELDS, *USAGE_FIELDS, "cost_nanos", "created_at")
            converters = tuple(RequestLog._meta.fields[name].db_value for name in columns)
            insert = (f"INSERT INTO {q(RequestLog._meta.table_name)} "
                      f"({', '.join(q(RequestLog._meta.fields[c].column_name) for c in columns)}) VALUES ")
            group = f"({', '.join([p] * len(columns))})"
            charge = _charge_sql(q, p)
            self._statements = (insert, group, charge, (columns, converters))
        return self._statements

    def _insert(self, rows: list[dict], costs: list[int], journal: Sequence[dict] = ()) -> None:
        with db.connection_context(), _write_transaction():
            self._execute(rows, costs)
            if journal or self._journaled:
                self._journal_writes(journal, rows)
        settled_ids = {row["request_id"] for row in rows}
        self._journaled.difference_update(settled_ids)
        self._journaled.update(row["request_id"] for row in journal if row["request_id"] not in settled_ids)

    def _execute(self, rows: list[dict], costs: list[int]) -> None:
        """The rows and their charges, inside the caller's transaction."""
        insert, group, charge, (columns, converters) = self._prepared()
        values: list[tuple] = []
        charges: dict[tuple[int, datetime], list[int]] = {}
        for row, cost in zip(rows, costs, strict=True):
            row = {**USAGE_ZERO, "usage_estimated": False, **row, "cost_nanos": cost,
                   "created_at": datetime.fromisoformat(row["created_at"])}
            values.append(tuple(conv(row.get(name)) for name, conv in zip(columns, converters, strict=True)))
            tokens = sum(row.get(name, 0) for name in TOKEN_FIELDS)
            if row["key_id"] is not None and (cost or tokens):
                day = row["created_at"].replace(hour=0, minute=0, second=0, microsecond=0)
                total = charges.setdefault((row["key_id"], day), [0, 0])  # a batch may span a period's end
                total[0] += cost
                total[1] += tokens
        cursor = db.cursor()
        if isinstance(db.obj, SqliteDatabase):  # in process: executemany is one call
            cursor.executemany(insert + group, values)
        else:  # psycopg2's executemany is a round trip per row: LOG_CHUNK rows per statement instead
            for chunk in _chunks(values, LOG_CHUNK):
                cursor.execute(insert + ", ".join([group] * len(chunk)), [value for row in chunk for value in row])
        if charges:  # in key order, so concurrent writers lock key rows in the same order
            cursor.executemany(charge, [_charge_params(key_id, day, n, t)
                                        for (key_id, day), (n, t) in sorted(charges.items())])

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
            RequestJournal.delete().where(RequestJournal.request_id == row["request_id"]).execute()
            if replay and RequestLog.select().where(RequestLog.request_id == row["request_id"]).exists():
                return cost
            self._execute([row], [cost])
        self._journaled.discard(row["request_id"])
        return cost
