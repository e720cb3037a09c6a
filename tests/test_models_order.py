"""GET /v1/models ordered and dated as Anthropic's list, read through the official Python SDK.

Anthropic lists the newest model first with its release date as `created_at`;
octorelay does the same for the models it knows (app/services/releases.py),
then lists names it has no date for by name.
"""
from datetime import datetime, timezone

import anthropic
import pytest

from app.services.releases import RELEASES, release_date
from tests.support.app import anthropic_channel

PRICE = {"input": 1, "output": 2, "cache_write": 1.25, "cache_read": 0.1}


def utc(day: str) -> datetime:
    return datetime.fromisoformat(day).replace(tzinfo=timezone.utc)


@pytest.fixture
def sdk(live, admin):
    def make(**key_fields):
        key = admin.create_key(name="models", **key_fields)["key"]
        return anthropic.Anthropic(api_key=key, base_url=live, max_retries=0, timeout=10)
    return make


def test_newest_first_with_release_dates_then_unknown_names(sdk, admin, upstream):
    channel = anthropic_channel(admin, upstream, models=[
        "zeta-model", "claude-3-haiku-20240307", "claude-sonnet-4-5-20250929", "alpha-model",
        "claude-opus-4-6", "claude-next-20270102", "claude-sonnet-4-5"])
    client = sdk()
    models = list(client.models.list(limit=2))  # the SDK follows after_id across four pages
    assert [m.id for m in models] == [
        "claude-next-20270102",        # a snapshot the table does not know: dated by its name
        "claude-opus-4-6",             # 2026-02-05
        "claude-sonnet-4-5",           # 2025-09-29, the alias and its snapshot side by side
        "claude-sonnet-4-5-20250929",
        "claude-3-haiku-20240307",     # 2024-03-07
        "alpha-model", "zeta-model",   # no known date: after the dated ones, by name
    ]
    dates = {m.id: m.created_at for m in models}
    assert dates["claude-opus-4-6"] == utc("2026-02-05")
    assert dates["claude-sonnet-4-5"] == dates["claude-sonnet-4-5-20250929"] == utc("2025-09-29")
    assert dates["claude-3-haiku-20240307"] == utc("2024-03-07")
    assert dates["claude-next-20270102"] == utc("2027-01-02")
    channel_created = datetime.fromisoformat(channel["created_at"].replace("Z", "+00:00"))
    assert dates["alpha-model"] == dates["zeta-model"] == channel_created
    assert models[1].display_name == "Claude Opus 4.6" and models[1].type == "model"

    one = client.models.retrieve("claude-opus-4-6")
    assert (one.id, one.created_at) == ("claude-opus-4-6", utc("2026-02-05"))

    page = client.models.list(limit=3, after_id="claude-sonnet-4-5")
    assert [m.id for m in page.data] == ["claude-sonnet-4-5-20250929", "claude-3-haiku-20240307", "alpha-model"]
    assert page.has_more
    back = client.models.list(limit=2, before_id="alpha-model")
    assert [m.id for m in back.data] == ["claude-sonnet-4-5-20250929", "claude-3-haiku-20240307"]


def test_a_glob_lists_the_priced_names_it_matches(sdk, admin, upstream):
    admin.create_channel(name="gpt", type="openai", base_url=upstream.url, api_key="sk-test-openai",
                         models=["gpt-*"])
    client = sdk()
    assert [m.id for m in client.models.list()] == []  # a pattern is not a list of names
    assert admin.put("/admin/prices/gpt-5-mini", json=PRICE).status_code in (200, 201)
    assert admin.put("/admin/prices/gpt-6*", json=PRICE).status_code in (200, 201)  # a glob price names nothing
    assert admin.put("/admin/prices/other-1", json=PRICE).status_code in (200, 201)  # not the channel's
    admin.create_channel(name="gpt-exact", type="openai", base_url=upstream.url, api_key="sk-test-openai",
                         models=["gpt-4o"], model_map={"fast": "gpt-4o-mini"})
    assert [m.id for m in client.models.list()] == ["fast", "gpt-4o", "gpt-5-mini"]


def test_the_key_filter_keeps_the_order(sdk, admin, upstream):
    anthropic_channel(admin, upstream, models=["claude-opus-4-5", "claude-haiku-4-5", "claude-opus-4-1",
                                               "mine"])
    client = sdk(models=["claude-opus-*"])
    assert [m.id for m in client.models.list()] == ["claude-opus-4-5", "claude-opus-4-1"]
    with pytest.raises(anthropic.NotFoundError):
        client.models.retrieve("claude-haiku-4-5")


def test_release_dates():
    assert release_date("claude-opus-4-5") == release_date("claude-opus-4-5-20251101") == datetime(2025, 11, 24)
    assert release_date("claude-3-7-sonnet-latest") == datetime(2025, 2, 24)
    assert release_date("claude-x-20260230") is None  # not a calendar date
    assert release_date("my-model") is None and release_date("gpt-4o-2024-08-06") is None
    days = [datetime.fromisoformat(day) for day, *_ in RELEASES]
    assert days == sorted(days, reverse=True)  # the table reads newest first
    names = [name for _, *group in RELEASES for name in group]
    assert len(names) == len(set(names))


def test_every_seeded_model_name_has_a_release_date():
    """Each exact name the migrations price is a model Anthropic lists, so /v1/models can date it
    and put it in Anthropic's order (Claude Code's default, claude-opus-5-5, among them)."""
    import re
    from pathlib import Path

    migrations = Path(__file__).resolve().parent.parent / "migrations"
    source = "".join(p.read_text() for p in sorted(migrations.glob("0*.py")))
    names = set(re.findall(r'"(claude-[a-z0-9-]+)"', source))
    assert "claude-opus-5-5" in names
    assert not [n for n in sorted(names) if release_date(n) is None]
