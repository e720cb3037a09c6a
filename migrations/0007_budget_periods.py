"""api_key.budget_period (day / week / month, null: the budget never resets) and period_start (the
start of the period that used_nanos and used_tokens count; see app/services/periods.py)."""
from peewee import CharField, DateTimeField


def up(migrator, db):
    migrator.migrate(
        migrator.add_column("api_key", "budget_period", CharField(max_length=8, null=True)),
        migrator.add_column("api_key", "period_start", DateTimeField(null=True)),
    )


def down(migrator, db):
    migrator.migrate(
        migrator.drop_column("api_key", "period_start"),
        migrator.drop_column("api_key", "budget_period"),
    )
