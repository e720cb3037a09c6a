"""Model prices: USD per million tokens at the API, whole micro-dollars in the DB."""
from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

from ..models import ModelPrice, utcnow

PRICE_FIELDS = ("input", "output", "cache_write", "cache_read")
MICROS = 1_000_000


def _to_micros(usd_per_mtok) -> int:
    return int((Decimal(str(usd_per_mtok)) * MICROS).to_integral_value(ROUND_HALF_UP))


def serialize(price: ModelPrice) -> dict:
    out = {"model": price.model}
    for name in PRICE_FIELDS:
        out[name] = float(Decimal(getattr(price, name)) / MICROS)
    return out


def list_prices() -> list[ModelPrice]:
    return list(ModelPrice.select().order_by(ModelPrice.model))


def put_price(model: str, fields: dict) -> tuple[ModelPrice, bool]:
    """Create or replace the price of `model`; returns (row, created)."""
    columns = {name: _to_micros(fields[name]) for name in PRICE_FIELDS}
    columns["updated_at"] = utcnow()
    created = not ModelPrice.select().where(ModelPrice.model == model).exists()
    (ModelPrice.insert(model=model, **columns)
     .on_conflict(conflict_target=[ModelPrice.model], update=columns)
     .execute())
    return ModelPrice.get(ModelPrice.model == model), created
