"""Bill as Anthropic bills: 1-hour cache writes, long-context tiers, web searches, glob prices.

Adds to model_price: cache_write_1h (null = 2 x input), web_search_per_1k
(micro-dollars per 1,000 searches) and long_context (JSON tier); to
request_log: cache_creation_1h_input_tokens and web_search_requests.

Seeds Anthropic's list prices as published on platform.claude.com (the
pricing page and each model's overview page, read 2026-12-06): exact names
for the current models, and family globs so that new dated ids
(`claude-opus-5-5-20261201`), Bedrock ids (`us.anthropic.claude-…-v1:0`)
and Vertex ids (`claude-…@20250929`) are priced from their first request. Existing
rows are kept as they are (an operator may have changed them); seeded rows
gain the web-search price and, for Sonnet 4 / 4.5, their long-context tier.
USD per million tokens: input, output, 5-minute write, 1-hour write, cache read.
"""
import datetime

from peewee import BigIntegerField, TextField
from playhouse.migrate import migrate

WEB_SEARCH_PER_1K = 10  # USD per 1,000 searches, every model

SONNET_4_LONG = {"threshold_tokens": 200_000, "rates": (6, 22.5, 7.5, 12, 0.6)}
HAIKU_5_5_LONG = {"threshold_tokens": 100_000, "rates": (0.5, 2.5, 0.625, 1.0, 0.05)}

# (model names and globs, (input, output, cache_write, cache_write_1h, cache_read), long-context tier)
FAMILIES = [
    (("claude-fable-5-2", "claude-mythos-5-2", "claude-fable-5-2*", "claude-mythos-5-2*"),
     (8, 40, 10, 16, 0.2), None),
    (("claude-fable-5-1*", "claude-mythos-5-1*"), (10, 50, 12.5, 20, 0.25), None),
    (("claude-fable-5*", "claude-mythos-5*"), (10, 50, 12.5, 20, 1), None),
    (("claude-opus-5-5", "claude-opus-5-5*"), (4, 20, 5, 8, 0.2), None),
    (("claude-opus-5*", "claude-opus-4-8*", "claude-opus-4-7*", "claude-opus-4-6*", "claude-opus-4-5*"),
     (5, 25, 6.25, 10, 0.5), None),
    (("claude-opus-4-1*", "claude-opus-4-0*", "claude-opus-4-2025*", "claude-3-opus*"),
     (15, 75, 18.75, 30, 1.5), None),
    (("claude-sonnet-5-5", "claude-sonnet-5-5*"), (2, 10, 2.5, 4, 0.1), None),
    (("claude-sonnet-5", "claude-sonnet-5*"), (2, 10, 2.5, 4, 0.2), None),
    (("claude-sonnet-4-6*", "claude-3-7-sonnet*"), (3, 15, 3.75, 6, 0.3), None),
    (("claude-sonnet-4-5*", "claude-sonnet-4-0*", "claude-sonnet-4-2025*"), (3, 15, 3.75, 6, 0.3), SONNET_4_LONG),
    (("claude-haiku-5-5", "claude-haiku-5-5*"), (0.1, 0.5, 0.125, 0.2, 0.01), HAIKU_5_5_LONG),
    (("claude-haiku-4-5*",), (1, 5, 1.25, 2, 0.1), None),
    (("claude-3-5-haiku*",), (0.8, 4, 1, 1.6, 0.08), None),
    (("claude-3-haiku*",), (0.25, 1.25, 0.3, 0.5, 0.03), None),
]
# exact names seeded by 0002 that bill at Sonnet 4 / 4.5's long-context tier
SONNET_4_EXACT = ("claude-sonnet-4-5", "claude-sonnet-4-5-20250929", "claude-sonnet-4-0",
                  "claude-sonnet-4-20250514")
SEEDED_BY_0002 = (
    "claude-fable-5-1", "claude-mythos-5-1", "claude-fable-5", "claude-mythos-5", "claude-opus-5",
    "claude-opus-4-8", "claude-opus-4-7", "claude-opus-4-6", "claude-opus-4-5", "claude-opus-4-5-20251101",
    "claude-opus-4-1", "claude-opus-4-1-20250805", "claude-opus-4-0", "claude-opus-4-20250514",
    "claude-3-opus-20240229", "claude-sonnet-4-6", *SONNET_4_EXACT, "claude-3-7-sonnet-20250219",
    "claude-3-7-sonnet-latest", "claude-haiku-4-5", "claude-haiku-4-5-20251001",
    "claude-3-5-haiku-20241022", "claude-3-5-haiku-latest", "claude-3-haiku-20240307")


def _micros(usd):
    return int(round(usd * 1_000_000))


def _tier(tier):
    if tier is None:
        return None
    names = ("input", "output", "cache_write", "cache_write_1h", "cache_read")
    return {"threshold_tokens": tier["threshold_tokens"],
            **{name: _micros(v) for name, v in zip(names, tier["rates"])}}


def _json(value):
    import json

    return None if value is None else json.dumps(value, separators=(",", ":"), sort_keys=True)


def names(models):
    """Each family's names and globs, plus the glob of its Bedrock ids
    (`us.anthropic.claude-sonnet-4-5-20250929-v1:0`); Vertex ids (`claude-sonnet-4-5@20250929`)
    already match the family glob."""
    for model in models:
        yield model
        if model.endswith("*"):
            yield "*anthropic." + model


def rows():
    now = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
    for models, rates, tier in FAMILIES:
        inp, out, cw, cw1h, cr = (_micros(r) for r in rates)
        for model in names(models):
            yield (model, inp, out, cw, cr, cw1h, _micros(WEB_SEARCH_PER_1K), _json(_tier(tier)), now)


def up(migrator, db):
    migrate(
        migrator.add_column("model_price", "cache_write_1h", BigIntegerField(null=True)),
        migrator.add_column("model_price", "web_search_per_1k", BigIntegerField(null=True)),
        migrator.add_column("model_price", "long_context", TextField(null=True)),
        migrator.add_column("request_log", "cache_creation_1h_input_tokens", BigIntegerField(default=0)),
        migrator.add_column("request_log", "web_search_requests", BigIntegerField(default=0)),
    )
    p = db.param
    sql = ("INSERT INTO model_price (model, input, output, cache_write, cache_read, cache_write_1h, "
           "web_search_per_1k, long_context, updated_at) VALUES (%s) ON CONFLICT (model) DO NOTHING"
           % ", ".join([p] * 9))
    for row in rows():
        db.execute_sql(sql, row)
    names = ", ".join([p] * len(SEEDED_BY_0002))
    db.execute_sql(f"UPDATE model_price SET web_search_per_1k = {p} "
                   f"WHERE web_search_per_1k IS NULL AND model IN ({names})",
                   (_micros(WEB_SEARCH_PER_1K), *SEEDED_BY_0002))
    names = ", ".join([p] * len(SONNET_4_EXACT))
    db.execute_sql(f"UPDATE model_price SET long_context = {p} WHERE long_context IS NULL "
                   f"AND input = {p} AND output = {p} AND model IN ({names})",
                   (_json(_tier(SONNET_4_LONG)), _micros(3), _micros(15), *SONNET_4_EXACT))


def down(migrator, db):
    seeded = [r[0] for r in rows()]
    db.execute_sql("DELETE FROM model_price WHERE model IN (%s)" % ", ".join([db.param] * len(seeded)), seeded)
    migrate(
        migrator.drop_column("request_log", "web_search_requests"),
        migrator.drop_column("request_log", "cache_creation_1h_input_tokens"),
        migrator.drop_column("model_price", "long_context"),
        migrator.drop_column("model_price", "web_search_per_1k"),
        migrator.drop_column("model_price", "cache_write_1h"),
    )
