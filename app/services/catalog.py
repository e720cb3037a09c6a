"""The model list a key sees: exact names some enabled channel serves, in Anthropic's list shape.

Like Anthropic's list, newest first: `created_at` is the model's release date
(releases.py) where it is known, and those models come first, newest first;
names with no known date follow by name, with `created_at` the creation time
of the oldest enabled channel that serves them. A channel's glob lists only
the priced names it matches: a pattern is not a list of names.
"""
from __future__ import annotations

import fnmatch
import re

from ..errors import InvalidRequest, NotFound
from ..models import Channel, ModelPrice
from ..timefmt import iso
from .auth import KeySnapshot
from .releases import release_date

GLOB_CHARS = re.compile(r"[*?\[]")
DEFAULT_LIMIT, MAX_LIMIT = 20, 1000


def display_name(model_id: str) -> str:
    """claude-sonnet-4-5-20250929 -> "Claude Sonnet 4.5"; claude-3-5-haiku-latest -> "Claude 3.5 Haiku"."""
    words, digits = [], []
    for part in model_id.split("-"):
        if part.isdigit() and len(part) <= 2:
            digits.append(part)
            continue
        if digits:
            words.append(".".join(digits))
            digits = []
        if not (part.isdigit() and len(part) == 8) and part != "latest":
            words.append(part[:1].upper() + part[1:])
    if digits:
        words.append(".".join(digits))
    return " ".join(words)


def served_models() -> dict[str, object]:
    """model id -> its release date, else the created_at of the oldest enabled channel that
    serves it by exact name (in list order: dated ones newest first, then the rest by name)."""
    channels = list(Channel.select().where(Channel.enabled == True).order_by(Channel.id))  # noqa: E712
    if not channels:
        return {}
    priced = [p.model for p in ModelPrice.select(ModelPrice.model) if not GLOB_CHARS.search(p.model)]
    out: dict[str, object] = {}
    for channel in channels:
        patterns = list(channel.models or [])
        names = [p for p in patterns if not GLOB_CHARS.search(p)] + list(channel.model_map or {})
        globs = [p for p in patterns if GLOB_CHARS.search(p)]
        names += [m for m in priced if any(fnmatch.fnmatchcase(m, g) for g in globs)]
        for name in names:
            out.setdefault(name, channel.created_at)
    dated = {name: release_date(name) for name in out}

    def newest_first(name: str) -> tuple[bool, int, str]:
        released = dated[name]
        return released is None, -released.toordinal() if released else 0, name

    order = sorted(out, key=newest_first)
    return {name: dated[name] or out[name] for name in order}


def _entry(model_id: str, created_at) -> dict:
    return {"type": "model", "id": model_id, "display_name": display_name(model_id),
            "created_at": iso(created_at)}


def visible_models(key: KeySnapshot) -> list[dict]:
    return [_entry(m, created) for m, created in served_models().items() if key.may_use(m)]


def list_page(key: KeySnapshot, args) -> dict:
    raw_limit = args.get("limit", str(DEFAULT_LIMIT))
    if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= MAX_LIMIT:
        raise InvalidRequest(f"limit: must be an integer between 1 and {MAX_LIMIT}")
    limit = int(raw_limit)
    items = visible_models(key)
    ids = [m["id"] for m in items]
    after, before = args.get("after_id"), args.get("before_id")
    if after and before:
        raise InvalidRequest("after_id and before_id cannot be used together")
    if after:
        start = ids.index(after) + 1 if after in ids else len(ids)
        page, has_more = items[start:start + limit], start + limit < len(items)
    elif before:
        end = ids.index(before) if before in ids else 0
        start = max(0, end - limit)
        page, has_more = items[start:end], start > 0
    else:
        page, has_more = items[:limit], limit < len(items)
    return {
        "data": page,
        "has_more": has_more,
        "first_id": page[0]["id"] if page else None,
        "last_id": page[-1]["id"] if page else None,
    }


def get_model(key: KeySnapshot, model_id: str) -> dict:
    served = served_models()
    if model_id not in served or not key.may_use(model_id):
        raise NotFound(f"model {model_id!r} not found")
    return _entry(model_id, served[model_id])
