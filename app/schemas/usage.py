"""Query parameters of the usage report and the request log (admin API and CLI).

Values arrive as strings (a query string, CLI options); unknown parameters
are errors, as in the admin bodies (a typo must not silently widen a report).
"""
from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from marshmallow import RAISE, Schema, ValidationError, fields, validate, validates_schema

from ..errors import InvalidRequest
from ..timefmt import to_naive_utc
from . import load

GROUP_FIELDS = ("key", "model", "channel", "day")
MAX_LIMIT = 1000
DEFAULT_LIMIT = 50

KEY_ID = validate.Range(min=1, max=2**31 - 1)


class Instant(fields.Field):
    """ISO-8601 date or datetime -> naive UTC datetime; a bare date is midnight UTC."""

    default_error_messages = {
        "invalid": "Not a valid ISO-8601 date or datetime (e.g. 2025-01-31 or 2025-01-31T12:00:00Z).",
    }

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, datetime):
            return to_naive_utc(value)
        if not isinstance(value, str) or not value.strip():
            raise self.make_error("invalid")
        text = value.strip()
        if text[-1:] in ("z", "Z"):  # fromisoformat on 3.11 takes Z, but be explicit
            text = text[:-1] + "+00:00"
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            raise self.make_error("invalid") from None
        return to_naive_utc(parsed)


class GroupBy(fields.Field):
    """`key,model,day` (or a list) -> a tuple of distinct fields, in the order given."""

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, str):
            items = value.split(",")
        elif isinstance(value, (list, tuple)):
            items = list(value)
        else:
            raise ValidationError("expected a comma-separated list of fields")
        out = []
        for item in items:
            if not isinstance(item, str):
                raise ValidationError("expected a comma-separated list of fields")
            name = item.strip().lower()
            if not name:
                continue
            if name not in GROUP_FIELDS:
                raise ValidationError(
                    f"unknown field {item.strip()!r} (allowed: {', '.join(GROUP_FIELDS)})")
            if name not in out:
                out.append(name)
        return tuple(out)


class UsageQuerySchema(Schema):
    class Meta:
        unknown = RAISE

    key_id = fields.Integer(validate=KEY_ID)
    model = fields.String(validate=validate.Length(min=1, max=200))
    since = Instant()
    until = Instant()
    group_by = GroupBy()

    @validates_schema
    def _window(self, data, **kwargs):
        since, until = data.get("since"), data.get("until")
        if since is not None and until is not None and until <= since:
            raise ValidationError("must be later than since (until is exclusive)", "until")


class LogsQuerySchema(Schema):
    class Meta:
        unknown = RAISE

    key_id = fields.Integer(validate=KEY_ID)
    limit = fields.Integer(load_default=DEFAULT_LIMIT,
                           validate=validate.Range(min=1, max=MAX_LIMIT))
    since = Instant()
    until = Instant()
    before_id = fields.String(validate=validate.Length(min=1, max=64))

    @validates_schema
    def _window(self, data, **kwargs):
        since, until = data.get("since"), data.get("until")
        if since is not None and until is not None and until <= since:
            raise ValidationError("must be later than since (until is exclusive)", "until")


# parsing ---------------------------------------------------------------------

def _single_values(args: Mapping) -> dict:
    """A query mapping (values may be lists, as werkzeug's `to_dict(flat=False)`) -> plain dict.

    A parameter given twice is an error (except group_by, whose values are
    joined); None or an empty string means "not given" (`?key_id=&model=`).
    """
    out = {}
    for name, value in args.items():
        if isinstance(value, (list, tuple)):
            if name == "group_by":
                value = ",".join(str(v) for v in value)
            elif len(value) > 1:
                raise InvalidRequest(f"{name}: given more than once")
            else:
                value = value[0] if value else None
        if value is None or (isinstance(value, str) and not value.strip()):
            continue
        out[name] = value
    return out


def parse_usage_query(args: Mapping) -> dict:
    """Validate `key_id, model, since, until, group_by` -> keyword arguments of usage_report."""
    return load(UsageQuerySchema(), _single_values(args))


def parse_logs_query(args: Mapping) -> dict:
    """Validate `key_id, limit, since, until, before_id` -> keyword arguments of log_page."""
    return load(LogsQuerySchema(), _single_values(args))
