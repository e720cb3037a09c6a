"""peewee models only: what octorelay stores. Schema changes go through migrations/.

Money is stored as whole nano-dollars (1e-9 USD) and prices as whole
micro-dollars per million tokens, so that sums are exact on every backend.
"""
from datetime import datetime, timezone
from typing import Any, Iterator

from peewee import (
    AutoField,
    BigAutoField,
    BigIntegerField,
    BooleanField,
    CharField,
    DateTimeField,
    FloatField,
    IntegerField,
    Model,
    TextField,
)

from ..db import db
from .fields import JSONField


def utcnow() -> datetime:
    """Naive UTC: the one time convention for every stored timestamp."""
    return datetime.now(timezone.utc).replace(tzinfo=None)


def dict_rows(query: Any) -> Iterator[dict[str, Any]]:
    """A select's rows as dicts. (types-peewee types `.dicts()` as the query itself, whose rows
    are model instances: this is where the type is told the truth.)"""
    return iter(query.dicts())


class BaseModel(Model):
    class Meta:
        database = db
        legacy_table_names = False


class ApiKey(BaseModel):
    id = AutoField()
    name = CharField(max_length=200)
    key_hash = CharField(max_length=64, unique=True)
    key_prefix = CharField(max_length=16)
    models = JSONField(default=list)
    budget_nanos = BigIntegerField(null=True)
    used_nanos = BigIntegerField(default=0)  # counted from period_start when budget_period is set
    budget_period = CharField(max_length=8, null=True)  # day / week / month (UTC); null: never resets
    period_start = DateTimeField(null=True)  # the start of the period used_* count (app/periods.py)
    token_quota = BigIntegerField(null=True)
    used_tokens = BigIntegerField(default=0)
    rpm = IntegerField(null=True)
    tpm = IntegerField(null=True)
    max_concurrency = IntegerField(null=True)
    expires_at = DateTimeField(null=True)
    enabled = BooleanField(default=True)
    revoked_at = DateTimeField(null=True)
    created_at = DateTimeField(default=utcnow)
    updated_at = DateTimeField(default=utcnow)


class Channel(BaseModel):
    id = AutoField()
    name = CharField(max_length=200, unique=True)
    type = CharField(max_length=32)
    base_url = CharField(max_length=1000, null=True)
    api_key_enc = TextField(null=True)
    api_key_hint = CharField(max_length=32, null=True)
    models = JSONField(default=list)
    model_map = JSONField(default=dict)
    options = JSONField(default=dict)  # type-specific settings (region, project_id): not secret
    credentials_enc = TextField(null=True)  # type-specific secrets (AWS keys, a service account), encrypted
    priority = IntegerField(default=0)
    weight = IntegerField(default=1)
    timeout_s = FloatField(default=600.0)
    enabled = BooleanField(default=True)
    consecutive_failures = IntegerField(default=0)
    cooldown_until = DateTimeField(null=True)
    created_at = DateTimeField(default=utcnow)
    updated_at = DateTimeField(default=utcnow)


class ModelPrice(BaseModel):
    model = CharField(max_length=200, primary_key=True)
    input = BigIntegerField()
    output = BigIntegerField()
    cache_write = BigIntegerField()      # the 5-minute write rate
    cache_read = BigIntegerField()
    cache_write_1h = BigIntegerField(null=True)      # null: 2 x input
    web_search_per_1k = BigIntegerField(null=True)   # micro-dollars per 1,000 searches; null: 0
    long_context = JSONField(null=True)  # {threshold_tokens, input, output, cache_write, cache_write_1h?, cache_read}
    updated_at = DateTimeField(default=utcnow)


class RequestLog(BaseModel):
    id = BigAutoField()
    request_id = CharField(max_length=64, unique=True)
    key_id = IntegerField(null=True)
    channel_id = IntegerField(null=True)
    model = CharField(max_length=200)
    stream = BooleanField(default=False)
    status = IntegerField()
    error_type = CharField(max_length=64, null=True)
    input_tokens = BigIntegerField(default=0)
    output_tokens = BigIntegerField(default=0)
    cache_creation_input_tokens = BigIntegerField(default=0)
    cache_read_input_tokens = BigIntegerField(default=0)
    cache_creation_1h_input_tokens = BigIntegerField(default=0)
    web_search_requests = BigIntegerField(default=0)
    cost_nanos = BigIntegerField(default=0)
    latency_ms = IntegerField(default=0)
    ttft_ms = IntegerField(null=True)
    attempts = IntegerField(default=0)
    client_disconnected = BooleanField(default=False)
    affinity = CharField(max_length=8, null=True)  # session affinity: kept / new / moved
    usage_estimated = BooleanField(default=False)  # some counts are the relay's estimate, not the upstream's
    created_at = DateTimeField(default=utcnow)

    class Meta:
        indexes = (
            (("key_id", "created_at"), False),
            (("created_at",), False),
        )


class RequestJournal(BaseModel):
    """An admitted request that has not been settled yet (services/journal.py)."""
    request_id = CharField(max_length=64, primary_key=True)
    key_id = IntegerField(null=True)
    model = CharField(max_length=200)
    stream = IntegerField(default=0)
    worker = CharField(max_length=80, index=True)
    reservation_nanos = BigIntegerField(default=0)
    started_at = DateTimeField(default=utcnow)


class WorkerBeat(BaseModel):
    """When a worker process was last seen alive."""
    worker = CharField(max_length=80, primary_key=True)
    seen_at = DateTimeField(default=utcnow)


MODELS = [ApiKey, Channel, ModelPrice, RequestLog, RequestJournal, WorkerBeat]
