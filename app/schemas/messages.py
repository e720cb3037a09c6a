"""The body of `POST /v1/messages` and `POST /v1/messages/count_tokens`.

Validation only *inspects*: the relay forwards the client's original bytes, so
nothing here returns, rewrites or fills in a body. What Anthropic would reject
for shape is a 400 naming the field (`messages.0.content.1.source: ...`);
what it accepts passes, and so does anything unknown (top-level fields, block
types, source types, extra keys inside blocks) for forward compatibility.

The top level is a marshmallow schema. `messages` and `system` are checked by
plain Python (a ~50 KB Claude Code body has hundreds of blocks on every turn,
and per-block marshmallow schemas would cost far more than the checks
themselves); their errors are raised as marshmallow `ValidationError`s with
the same nested-path shape, so every 400 reads alike.
"""
from __future__ import annotations

from typing import Any

from marshmallow import INCLUDE, Schema, ValidationError, fields, validate

from ..errors import InvalidRequest
from . import validation_message
from .json_body import json_kind
from .strict import StrictBoolean, StrictFloat, StrictInteger

MISSING = "Missing data for required field."
NULL = "Field may not be null."
NOT_STRING = "Not a valid string."
NOT_OBJECT = "Not a valid object."
NOT_LIST = "Not a valid list."
NOT_BOOL = "Not a valid boolean."
NOT_CONTENT = "Must be a string or a list of content blocks."
NO_MESSAGES = "at least one message is required"
ROLES = ("user", "assistant", "system")
BAD_ROLE = "Must be one of: " + ", ".join(ROLES) + "."

_ABSENT = object()


# --- plain checks -------------------------------------------------------------

class _Bad(Exception):
    """A shape error deep in `messages`/`system`; `path` grows (innermost
    first) as it propagates, so no path is built unless something is wrong."""

    def __init__(self, message: str, *path):
        super().__init__(message)
        self.message = message
        self.path = list(path)

    def as_validation_error(self) -> ValidationError:
        nested: list[str] | dict[str, Any] = [self.message]
        for key in self.path:  # innermost first
            nested = {key: nested}
        return ValidationError(nested)


def _require(obj: dict, key: str, kind: type, kind_error: str):
    value = obj.get(key)
    if isinstance(value, kind):  # the common case, first
        return value
    if key not in obj:
        raise _Bad(MISSING, key)
    raise _Bad(NULL if value is None else kind_error, key)


def _optional(obj: dict, key: str, kind: type, kind_error: str) -> None:
    value = obj.get(key, _ABSENT)
    if value is _ABSENT:
        return
    if value is None:
        raise _Bad(NULL, key)
    if not isinstance(value, kind):
        raise _Bad(kind_error, key)


def _check_text(block: dict) -> None:
    _require(block, "text", str, NOT_STRING)


def _check_typed_source(block: dict) -> dict:
    source = _require(block, "source", dict, NOT_OBJECT)
    try:
        _require(source, "type", str, NOT_STRING)
    except _Bad as bad:
        bad.path.append("source")
        raise
    return source


# image source type -> its required string fields; unknown source types pass
_IMAGE_SOURCES = {
    "base64": ("media_type", "data"),
    "url": ("url",),
    "file": ("file_id",),
}


def _check_image(block: dict) -> None:
    source = _check_typed_source(block)
    try:
        for key in _IMAGE_SOURCES.get(source["type"], ()):
            _require(source, key, str, NOT_STRING)
    except _Bad as bad:
        bad.path.append("source")
        raise


def _check_document(block: dict) -> None:
    _check_typed_source(block)


def _check_tool_use(block: dict) -> None:
    _require(block, "id", str, NOT_STRING)
    _require(block, "name", str, NOT_STRING)
    _require(block, "input", dict, NOT_OBJECT)


def _check_tool_result(block: dict) -> None:
    _require(block, "tool_use_id", str, NOT_STRING)
    content = block.get("content", _ABSENT)
    if content is not _ABSENT and not isinstance(content, str):
        if content is None:
            raise _Bad(NULL, "content")
        if not isinstance(content, list):
            raise _Bad(NOT_CONTENT, "content")
        try:
            _check_blocks(content)
        except _Bad as bad:
            bad.path.append("content")
            raise
    _optional(block, "is_error", bool, NOT_BOOL)


def _check_thinking(block: dict) -> None:
    _require(block, "thinking", str, NOT_STRING)
    _require(block, "signature", str, NOT_STRING)


def _check_redacted_thinking(block: dict) -> None:
    _require(block, "data", str, NOT_STRING)


# known block type -> check of its required fields; any other type passes
BLOCK_CHECKS = {
    "text": _check_text,
    "image": _check_image,
    "document": _check_document,
    "tool_use": _check_tool_use,
    "server_tool_use": _check_tool_use,
    "tool_result": _check_tool_result,
    "thinking": _check_thinking,
    "redacted_thinking": _check_redacted_thinking,
}


def _check_blocks(blocks: list) -> None:
    for index, block in enumerate(blocks):
        try:
            if not isinstance(block, dict):
                raise _Bad(NOT_OBJECT)
            kind = _require(block, "type", str, NOT_STRING)
            check = BLOCK_CHECKS.get(kind)
            if check is not None:
                check(block)
        except _Bad as bad:
            bad.path.append(index)
            raise


def _check_content(content) -> None:
    if isinstance(content, str):
        return
    if content is None:
        raise _Bad(NULL)
    if not isinstance(content, list):
        raise _Bad(NOT_CONTENT)
    _check_blocks(content)


def _check_message(message) -> None:
    if not isinstance(message, dict):
        raise _Bad(NOT_OBJECT)
    role = message.get("role", _ABSENT)
    if role is _ABSENT:
        raise _Bad(MISSING, "role")
    if role is None:
        raise _Bad(NULL, "role")
    if not isinstance(role, str):
        raise _Bad(NOT_STRING, "role")
    if role not in ROLES:
        raise _Bad(BAD_ROLE, "role")
    content = message.get("content", _ABSENT)
    if content is _ABSENT:
        raise _Bad(MISSING, "content")
    try:
        _check_content(content)
    except _Bad as bad:
        bad.path.append("content")
        raise


# --- fields -------------------------------------------------------------------

class _Inspected(fields.Field):
    """A field whose value is checked and handed back as is (no copy)."""

    def _deserialize(self, value, attr, data, **kwargs):
        try:
            self._check(value)
        except _Bad as bad:
            raise bad.as_validation_error() from None
        return value

    def _check(self, value) -> None:
        raise NotImplementedError


class Messages(_Inspected):
    def _check(self, value) -> None:
        if not isinstance(value, list):
            raise _Bad(NOT_LIST)
        if not value:
            raise _Bad(NO_MESSAGES)
        for index, message in enumerate(value):
            try:
                _check_message(message)
            except _Bad as bad:
                bad.path.append(index)
                raise


class System(_Inspected):
    """A string, or a list of blocks (each with a `type`; `text` needs `text`)."""

    def _check(self, value) -> None:
        if isinstance(value, str):
            return
        if not isinstance(value, list):
            raise _Bad("Must be a string or a list of text blocks.")
        _check_blocks(value)


class Object(_Inspected):
    def _check(self, value) -> None:
        if not isinstance(value, dict):
            raise _Bad(NOT_OBJECT)


class TypedObject(_Inspected):
    """An object with a string `type` (`tool_choice`, `thinking`); other keys pass."""

    def _check(self, value) -> None:
        if not isinstance(value, dict):
            raise _Bad(NOT_OBJECT)
        _require(value, "type", str, NOT_STRING)


class ObjectList(_Inspected):
    """A list of objects, their shapes not looked into (`tools`, `mcp_servers`)."""

    def _check(self, value) -> None:
        if not isinstance(value, list):
            raise _Bad(NOT_LIST)
        for index, item in enumerate(value):
            if not isinstance(item, dict):
                raise _Bad(NOT_OBJECT, index)


class StringOrObject(_Inspected):
    def _check(self, value) -> None:
        if not isinstance(value, (str, dict)):
            raise _Bad("Must be a string or an object.")


# --- schemas ------------------------------------------------------------------

class MessagesSchema(Schema):
    """`POST /v1/messages`. Fields the API marks nullable allow null; unknown
    fields pass (INCLUDE); no field has a default."""

    class Meta:
        unknown = INCLUDE

    model = fields.String(required=True, validate=validate.Length(min=1, error="Must not be empty."))
    messages = Messages(required=True)
    max_tokens = StrictInteger(required=True, validate=validate.Range(min=0))
    system = System()
    stream = StrictBoolean()
    temperature = StrictFloat()
    top_p = StrictFloat()
    top_k = StrictInteger(validate=validate.Range(min=0))
    stop_sequences = fields.List(fields.String())
    tools = ObjectList()
    tool_choice = TypedObject()
    thinking = TypedObject()
    metadata = Object()
    service_tier = fields.String()
    container = StringOrObject(allow_none=True)
    mcp_servers = ObjectList()
    context_management = Object(allow_none=True)
    output_config = Object()
    output_format = Object(allow_none=True)


class CountTokensSchema(MessagesSchema):
    """`POST /v1/messages/count_tokens`: the same, `max_tokens` optional."""

    max_tokens = StrictInteger(validate=validate.Range(min=0))


# Schema instances hold no per-load state in marshmallow 4: build them once.
_MESSAGES = MessagesSchema()
_COUNT_TOKENS = CountTokensSchema()


# --- public -------------------------------------------------------------------

def check_messages_body(body: dict, *, count_tokens: bool = False) -> None:
    """Raise InvalidRequest naming the first bad field(s); return nothing.

    The body is only read: no defaults, no normalised copy to forward.
    """
    if not isinstance(body, dict):
        raise InvalidRequest(f"request body must be a JSON object, not {json_kind(body)}")
    schema = _COUNT_TOKENS if count_tokens else _MESSAGES
    try:
        try:
            schema.load(body)
            return
        except ValidationError as error:
            message = validation_message(error)  # recursive too: inside the guard
    except RecursionError:
        message = "request body is nested too deeply"
    raise InvalidRequest(message)
