"""Admin API bodies: keys, channels, prices. Unknown fields are errors (typos must not pass)."""
from __future__ import annotations

from typing import Any, Callable

from marshmallow import RAISE, Schema, ValidationError, fields, post_load, validate

from ..channel_types import CHANNEL_TYPES
from ..periods import PERIODS
from ..timefmt import to_naive_utc
from .strict import StrictBoolean, StrictFloat, StrictInteger


def _no_nul(value: str) -> None:
    if "\x00" in value:
        raise ValidationError("Must not contain NUL characters.")


_name: list[Callable[[Any], Any]] = [validate.Length(min=1, max=200), _no_nul]
_glob = fields.String(validate=[validate.Length(min=1, max=200), _no_nul])
_limit = dict(allow_none=True, validate=validate.Range(min=1, max=10**9))


class KeySchema(Schema):
    class Meta:
        unknown = RAISE

    name = fields.String(required=True, validate=_name)
    budget_usd = StrictFloat(allow_none=True, validate=validate.Range(min=0, max=10**9))
    budget_period = fields.String(allow_none=True, validate=validate.OneOf(PERIODS))  # null: never resets
    token_quota = StrictInteger(allow_none=True, validate=validate.Range(min=0, max=10**15))
    rpm = StrictInteger(**_limit)
    tpm = StrictInteger(**_limit)
    max_concurrency = StrictInteger(**_limit)
    models = fields.List(_glob, allow_none=True, validate=validate.Length(max=500))
    expires_at = fields.DateTime(allow_none=True)
    enabled = StrictBoolean()

    @post_load
    def _utc(self, data, **kwargs):
        if data.get("expires_at") is not None:
            try:
                data["expires_at"] = to_naive_utc(data["expires_at"])
            except OverflowError:
                raise ValidationError("Out of range.", "expires_at") from None
        return data


class ChannelSchema(Schema):
    class Meta:
        unknown = RAISE

    name = fields.String(required=True, validate=_name)
    type = fields.String(required=True, validate=validate.OneOf(sorted(CHANNEL_TYPES)))
    # its shape (scheme, host, no userinfo/query/fragment) is checked by the channel service, naming the part
    base_url = fields.String(allow_none=True, validate=[validate.Length(max=1000), _no_nul])
    api_key = fields.String(allow_none=True, validate=validate.Length(max=4096))
    models = fields.List(_glob, required=True, validate=validate.Length(min=1, max=500))
    model_map = fields.Dict(keys=fields.String(validate=[validate.Length(min=1, max=200), _no_nul]),
                            values=fields.String(validate=[validate.Length(min=1, max=200), _no_nul]))
    # what each type takes in these two is checked by the channel service, from the type registry
    options = fields.Dict(keys=fields.String(validate=[validate.Length(min=1, max=64), _no_nul]),
                          values=fields.String(allow_none=True, validate=[validate.Length(max=200), _no_nul]),
                          allow_none=True, validate=validate.Length(max=20))
    credentials = fields.Dict(keys=fields.String(validate=[validate.Length(min=1, max=64), _no_nul]),
                              values=fields.String(allow_none=True, validate=validate.Length(max=16384)),
                              allow_none=True, validate=validate.Length(max=30))
    priority = StrictInteger(validate=validate.Range(min=-10**6, max=10**6))
    weight = StrictInteger(validate=validate.Range(min=1, max=10**6))
    timeout_s = StrictFloat(validate=validate.Range(min=0.1, max=86400))
    enabled = StrictBoolean()


_rate = dict(validate=validate.Range(min=0, max=10**6))


class LongContextSchema(Schema):
    """A long-context tier: above `threshold_tokens` of prompt, the whole request uses these rates."""
    class Meta:
        unknown = RAISE

    threshold_tokens = StrictInteger(required=True, validate=validate.Range(min=1, max=10**9))
    input = StrictFloat(required=True, **_rate)
    output = StrictFloat(required=True, **_rate)
    cache_write = StrictFloat(required=True, **_rate)
    cache_write_1h = StrictFloat(allow_none=True, **_rate)
    cache_read = StrictFloat(required=True, **_rate)


class PriceSchema(Schema):
    class Meta:
        unknown = RAISE

    input = StrictFloat(required=True, **_rate)
    output = StrictFloat(required=True, **_rate)
    cache_write = StrictFloat(required=True, **_rate)
    cache_write_1h = StrictFloat(allow_none=True, **_rate)
    cache_read = StrictFloat(required=True, **_rate)
    web_search_per_1k = StrictFloat(allow_none=True, **_rate)
    long_context = fields.Nested(LongContextSchema, allow_none=True)
