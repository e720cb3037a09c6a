"""request_log.affinity: whether the request followed its conversation's channel (session affinity)."""
from peewee import CharField


def up(migrator, db):
    migrator.migrate(migrator.add_column("request_log", "affinity", CharField(max_length=8, null=True)))


def down(migrator, db):
    migrator.migrate(migrator.drop_column("request_log", "affinity"))
