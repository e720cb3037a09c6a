"""Schema only through migrations: a fresh upgrade matches the models; upgrades are idempotent."""
from peewee import SqliteDatabase
from playhouse.migrations import Runner
from playhouse.schema_diff import diff_models

from app.db import MIGRATIONS_DIR, db, open_database, pending_migrations, upgrade
from app.models import MODELS, ModelPrice

from .conftest import PG_URL, reset_postgres


def schema_of(database) -> dict:
    """Tables -> (columns with types and nullability, indexes): what the DB really holds."""
    with database.connection_context():
        out = {}
        for table in sorted(database.get_tables()):
            columns = sorted((c.name, c.data_type.lower(), c.null, c.primary_key)
                             for c in database.get_columns(table))
            indexes = sorted((tuple(i.columns), i.unique) for i in database.get_indexes(table))
            out[table] = (columns, indexes)
        return out


def fresh(tmp_path, name):
    if PG_URL:
        reset_postgres(PG_URL)
        return open_database(PG_URL, pooled=False)
    return SqliteDatabase(str(tmp_path / name))


def all_migrations() -> list[str]:
    return [m.name for m in Runner(SqliteDatabase(":memory:"), MIGRATIONS_DIR).migrations()]


def test_fresh_upgrade_matches_the_models(tmp_path):
    database = fresh(tmp_path, "a.db")
    db.initialize(database)
    assert upgrade(database) == all_migrations()
    assert all_migrations()[:2] == ["0001_initial", "0002_seed_prices"]
    with database.connection_context():
        assert not diff_models(database, MODELS), str(diff_models(database, MODELS))
        assert ModelPrice.select().count() > 10


def test_upgrade_is_idempotent(tmp_path):
    database = fresh(tmp_path, "b.db")
    db.initialize(database)
    upgrade(database)
    assert upgrade(database) == []
    assert pending_migrations(database) == []


def test_stepwise_upgrade_equals_fresh_upgrade(tmp_path):
    """A DB upgraded one migration at a time (with data in between) ends like a fresh one."""
    names = [m.name for m in Runner(SqliteDatabase(":memory:"), MIGRATIONS_DIR).migrations()]
    step = fresh(tmp_path, "step.db")
    db.initialize(step)
    for name in names:
        assert upgrade(step, target=name) == [name]
        with step.connection_context():
            step.execute_sql("SELECT 1")
    stepwise = schema_of(step)
    step.close()
    if PG_URL:
        reset_postgres(PG_URL)
    whole = fresh(tmp_path, "whole.db")
    upgrade(whole)
    assert stepwise == schema_of(whole)
    assert set(stepwise) >= {"api_key", "channel", "model_price", "request_log", "schema_migration"}


def test_down_migrations_revert_cleanly(tmp_path):
    database = fresh(tmp_path, "c.db")
    db.initialize(database)
    upgrade(database)
    with database.connection_context():
        runner = Runner(database, MIGRATIONS_DIR)
        for _ in all_migrations()[2:]:  # later migrations, newest first
            runner.down()
        runner.down()  # prices
        assert ModelPrice.select().count() == 0
        runner.down()  # tables
        assert set(database.get_tables()) == {"schema_migration"}
    assert upgrade(database) == all_migrations()
