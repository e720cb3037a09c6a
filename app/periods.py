"""Budget periods: which UTC day, week or month a moment falls in, and when the next one starts.

A key with a `budget_period` counts `used_nanos` and `used_tokens` from its
`period_start`. No timer zeroes them: once the period they count has ended
they are stale and read as 0 (admission, the admin view), and the first
charge of the new period replaces them in the same conditional UPDATE that
adds it (accounting.Ledger). So a reset is never a read-modify-write, and a
charge always lands in the period of its log row's `created_at`.
"""
from __future__ import annotations

from datetime import datetime, timedelta

PERIODS = ("day", "week", "month")  # weeks start on Monday (ISO 8601)


def period_start(period: str, at: datetime) -> datetime:
    """The start (naive UTC) of the `period` that contains `at` (naive UTC)."""
    day = at.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "day":
        return day
    if period == "week":
        return day - timedelta(days=day.weekday())
    if period == "month":
        return day.replace(day=1)
    raise ValueError(f"unknown budget period {period!r}")


def next_start(period: str, start: datetime) -> datetime:
    """The start of the period after the one starting at `start`."""
    if period == "day":
        return start + timedelta(days=1)
    if period == "week":
        return start + timedelta(days=7)
    if period == "month":
        return start.replace(year=start.year + start.month // 12, month=start.month % 12 + 1)
    raise ValueError(f"unknown budget period {period!r}")


def starts_at(at: datetime) -> tuple[datetime, datetime, datetime]:
    """The day, week and month starts for `at`: the charge UPDATE picks one by the key's period."""
    return period_start("day", at), period_start("week", at), period_start("month", at)


def current_usage(period: str | None, stored_start: datetime | None, used_nanos: int, used_tokens: int,
                  now: datetime) -> tuple[int, int]:
    """The totals as of `now`: the stored ones, or 0 once the period they count has ended."""
    if period is None or (stored_start is not None and stored_start >= period_start(period, now)):
        return used_nanos, used_tokens
    return 0, 0


def resets_at(period: str | None, now: datetime) -> datetime | None:
    """When the totals next start again from 0 (None: never)."""
    return None if period is None else next_start(period, period_start(period, now))
