"""request_log.usage_estimated: the row's counts are partly the relay's own estimate (an upstream
that never reported usage, e.g. an OpenAI-compatible server ignoring stream_options.include_usage,
or a stream that ended before its closing usage), not the upstream's."""
from peewee import BooleanField


def up(migrator, db):
    migrator.migrate(migrator.add_column("request_log", "usage_estimated", BooleanField(default=False)))


def down(migrator, db):
    migrator.migrate(migrator.drop_column("request_log", "usage_estimated"))
