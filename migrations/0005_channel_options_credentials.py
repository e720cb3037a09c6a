"""Channel `options` (shown: region, project) and `credentials_enc` (write-only, encrypted) for the
cloud channel types (bedrock, vertex)."""
from peewee import *


def up(migrator, db):
    migrator.migrate(
        migrator.add_column("channel", "options", TextField(default="{}")),
        migrator.add_column("channel", "credentials_enc", TextField(null=True)),
    )


def down(migrator, db):
    migrator.migrate(
        migrator.drop_column("channel", "credentials_enc"),
        migrator.drop_column("channel", "options"),
    )
