"""Model prices: USD per million tokens at the API, whole micro-dollars in the DB."""
from __future__ import annotations

from datetime import timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from peewee import fn

from ..errors import NotFound
from ..models import ModelPrice, RequestLog, dict_rows, utcnow
from ..timefmt import iso
from .changes import announce
from .pricing import Price, PriceTable

BASE_FIELDS = ("input", "output", "cache_write", "cache_read")
TIER_FIELDS = ("input", "output", "cache_write", "cache_write_1h", "cache_read")
MICROS = 1_000_000
UNPRICED_WINDOW = timedelta(days=30)
UNPRICED_MAX = 100


def _to_micros(usd_per_mtok) -> int:
    return int((Decimal(str(usd_per_mtok)) * MICROS).to_integral_value(ROUND_HALF_UP))


def _usd(micros: int | None) -> float | None:
    return None if micros is None else float(Decimal(micros) / MICROS)


def serialize(price: ModelPrice) -> dict:
    """The admin API's view; `cache_write_1h` is the rate that applies (2 x input when not set)."""
    effective = Price.of(price)
    out: dict[str, Any] = {"model": price.model}
    for name in ("input", "output", "cache_write", "cache_write_1h", "cache_read"):
        out[name] = _usd(getattr(effective.rates, name))
    out["web_search_per_1k"] = _usd(price.web_search_per_1k)
    out["long_context"] = None
    if effective.long_context is not None:
        threshold, rates = effective.long_context
        out["long_context"] = {"threshold_tokens": threshold,
                               **{name: _usd(getattr(rates, name)) for name in TIER_FIELDS}}
    return out


def list_prices() -> list[ModelPrice]:
    return list(ModelPrice.select().order_by(ModelPrice.model))


def put_price(model: str, fields: dict) -> tuple[ModelPrice, bool]:
    """Create or replace the price of `model` (a name or a glob); returns (row, created).
    In force for the next request on every worker (services/changes.py)."""
    columns: dict[str, Any] = {name: _to_micros(fields[name]) for name in BASE_FIELDS}
    one_hour = fields.get("cache_write_1h")
    columns["cache_write_1h"] = None if one_hour is None else _to_micros(one_hour)
    search = fields.get("web_search_per_1k")
    columns["web_search_per_1k"] = None if search is None else _to_micros(search)
    tier = fields.get("long_context")
    columns["long_context"] = None if tier is None else {
        "threshold_tokens": tier["threshold_tokens"],
        **{name: _to_micros(tier[name]) for name in TIER_FIELDS if tier.get(name) is not None}}
    columns["updated_at"] = utcnow()
    created = not ModelPrice.select().where(ModelPrice.model == model).exists()
    (ModelPrice.insert(model=model, **columns)
     .on_conflict(conflict_target=[ModelPrice.model], update=columns)
     .execute())
    announce()
    return ModelPrice.get(ModelPrice.model == model), created


def delete_price(model: str) -> None:
    """Remove the price of `model` (its exact name or glob as stored); 404 when there is none.
    In force for the next request on every worker: the model then bills by the next matching glob."""
    if not ModelPrice.delete().where(ModelPrice.model == model).execute():
        raise NotFound(f"no price for {model!r}")
    announce()


def unpriced_models() -> list[dict]:
    """Models relayed at cost 0 in the last 30 days that no price matches: the dashboard flags
    them. (A model whose model_map target has no price shows under the client's name.)"""
    table = PriceTable(Price.of(row) for row in ModelPrice.select())
    tokens = RequestLog.input_tokens + RequestLog.output_tokens
    rows = dict_rows(RequestLog
            .select(RequestLog.model, fn.COUNT(RequestLog.id).alias("requests"),
                    fn.MAX(RequestLog.created_at).alias("last_seen"))
            .where((RequestLog.created_at >= utcnow() - UNPRICED_WINDOW) & RequestLog.channel_id.is_null(False)
                   & (RequestLog.cost_nanos == 0) & (tokens > 0))
            .group_by(RequestLog.model))
    out = [{"model": r["model"], "requests": r["requests"], "last_seen": iso(_as_datetime(r["last_seen"]))}
           for r in rows if table.lookup(r["model"]) is None]
    out.sort(key=lambda r: (-r["requests"], r["model"]))
    return out[:UNPRICED_MAX]


def _as_datetime(value):
    """SQLite hands MAX(created_at) back as text."""
    if isinstance(value, str):
        from datetime import datetime

        return datetime.fromisoformat(value)
    return value
