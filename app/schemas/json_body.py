"""A request body as JSON, read strictly: what the relay checks is what the upstream will read.

The relay forwards the client's bytes, so the body is parsed once, the way the
strictest reader would: UTF-8 only, no NaN or Infinity, no lone surrogates, no
repeated keys, an object at the top, and no more values than its size allows
(parsing memory stays a small multiple of the body).
"""
from __future__ import annotations

import json
import re
from typing import NoReturn

from ..errors import InvalidRequest


def _no_constant(name: str):
    raise ValueError(f"{name} is not allowed (JSON has no NaN or Infinity)")


_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


def _check_surrogates(text: str) -> None:
    """Anthropic rejects lone UTF-16 surrogate escapes ("no low surrogate in string"); Python's
    json accepts them. Called on text that parsed, so every backslash outside a string is absent
    and escapes read left to right: a `\\u` preceded by an even run of backslashes is an escape
    (an odd run makes it text after an escaped backslash). A high one directly followed by a low
    one is a pair, as the decoder reads it; any other is lone. Only the surrogate escapes are
    visited (rare: JS clients send astral characters as raw UTF-8), never the body's strings."""
    pending = -1  # where a low escape would complete the last high one
    for match in _SURROGATE_ESCAPE.finditer(text):
        start = match.start()
        run = 0
        while start - run > 0 and text[start - run - 1] == "\\":
            run += 1
        if run % 2:
            continue  # text, not an escape
        high = match.group()[3] in "89abAB"
        if pending >= 0:
            if not high and start == pending:
                pending = -1
                continue
            _lone(text, pending - 6)
        if high:
            pending = match.end()
        else:
            _lone(text, start)
    if pending >= 0:
        _lone(text, pending - 6)


def _lone(text: str, at: int) -> NoReturn:
    raise InvalidRequest(f"request body must be valid JSON: lone surrogate \\u{text[at + 2:at + 6].lower()} "
                         f"in a string")


def _unique_keys(pairs: list) -> dict:
    """The relay checks one reading of the body and forwards its bytes; with a key repeated,
    an upstream that keeps the first copy would read another model, stream flag or limit."""
    body = dict(pairs)
    if len(body) != len(pairs):
        seen = set()
        for key, _ in pairs:
            if key in seen:
                raise ValueError(f"the key {key[:100]!r} appears twice in one object")
            seen.add(key)
    return body


# Parsing memory: Python holds every JSON value as an object of 50-200 bytes, so a body of tiny
# values (`[{},{},...]`: 3 bytes each) grew ~25x when parsed; text-heavy bodies grow ~2-6x
# (Claude Code's turn: one value per ~50 bytes, 6x). At most one value per VALUE_BYTES bytes
# (plus a floor for small bodies) keeps any body's parse within a small multiple of its size.
VALUE_BYTES = 16
VALUE_FLOOR = 10_000
_CHUNK = 1 << 18  # the exact count walks the body in pieces of this size: its own memory stays small


def _values_at_most(raw: bytes) -> int:
    """An upper bound on the number of values a parse builds: the top one, and in each array or
    object one more than its commas (cheap: counted in the raw bytes, strings included, so it
    may overcount)."""
    return raw.count(b",") + raw.count(b"[") + raw.count(b"{") + 1


def _values_outside_strings(raw: bytes) -> int:
    """The same count with the strings' contents left out, piece by piece: escapes dropped, the
    quotes then alternate, and only what lies between a closing and an opening quote counts."""
    total, inside, pos = 1, False, 0
    while pos < len(raw):
        end = min(pos + _CHUNK, len(raw))
        while end < len(raw) and raw[end - 1] == 0x5C:  # never end a piece inside an escape
            end += 1
        parts = raw[pos:end].replace(b"\\\\", b"").replace(b'\\"', b"").split(b'"')
        outside = b"".join(parts[1 if inside else 0::2])
        total += _values_at_most(outside) - 1
        inside ^= len(parts) % 2 == 0  # an odd number of quotes in the piece
        pos = end
    return total


def check_density(raw) -> None:
    """Refuse, before parsing, a body with more values than its size allows (see VALUE_BYTES).
    A body whose strings hold many commas or brackets (CSV, code) is counted again without its
    strings, so only the structure itself can be refused."""
    data = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else bytes(raw)
    allowed = len(data) // VALUE_BYTES + VALUE_FLOOR
    if _values_at_most(data) <= allowed:
        return
    values = _values_outside_strings(data)
    if values > allowed:
        raise InvalidRequest(
            f"request body has too many JSON values for its size (about {values} in {len(data)} bytes; "
            f"at most {allowed}: one per {VALUE_BYTES} bytes, plus {VALUE_FLOOR})")


def parse_json_body(raw: bytes) -> dict:
    """Strict JSON: UTF-8, no NaN/Infinity, no lone surrogates, no repeated keys, an object at the
    top, and no more values than its size allows (check_density: bounds the parse's memory)."""
    if not raw or not raw.strip():
        raise InvalidRequest("request body must be valid JSON: the body is empty")
    check_density(raw)
    try:
        text = raw.decode("utf-8") if isinstance(raw, (bytes, bytearray)) else raw
    except UnicodeDecodeError as error:
        raise InvalidRequest(
            f"request body must be valid JSON in UTF-8: invalid byte at position {error.start}"
        ) from None
    try:
        body = json.loads(text, parse_constant=_no_constant, object_pairs_hook=_unique_keys)
        if isinstance(body, dict):
            _check_surrogates(text)
    except RecursionError:
        raise InvalidRequest("request body must be valid JSON: nested too deeply") from None
    except ValueError as error:  # JSONDecodeError, _no_constant, int digit limit
        raise InvalidRequest(f"request body must be valid JSON: {error}") from None
    if not isinstance(body, dict):
        raise InvalidRequest(f"request body must be a JSON object, not {json_kind(body)}")
    return body


def json_kind(value) -> str:
    """How an error message names a JSON value's kind."""
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    return "a number"
