"""GET /v1/models: exact names served by enabled channels, filtered by the key, Anthropic's list shape."""
import pytest

from app.services.catalog import display_name
from tests.support.app import assert_error


@pytest.fixture
def raw(admin):
    admin.create_channel(name="mock", models=["claude-haiku-*", "exact-model", "other-*"],
                         model_map={"alias-model": "claude-haiku-4-5"})
    admin.create_channel(name="off", models=["disabled-model"], enabled=False)
    return admin.create_key(name="k")["key"]


def ids(resp):
    return [m["id"] for m in resp.get_json()["data"]]


def test_lists_exact_names_map_keys_and_priced_glob_matches(client, raw):
    resp = client.get("/v1/models?limit=1000", headers={"x-api-key": raw})
    body = resp.get_json()
    # released models first (newest first), then names with no known date, by name
    assert ids(resp) == ["claude-haiku-5-5", "claude-haiku-4-5", "claude-haiku-4-5-20251001",
                         "alias-model", "exact-model"]
    assert body["has_more"] is False and body["first_id"] == "claude-haiku-5-5" and body["last_id"] == "exact-model"
    assert body["data"][0]["created_at"] == "2026-10-07T00:00:00Z"
    entry = body["data"][1]
    assert entry == {"type": "model", "id": "claude-haiku-4-5", "display_name": "Claude Haiku 4.5",
                     "created_at": "2025-10-15T00:00:00Z"}
    assert body["data"][3]["created_at"].endswith("Z")


def test_key_model_globs_filter_the_list(client, admin):
    admin.create_channel(name="mock", models=["claude-haiku-*", "exact-model"])
    raw = admin.create_key(name="k", models=["claude-*"])["key"]
    assert ids(client.get("/v1/models", headers={"x-api-key": raw})) == [
        "claude-haiku-5-5", "claude-haiku-4-5", "claude-haiku-4-5-20251001"]
    assert_error(client.get("/v1/models/exact-model", headers={"x-api-key": raw}), 404, "not_found_error")
    assert client.get("/v1/models/claude-haiku-4-5", headers={"x-api-key": raw}).get_json()["id"] == "claude-haiku-4-5"


def test_paging(client, raw):
    h = {"x-api-key": raw}
    first = client.get("/v1/models?limit=2", headers=h).get_json()
    assert [m["id"] for m in first["data"]] == ["claude-haiku-5-5", "claude-haiku-4-5"]
    assert first["has_more"]
    second = client.get(f"/v1/models?limit=2&after_id={first['last_id']}", headers=h).get_json()
    assert [m["id"] for m in second["data"]] == ["claude-haiku-4-5-20251001", "alias-model"]
    assert second["has_more"] is True
    back = client.get("/v1/models?limit=1&before_id=exact-model", headers=h).get_json()
    assert [m["id"] for m in back["data"]] == ["alias-model"] and back["has_more"]


@pytest.mark.parametrize("limit", ["0", "1001", "x", "-1"])
def test_bad_limit(client, raw, limit):
    assert_error(client.get(f"/v1/models?limit={limit}", headers={"x-api-key": raw}), 400, "invalid_request_error")


def test_unknown_model_is_404(client, raw):
    assert_error(client.get("/v1/models/disabled-model", headers={"x-api-key": raw}), 404, "not_found_error")


@pytest.mark.parametrize("model_id, name", [
    ("claude-sonnet-4-5-20250929", "Claude Sonnet 4.5"),
    ("claude-3-5-haiku-latest", "Claude 3.5 Haiku"),
    ("claude-opus-4-1", "Claude Opus 4.1"),
    ("claude-fable-5", "Claude Fable 5"),
])
def test_display_names(model_id, name):
    assert display_name(model_id) == name
