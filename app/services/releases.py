"""When each Claude model was released: the `created_at` and newest-first order of `/v1/models`.

Anthropic's model list gives each model its release date and lists the newest
first; octorelay cannot ask it (a relay may have no Anthropic channel), so the
dates live here. Add a row when a model ships. A snapshot name not listed
here (`claude-…-20270101`) is dated by its own suffix; any other name has no
known date (the catalog lists it after the dated ones).
"""
from __future__ import annotations

import re
from datetime import datetime

# (release date, the id Anthropic lists, then the aliases that name the same model)
RELEASES = (
    # platform.claude.com model pages, read 2026-12-06; (*) from model catalogs that track Anthropic's
    # launches (sim.ai, runware.ai), where the model's own page did not give the day
    ("2026-11-09", "claude-fable-5-2"),       # (*)
    ("2026-11-09", "claude-mythos-5-2"),      # (*) launched with Fable 5.2
    ("2026-10-07", "claude-haiku-5-5"),
    ("2026-09-28", "claude-sonnet-5-5"),      # (*)
    ("2026-09-22", "claude-opus-5-5"),        # (*)
    ("2026-09-01", "claude-fable-5-1"),
    ("2026-09-01", "claude-mythos-5-1"),      # announced with Fable 5.1
    ("2026-07-24", "claude-opus-5"),
    ("2026-06-30", "claude-sonnet-5"),
    ("2026-06-09", "claude-fable-5"),
    ("2026-06-09", "claude-mythos-5"),
    ("2026-05-28", "claude-opus-4-8"),
    ("2026-04-16", "claude-opus-4-7"),
    ("2026-02-17", "claude-sonnet-4-6"),
    ("2026-02-05", "claude-opus-4-6"),
    ("2025-11-24", "claude-opus-4-5-20251101", "claude-opus-4-5"),
    ("2025-10-15", "claude-haiku-4-5-20251001", "claude-haiku-4-5"),
    ("2025-09-29", "claude-sonnet-4-5-20250929", "claude-sonnet-4-5"),
    ("2025-08-05", "claude-opus-4-1-20250805", "claude-opus-4-1"),
    ("2025-05-22", "claude-opus-4-20250514", "claude-opus-4-0"),
    ("2025-05-22", "claude-sonnet-4-20250514", "claude-sonnet-4-0"),
    ("2025-02-24", "claude-3-7-sonnet-20250219", "claude-3-7-sonnet-latest"),
    ("2024-10-22", "claude-3-5-haiku-20241022", "claude-3-5-haiku-latest"),
    ("2024-03-07", "claude-3-haiku-20240307"),
    ("2024-02-29", "claude-3-opus-20240229", "claude-3-opus-latest"),
)

_DATES = {name: datetime.fromisoformat(date) for date, *names in RELEASES for name in names}
_SNAPSHOT = re.compile(r"-(20\d{2})(\d{2})(\d{2})$")


def release_date(model_id: str) -> datetime | None:
    """The model's release date (naive UTC midnight), or None when it is not known."""
    date = _DATES.get(model_id)
    if date is not None:
        return date
    match = _SNAPSHOT.search(model_id)
    if match is None:
        return None
    try:
        year, month, day = map(int, match.groups())
        return datetime(year, month, day)
    except ValueError:  # not a calendar date
        return None
