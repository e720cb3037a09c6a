"""API keys: minting, hashing, and admin operations (create, update, revoke, show).

Only the SHA-256 of a key is stored: keys carry 256 random bits, so a fast
hash is safe, and lookups by hash need no per-key salt.
"""
from __future__ import annotations

import hashlib
import secrets
from decimal import ROUND_HALF_UP, Decimal

from ..db import db
from ..errors import InvalidRequest, NotFound
from ..models import ApiKey, utcnow
from ..periods import current_usage, period_start, resets_at
from ..timefmt import iso
from .changes import announce

KEY_PREFIX = "sk-octo-"
NANOS_PER_USD = 1_000_000_000


def hash_key(raw: str) -> str:
    return hashlib.sha256(raw.encode("utf-8", "surrogatepass")).hexdigest()


def mint_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def usd_to_nanos(usd) -> int:
    return int((Decimal(str(usd)) * NANOS_PER_USD).to_integral_value(ROUND_HALF_UP))


def nanos_to_usd(nanos: int | None) -> float | None:
    return None if nanos is None else float(Decimal(nanos) / NANOS_PER_USD)


def format_usd(nanos: int) -> str:
    """Exact dollars for messages: at least cents, every further digit the amount has
    ($5.00, $0.0005, $1.234567891), never rounded to "$0.00"."""
    amount = Decimal(nanos) / NANOS_PER_USD
    text = format(amount.quantize(Decimal(1).scaleb(-9)).normalize(), "f")
    whole, _, cents = text.partition(".")
    return f"${whole}.{cents.ljust(2, '0')}"


def key_status(key: ApiKey, now=None) -> str:
    now = now or utcnow()
    if key.revoked_at is not None:
        return "revoked"
    if not key.enabled:
        return "disabled"
    if key.expires_at is not None and key.expires_at <= now:
        return "expired"
    return "active"


def serialize(key: ApiKey, now=None) -> dict:
    """The admin API's view of a key: every field, never the secret or its hash. With a budget
    period, the totals are this period's (0 once it has ended, before the next charge)."""
    now = now or utcnow()
    used_nanos, used_tokens = current_usage(key.budget_period, key.period_start, key.used_nanos,
                                            key.used_tokens, now)
    return {
        "id": key.id,
        "name": key.name,
        "key_prefix": key.key_prefix,
        "status": key_status(key),
        "enabled": key.enabled,
        "models": list(key.models or []),
        "budget_usd": nanos_to_usd(key.budget_nanos),
        "budget_period": key.budget_period,
        "budget_resets_at": iso(resets_at(key.budget_period, now)),
        "used_usd": nanos_to_usd(used_nanos),
        "token_quota": key.token_quota,
        "used_tokens": used_tokens,
        "rpm": key.rpm,
        "tpm": key.tpm,
        "max_concurrency": key.max_concurrency,
        "expires_at": iso(key.expires_at),
        "revoked_at": iso(key.revoked_at),
        "created_at": iso(key.created_at),
        "updated_at": iso(key.updated_at),
    }


def _columns(fields: dict) -> dict:
    """Map validated API fields onto columns (USD -> nanos)."""
    out = dict(fields)
    if "budget_usd" in out:
        budget = out.pop("budget_usd")
        out["budget_nanos"] = None if budget is None else usd_to_nanos(budget)
    if "models" in out and out["models"] is None:
        out["models"] = []
    return out


def create_key(fields: dict) -> tuple[ApiKey, str]:
    """Create a key; returns the row and the plaintext, which is never seen again."""
    raw = mint_key()
    columns = _columns(fields)
    if columns.get("budget_period"):
        columns["period_start"] = period_start(columns["budget_period"], utcnow())
    key = ApiKey.create(key_hash=hash_key(raw), key_prefix=raw[:12], **columns)
    announce()
    return key, raw


def get_key(key_id: int) -> ApiKey:
    key = ApiKey.get_or_none(ApiKey.id == key_id) if 0 < key_id < 2 ** 63 else None
    if key is None:
        raise NotFound(f"no key with id {key_id}")
    return key


def list_keys() -> list[ApiKey]:
    return list(ApiKey.select().order_by(ApiKey.id))


def update_key(key_id: int, fields: dict) -> ApiKey:
    key = get_key(key_id)
    if key.revoked_at is not None:
        raise InvalidRequest(f"key {key_id} is revoked and cannot be changed")
    columns = _columns(fields)
    if columns.get("budget_period", key.budget_period) == key.budget_period:
        columns.pop("budget_period", None)  # unchanged: the period keeps running
    if columns:
        now = columns["updated_at"] = utcnow()
        with db.atomic():
            if "budget_period" in columns:
                _end_stale_period(key, now)
                columns["period_start"] = columns["budget_period"] and period_start(columns["budget_period"], now)
            ApiKey.update(**columns).where(ApiKey.id == key_id).execute()
        announce()
    return get_key(key_id)


def _end_stale_period(key: ApiKey, now) -> None:
    """Before a key's budget period changes: if its current period has ended, its totals are
    stale and are zeroed first (conditionally: a charge may be landing at the same moment), so
    that the new period never revives them. What was used in the current period stays, and
    counts until the new period's next start: changing the period is no way to refill a key."""
    if key.budget_period is None:
        return
    start = period_start(key.budget_period, now)
    ApiKey.update(used_nanos=0, used_tokens=0, period_start=start).where(
        (ApiKey.id == key.id) & (ApiKey.budget_period == key.budget_period)
        & (ApiKey.period_start.is_null() | (ApiKey.period_start < start))).execute()


def revoke_key(key_id: int) -> ApiKey:
    key = get_key(key_id)
    if key.revoked_at is None:
        now = utcnow()
        ApiKey.update(revoked_at=now, updated_at=now).where(ApiKey.id == key_id).execute()
        announce()
    return get_key(key_id)
