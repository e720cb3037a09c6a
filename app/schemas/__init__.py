"""marshmallow schemas for request bodies, and the one way their errors become a 400."""
from __future__ import annotations

from marshmallow import Schema, ValidationError

from ..errors import InvalidRequest


def _flatten(messages, path=()):
    if isinstance(messages, dict):
        for key, value in messages.items():
            yield from _flatten(value, path if key == "_schema" else path + (str(key),))
    elif isinstance(messages, list) and messages and all(isinstance(m, str) for m in messages):
        yield ".".join(path), " ".join(messages)
    elif isinstance(messages, list):
        for value in messages:
            yield from _flatten(value, path)
    else:
        yield ".".join(path), str(messages)


def validation_message(error: ValidationError) -> str:
    """`messages.0.content: Field may not be null.` — field path first, as Anthropic does."""
    parts = [f"{path}: {text}" if path else text for path, text in _flatten(error.messages)]
    return "; ".join(sorted(parts)) or "invalid request body"


def load(schema: Schema, data, *, partial: bool = False) -> dict:
    if not isinstance(data, dict):
        raise InvalidRequest("request body must be a JSON object")
    try:
        return schema.load(data, partial=partial)
    except ValidationError as error:
        raise InvalidRequest(validation_message(error)) from None
