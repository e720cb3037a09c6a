"""Seed Anthropic's list prices (USD per million tokens; cache_write is the 5-minute rate).

Stored as whole micro-dollars per million tokens. Operators change them
with `PUT /admin/prices/{model}` or `octorelay prices set`; this only
inserts models that have no price yet.
"""
import datetime

# model ids (dated ids and their aliases): input, output, cache_write, cache_read
FAMILIES = [
    (("claude-fable-5-1", "claude-mythos-5-1"), (10, 50, 12.5, 0.25)),
    (("claude-fable-5", "claude-mythos-5"), (10, 50, 12.5, 1)),
    (("claude-opus-5", "claude-opus-4-8", "claude-opus-4-7", "claude-opus-4-6",
      "claude-opus-4-5", "claude-opus-4-5-20251101"), (5, 25, 6.25, 0.5)),
    (("claude-opus-4-1", "claude-opus-4-1-20250805", "claude-opus-4-0",
      "claude-opus-4-20250514", "claude-3-opus-20240229"), (15, 75, 18.75, 1.5)),
    (("claude-sonnet-4-6", "claude-sonnet-4-5", "claude-sonnet-4-5-20250929",
      "claude-sonnet-4-0", "claude-sonnet-4-20250514", "claude-3-7-sonnet-20250219",
      "claude-3-7-sonnet-latest"), (3, 15, 3.75, 0.3)),
    (("claude-haiku-4-5", "claude-haiku-4-5-20251001"), (1, 5, 1.25, 0.1)),
    (("claude-3-5-haiku-20241022", "claude-3-5-haiku-latest"), (0.8, 4, 1, 0.08)),
    (("claude-3-haiku-20240307",), (0.25, 1.25, 0.3, 0.03)),
]


def _micros(usd_per_mtok):
    return int(round(usd_per_mtok * 1_000_000))


def rows():
    now = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
    for models, prices in FAMILIES:
        inp, out, cw, cr = (_micros(p) for p in prices)
        for model in models:
            yield (model, inp, out, cw, cr, now)


def up(migrator, db):
    sql = ("INSERT INTO model_price (model, input, output, cache_write, cache_read, updated_at) "
           "VALUES (%s) ON CONFLICT (model) DO NOTHING" % ", ".join([db.param] * 6))
    for row in rows():
        db.execute_sql(sql, row)


def down(migrator, db):
    placeholders = ", ".join([db.param] * len(list(rows())))
    db.execute_sql("DELETE FROM model_price WHERE model IN (%s)" % placeholders,
                   [r[0] for r in rows()])
