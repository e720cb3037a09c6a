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
import functools
import hashlib
import json
import logging
import os
import stat
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Callable, Sequence

from peewee import DataError, IntegrityError, SqliteDatabase

from .. import periods
from ..config import ConfigError
from ..db import db
from ..models import ApiKey, RequestJournal, RequestLog, utcnow
from ..wire.usage import TOKEN_FIELDS, USAGE_FIELDS, Usage
from .journal import Sweeper
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
    affinity_pending: tuple[str, bool] | None = None  # a turn routed without a lookup: the writer records it
    usage_estimated: bool = False  # some counts are the relay's estimate (the upstream never sent them)
    metric_model: str = "-"  # the model as a metric label: known models only, "other" for the rest
    settled: bool = False
    cost_nanos: int = 0
    latency_ms: int = 0


USAGE_ZERO = dict.fromkeys(USAGE_FIELDS, 0)  # rows spooled by an older version lack the newer fields
LOG_FIELDS = ("request_id", "key_id", "channel_id", "model", "stream", "status", "error_type",
              "ttft_ms", "attempts", "client_disconnected", "latency_ms", "affinity", "usage_estimated")


class Spool:
    """Settlements the database refused, one JSON line each, until it takes them again.

    A local file (appends are serialised with flock across workers): it covers
    a database that is away for a moment; it is not a second database. It is
    opened without following links, in a folder only this user can enter, and
    every row read back is checked before it is written (a forged row must
    not refund a key).
    """

    def __init__(self, path: str):
        self.path = path
        self._lock = threading.Lock()

    def _open(self, flags: int):
        fd = os.open(self.path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        return os.fdopen(fd, "r+" if flags & os.O_RDWR else "a", encoding="utf-8")

    def add(self, row: dict) -> None:
        with self._lock, self._open(os.O_WRONLY | os.O_APPEND | os.O_CREAT) as fh:
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
            with self._open(os.O_RDWR) as fh:
                fcntl.flock(fh, fcntl.LOCK_EX)
                rows = [_parse_row(line) for line in fh if line.strip()]
                left: list[dict | str] = []  # a str: the reason a line is no row (_parse_row)
                done = 0
                for row in rows:
                    if left:
                        left.append(row)
                        continue
                    try:
                        if isinstance(row, str):
                            raise DataError(row)
                        write(row)
                        done += 1
                    except (IntegrityError, DataError) as exc:  # never storable: set aside, keep going
                        log.error("spooled settlement refused", extra={"fields": {
                            "request_id": row.get("request_id") if isinstance(row, dict) else None,
                            "reason": str(exc)[:200]}})
                        self._reject(row)
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

    def _reject(self, row) -> None:
        fd = os.open(self.path + ".rejected", os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "a", encoding="utf-8") as rejected:
            rejected.write((row if isinstance(row, str) else json.dumps(row, separators=(",", ":"))) + "\n")


_ROW_TYPES = {"request_id": str, "model": str, "stream": bool, "status": int, "attempts": int,
              "latency_ms": int, "client_disconnected": bool, "created_at": str}
_ROW_OPTIONAL = {"key_id": int, "channel_id": int, "error_type": str, "ttft_ms": int, "upstream_model": str,
                 "affinity": str}


def _parse_row(line: str) -> dict | str:
    """A spooled row, checked; the reason as a string when it is not one octorelay could have written."""
    try:
        row = json.loads(line)
    except ValueError:
        return "not JSON"
    if not isinstance(row, dict):
        return "not an object"
    for name, kind in _ROW_TYPES.items():
        if not isinstance(row.get(name), kind):
            return f"{name}: missing or not {kind.__name__}"
    for name, kind in _ROW_OPTIONAL.items():
        if row.get(name) is not None and not isinstance(row[name], kind):
            return f"{name}: not {kind.__name__}"
    for name in USAGE_FIELDS:
        value = row.get(name, 0)
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2 ** 53:
            return f"{name}: not a count"
    try:
        datetime.fromisoformat(row["created_at"])
    except ValueError:
        return "created_at: not a timestamp"
    return row


def spool_path(database_url: str, folder: str | None = None) -> str:
    """One spool file per database, in `folder` (OCTORELAY_SPOOL_DIR) or a private folder of
    this user's in the temp dir (a shared temp dir must not let others plant or read it)."""
    if folder is None:
        folder = os.path.join(tempfile.gettempdir(), f"octorelay-{os.getuid()}")
        private_folder(folder)
    digest = hashlib.sha256(database_url.encode()).hexdigest()[:12]
    return os.path.join(folder, f"octorelay-settlements-{digest}.jsonl")


def private_folder(folder: str) -> None:
    """Create `folder` 0700, or accept it only if it is a real folder of ours that no one else
    can write to."""
    try:
        os.mkdir(folder, 0o700)
    except FileExistsError:
        pass
    st = os.lstat(folder)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o022:
        raise ConfigError(f"the settlement spool folder {folder} is not a private folder of this user "
                          "(set OCTORELAY_SPOOL_DIR to one)")


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
        self.writer = SettlementWriter(self.write_batch)
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
        if self.spool.pending():
            written = self.spool.drain(lambda r: self._write(r, replay=True))
            if written:
                log.warning("spooled settlements written", extra={"fields": {"rows": written}})
        return costs

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
