"""The read side of accounting: usage reports and the recent request log.

Sums are done in SQL (GROUP BY) on integer columns, so money stays exact:
nano-dollars are summed as integers and converted to USD once per row.
The same queries run on SQLite and PostgreSQL.
"""
from __future__ import annotations

from datetime import date, datetime

from peewee import ColumnBase, fn

from ..errors import InvalidRequest
from ..models import RequestLog, dict_rows
from ..timefmt import iso
from ..wire.usage import USAGE_FIELDS
from .keys import nanos_to_usd

TOKEN_FIELDS = USAGE_FIELDS  # the four token counts, the 1-hour part of cache writes, web searches

LOG_FIELDS = ("request_id", "key_id", "channel_id", "model", "stream", "status", "error_type",
              *TOKEN_FIELDS, "cost_usd", "latency_ms", "ttft_ms", "attempts",
              "client_disconnected", "affinity", "usage_estimated", "created_at")

# group_by name -> (output field, SQL expression). `date(ts)` exists on both
# backends: SQLite answers 'YYYY-MM-DD', PostgreSQL a date (normalised below).
_GROUPS: dict[str, tuple[str, ColumnBase]] = {  # name -> (output field, SQL expression)
    "key": ("key_id", RequestLog.key_id),
    "model": ("model", RequestLog.model),
    "channel": ("channel_id", RequestLog.channel_id),
    "day": ("day", fn.date(RequestLog.created_at)),
}
GROUP_COLUMNS = {name: column for name, (column, _) in _GROUPS.items()}


# usage -----------------------------------------------------------------------

def _day(value) -> str | None:
    if isinstance(value, datetime):
        return value.date().isoformat()
    if isinstance(value, date):
        return value.isoformat()
    return None if value is None else str(value)[:10]


def usage_report(key_id: int | None = None, model: str | None = None,
                 since: datetime | None = None, until: datetime | None = None,
                 group_by=()) -> list[dict]:
    """Totals of the request log, optionally grouped; `since` inclusive, `until` exclusive.

    Rows carry the group fields (in the order of `group_by`), then `requests`,
    the usage counts and `cost_usd`; ordered by the group fields, nulls
    last. Without `group_by`, exactly one row (zeros when nothing matched).
    """
    groups = []
    for name in group_by or ():
        if name not in _GROUPS:
            raise InvalidRequest(f"group_by: unknown field {name!r} (allowed: {', '.join(_GROUPS)})")
        if name not in groups:
            groups.append(name)

    group_exprs = [_GROUPS[name][1].alias(f"g_{name}") for name in groups]
    sums = [fn.COALESCE(fn.SUM(getattr(RequestLog, f)), 0).alias(f) for f in TOKEN_FIELDS]
    query = (RequestLog
             .select(*group_exprs, fn.COUNT(RequestLog.id).alias("requests"), *sums,
                     fn.COALESCE(fn.SUM(RequestLog.cost_nanos), 0).alias("cost_nanos")))
    conditions = _filters(key_id, model, since, until)
    if conditions:
        query = query.where(*conditions)
    if groups:
        exprs = [_GROUPS[name][1] for name in groups]
        query = query.group_by(*exprs).order_by(*[e.asc(nulls="last") for e in exprs])

    rows = []
    for row in dict_rows(query):
        out = {}
        for name in groups:
            field = _GROUPS[name][0]
            value = row[f"g_{name}"]
            out[field] = _day(value) if name == "day" else value
        out["requests"] = int(row["requests"] or 0)
        for f in TOKEN_FIELDS:
            out[f] = int(row[f] or 0)
        out["cost_usd"] = nanos_to_usd(int(row["cost_nanos"] or 0))
        rows.append(out)
    return rows


def _filters(key_id, model, since, until) -> list:
    conditions = []
    if key_id is not None:
        conditions.append(RequestLog.key_id == key_id)
    if model is not None:
        conditions.append(RequestLog.model == model)
    if since is not None:
        conditions.append(RequestLog.created_at >= since)
    if until is not None:
        conditions.append(RequestLog.created_at < until)
    return conditions


# logs ------------------------------------------------------------------------

def serialize_log(row: RequestLog) -> dict:
    """The admin API's view of one request: numbers and outcome only, never text or secrets."""
    return {
        "request_id": row.request_id,
        "key_id": row.key_id,
        "channel_id": row.channel_id,
        "model": row.model,
        "stream": bool(row.stream),
        "status": row.status,
        "error_type": row.error_type,
        "input_tokens": row.input_tokens,
        "output_tokens": row.output_tokens,
        "cache_creation_input_tokens": row.cache_creation_input_tokens,
        "cache_read_input_tokens": row.cache_read_input_tokens,
        "cache_creation_1h_input_tokens": row.cache_creation_1h_input_tokens,
        "web_search_requests": row.web_search_requests,
        "cost_usd": nanos_to_usd(row.cost_nanos or 0),
        "latency_ms": row.latency_ms,
        "ttft_ms": row.ttft_ms,
        "attempts": row.attempts,
        "client_disconnected": bool(row.client_disconnected),
        "affinity": row.affinity,
        "usage_estimated": bool(row.usage_estimated),
        "created_at": iso(row.created_at),
    }


def recent_logs(key_id: int | None = None, limit: int = 50, since: datetime | None = None,
                until: datetime | None = None, before_id: str | None = None) -> list[dict]:
    """The newest `limit` requests (optionally of one key, in [since, until)), newest first."""
    return log_page(key_id, limit, since, until, before_id)["data"]


def log_page(key_id: int | None = None, limit: int = 50, since: datetime | None = None,
             until: datetime | None = None, before_id: str | None = None) -> dict:
    """One page of the request log, newest first: `{data, has_more, first_id, last_id}`.

    Keyset paging: `before_id` is the `request_id` of the last row of the page
    before (its `last_id`); the next page starts strictly after it in the order
    (created_at desc, id desc), so rows written meanwhile never shift a page.
    """
    conditions = _filters(key_id, None, since, until)
    if before_id is not None:
        anchor = (RequestLog.select(RequestLog.id, RequestLog.created_at)
                  .where(RequestLog.request_id == before_id).first())
        if anchor is None:
            raise InvalidRequest(f"before_id: no request {before_id!r} in the log")
        conditions.append((RequestLog.created_at < anchor.created_at)
                          | ((RequestLog.created_at == anchor.created_at) & (RequestLog.id < anchor.id)))
    query = RequestLog.select()
    if conditions:
        query = query.where(*conditions)
    rows = list(query.order_by(RequestLog.created_at.desc(), RequestLog.id.desc()).limit(int(limit) + 1))
    page = [serialize_log(row) for row in rows[:int(limit)]]
    return {"data": page, "has_more": len(rows) > int(limit),
            "first_id": page[0]["request_id"] if page else None,
            "last_id": page[-1]["request_id"] if page else None}
