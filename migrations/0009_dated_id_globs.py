"""Glob prices for x.2 versions no longer catch the dated ids of the x version.

0003 seeded `claude-fable-5-2*` and `claude-mythos-5-2*` (and their Bedrock forms) for the
5.2 models; they also match `claude-fable-5-20261201`, a dated id of Fable 5, and since the
longest pattern wins, Fable 5 and Mythos 5 were billed at the 5.2 rates ($8 / $40 instead of
$10 / $50). Each such row becomes the patterns that cannot be read as a date: the dated and
Bedrock ids (`claude-fable-5-2-*`, `*anthropic.claude-fable-5-2-*`) and the Vertex ids
(`claude-fable-5-2@*`), at the row's own rates (an operator's edit is kept); a pattern the
operator already wrote is left as it is.
"""

COLUMNS = ("input", "output", "cache_write", "cache_read", "cache_write_1h", "web_search_per_1k",
           "long_context", "updated_at")

REPLACED = {
    "claude-fable-5-2*": ("claude-fable-5-2-*", "claude-fable-5-2@*"),
    "claude-mythos-5-2*": ("claude-mythos-5-2-*", "claude-mythos-5-2@*"),
    "*anthropic.claude-fable-5-2*": ("*anthropic.claude-fable-5-2-*",),
    "*anthropic.claude-mythos-5-2*": ("*anthropic.claude-mythos-5-2-*",),
}


def _move(db, pairs):
    p = db.param
    columns = ", ".join(COLUMNS)
    for old, new_names in pairs:
        row = db.execute_sql(f"SELECT {columns} FROM model_price WHERE model = {p}", (old,)).fetchone()
        if row is None:
            continue
        for name in new_names:
            db.execute_sql(f"INSERT INTO model_price (model, {columns}) VALUES ({', '.join([p] * (len(COLUMNS) + 1))}) "
                           "ON CONFLICT (model) DO NOTHING", (name, *row))
        db.execute_sql(f"DELETE FROM model_price WHERE model = {p}", (old,))


def up(migrator, db):
    _move(db, REPLACED.items())


def down(migrator, db):
    _move(db, ((news[0], (old,)) for old, news in REPLACED.items()))
    p = db.param
    extra = [n for news in REPLACED.values() for n in news[1:]]
    db.execute_sql(f"DELETE FROM model_price WHERE model IN ({', '.join([p] * len(extra))})", extra)
