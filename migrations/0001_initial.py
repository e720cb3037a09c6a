"""Keys, channels, model prices and the request log."""
from peewee import *

TABLES = ("request_log", "model_price", "channel", "api_key")


def up(migrator, db):
    class ApiKey(Model):
        name = CharField(max_length=200)
        key_hash = CharField(unique=True, max_length=64)
        key_prefix = CharField(max_length=16)
        models = TextField(default="[]")
        budget_nanos = BigIntegerField(null=True)
        used_nanos = BigIntegerField(default=0)
        token_quota = BigIntegerField(null=True)
        used_tokens = BigIntegerField(default=0)
        rpm = IntegerField(null=True)
        tpm = IntegerField(null=True)
        max_concurrency = IntegerField(null=True)
        expires_at = DateTimeField(null=True)
        enabled = BooleanField(default=True)
        revoked_at = DateTimeField(null=True)
        created_at = DateTimeField()
        updated_at = DateTimeField()

        class Meta:
            database = db
            table_name = "api_key"

    class Channel(Model):
        name = CharField(unique=True, max_length=200)
        type = CharField(max_length=32)
        base_url = CharField(null=True, max_length=1000)
        api_key_enc = TextField(null=True)
        api_key_hint = CharField(null=True, max_length=32)
        models = TextField(default="[]")
        model_map = TextField(default="{}")
        priority = IntegerField(default=0)
        weight = IntegerField(default=1)
        timeout_s = FloatField(default=600.0)
        enabled = BooleanField(default=True)
        consecutive_failures = IntegerField(default=0)
        cooldown_until = DateTimeField(null=True)
        created_at = DateTimeField()
        updated_at = DateTimeField()

        class Meta:
            database = db
            table_name = "channel"

    class ModelPrice(Model):
        model = CharField(primary_key=True, max_length=200)
        input = BigIntegerField()
        output = BigIntegerField()
        cache_write = BigIntegerField()
        cache_read = BigIntegerField()
        updated_at = DateTimeField()

        class Meta:
            database = db
            table_name = "model_price"

    class RequestLog(Model):
        id = BigAutoField()
        request_id = CharField(unique=True, max_length=64)
        key_id = IntegerField(null=True)
        channel_id = IntegerField(null=True)
        model = CharField(max_length=200)
        stream = BooleanField(default=False)
        status = IntegerField()
        error_type = CharField(null=True, max_length=64)
        input_tokens = BigIntegerField(default=0)
        output_tokens = BigIntegerField(default=0)
        cache_creation_input_tokens = BigIntegerField(default=0)
        cache_read_input_tokens = BigIntegerField(default=0)
        cost_nanos = BigIntegerField(default=0)
        latency_ms = IntegerField(default=0)
        ttft_ms = IntegerField(null=True)
        attempts = IntegerField(default=0)
        client_disconnected = BooleanField(default=False)
        created_at = DateTimeField()

        class Meta:
            database = db
            table_name = "request_log"
            indexes = ((("key_id", "created_at"), False), (("created_at",), False))

    db.create_tables([ApiKey, Channel, ModelPrice, RequestLog])


def down(migrator, db):
    for table in TABLES:
        db.execute_sql(f"DROP TABLE {table}")
