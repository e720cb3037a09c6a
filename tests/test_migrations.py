"""Schema only through migrations: a fresh upgrade matches the models; upgrades are idempotent."""
from peewee import SqliteDatabase
from playhouse.migrations import Runner
from playhouse.schema_diff import diff_models

from app.db import MIGRATIONS_DIR, db, open_database, pending_migrations, upgrade
from app.models import MODELS, ModelPrice
from tests.support.app import reset_postgres
from tests.support.constants import PG_URL


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


def _price_table():
    from app.services.pricing import Price, PriceTable

    return PriceTable([Price.of(row) for row in ModelPrice.select()])


def test_upgrades_keep_the_operators_price_rows(tmp_path):
    """Seeded rows an operator changed, and rows an operator added, survive every later migration."""
    database = fresh(tmp_path, "keep.db")
    db.initialize(database)
    upgrade(database, target="0002_seed_prices")
    with database.connection_context():
        ModelPrice.update(input=2_500_000).where(ModelPrice.model == "claude-sonnet-4-5").execute()
        ModelPrice.insert(model="team-model", input=1, output=2, cache_write=3, cache_read=4).execute()
    upgrade(database)
    with database.connection_context():
        assert ModelPrice.get(ModelPrice.model == "claude-sonnet-4-5").input == 2_500_000
        row = ModelPrice.get(ModelPrice.model == "team-model")
        assert (row.input, row.output, row.cache_write, row.cache_read) == (1, 2, 3, 4)


def test_dated_ids_of_a_version_are_not_billed_as_its_point_two(tmp_path):
    """`claude-fable-5-20261201` is Fable 5 (a date), not Fable 5.2; 5.2's dated, Vertex and
    Bedrock ids still are 5.2."""
    database = fresh(tmp_path, "dated.db")
    db.initialize(database)
    upgrade(database)
    with database.connection_context():
        table = _price_table()
    for family in ("fable", "mythos"):
        five = table.lookup(f"claude-{family}-5").rates.input
        point_two = table.lookup(f"claude-{family}-5-2").rates.input
        assert five != point_two
        for model in (f"claude-{family}-5-20261201", f"claude-{family}-5@20261201",
                      f"us.anthropic.claude-{family}-5-20261201-v1:0"):
            assert table.lookup(model).rates.input == five, model
        for model in (f"claude-{family}-5-2-20261201", f"claude-{family}-5-2@20261201",
                      f"us.anthropic.claude-{family}-5-2-20261201-v1:0"):
            assert table.lookup(model).rates.input == point_two, model


def test_an_operators_edit_of_a_replaced_glob_moves_with_it(tmp_path):
    database = fresh(tmp_path, "moved.db")
    db.initialize(database)
    upgrade(database, target="0008_request_journal")
    with database.connection_context():
        ModelPrice.update(input=7_000_000).where(ModelPrice.model == "claude-fable-5-2*").execute()
    upgrade(database)
    with database.connection_context():
        assert not ModelPrice.select().where(ModelPrice.model == "claude-fable-5-2*").exists()
        assert ModelPrice.get(ModelPrice.model == "claude-fable-5-2-*").input == 7_000_000
        assert ModelPrice.get(ModelPrice.model == "claude-fable-5-2@*").input == 7_000_000
