"""Admin API for channels: upstream keys encrypted and masked, validation, health fields."""
import pytest

from app.models import Channel
from app.state import services
from tests.support.app import assert_error
from tests.support.constants import SECRET_KEY

UPSTREAM_KEY = "sk-ant-api03-abcdefghijklmnopqrstuvwxyz0123456789-Wq3"


def test_create_masks_and_encrypts_the_upstream_key(admin, app):
    body = admin.create_channel(name="claude", type="anthropic", api_key=UPSTREAM_KEY,
                                models=["claude-*"], model_map={"claude-x": "claude-sonnet-4-5"},
                                priority=5, weight=3, timeout_s=30)
    assert body["api_key"] == "sk-ant-…Wq3"
    assert body["base_url"] == "https://api.anthropic.com"
    assert body["model_map"] == {"claude-x": "claude-sonnet-4-5"}
    assert (body["priority"], body["weight"], body["timeout_s"], body["enabled"]) == (5, 3, 30.0, True)
    assert body["consecutive_failures"] == 0 and body["cooldown_until"] is None
    row = Channel.get_by_id(body["id"])
    assert UPSTREAM_KEY not in row.api_key_enc
    box = services(app).secrets
    assert box.decrypt(row.api_key_enc) == UPSTREAM_KEY
    for resp in (admin.get(f"/admin/channels/{body['id']}"), admin.get("/admin/channels")):
        assert UPSTREAM_KEY not in resp.get_data(as_text=True)


def test_base_url_trailing_slash_is_harmless(admin):
    body = admin.create_channel(name="o", type="openai", base_url="http://127.0.0.1:11434/v1/",
                                models=["llama*"])
    assert body["base_url"] == "http://127.0.0.1:11434/v1"


@pytest.mark.parametrize("fields, field", [
    ({"name": "x", "type": "bogus", "models": ["a"]}, "type"),
    ({"name": "x", "type": "mock", "models": []}, "models"),
    ({"name": "x", "type": "mock"}, "models"),
    ({"name": "x", "type": "mock", "models": "claude-*"}, "models"),
    ({"name": "x", "type": "openai", "models": ["a"]}, "base_url"),
    ({"name": "x", "type": "openai", "models": ["a"], "base_url": "ftp://h/v1"}, "base_url"),
    ({"name": "x", "type": "mock", "models": ["a"], "weight": 0}, "weight"),
    ({"name": "x", "type": "mock", "models": ["a"], "priority": "high"}, "priority"),
    ({"name": "x", "type": "mock", "models": ["a"], "timeout_s": -1}, "timeout_s"),
    ({"name": "x", "type": "mock", "models": ["a"], "model_map": {"a": 1}}, "model_map"),
    ({"type": "mock", "models": ["a"]}, "name"),
])
def test_create_rejects_bad_fields(admin, fields, field):
    body = assert_error(admin.post("/admin/channels", json=fields), 400, "invalid_request_error")
    assert field + ":" in body["error"]["message"] or field + "." in body["error"]["message"]
    assert Channel.select().count() == 0


def test_duplicate_name_is_400(admin):
    admin.create_channel(name="dup")
    assert_error(admin.post("/admin/channels", json={"name": "dup", "type": "mock", "models": ["a"]}),
                 400, "invalid_request_error", contains="name:")


def test_update_and_delete(admin):
    channel = admin.create_channel(name="a", type="anthropic", api_key=UPSTREAM_KEY)
    body = admin.patch(f"/admin/channels/{channel['id']}",
                       json={"enabled": False, "models": ["claude-haiku-*"], "api_key": "sk-ant-new-key-000000-XYZ"}).get_json()
    assert body["enabled"] is False and body["models"] == ["claude-haiku-*"]
    assert body["api_key"] == "sk-ant-…XYZ"
    assert_error(admin.patch(f"/admin/channels/{channel['id']}", json={"models": []}),
                 400, "invalid_request_error", contains="models")
    assert_error(admin.patch(f"/admin/channels/{channel['id']}", json={"type": "openai"}),
                 400, "invalid_request_error", contains="base_url")  # openai needs its own base_url
    assert admin.delete(f"/admin/channels/{channel['id']}").status_code == 204
    assert_error(admin.get(f"/admin/channels/{channel['id']}"), 404, "not_found_error")
    assert_error(admin.delete(f"/admin/channels/{channel['id']}"), 404, "not_found_error")


def test_clearing_the_upstream_key(admin):
    channel = admin.create_channel(name="a", type="anthropic", api_key=UPSTREAM_KEY)
    body = admin.patch(f"/admin/channels/{channel['id']}", json={"api_key": None}).get_json()
    assert body["api_key"] is None and Channel.get_by_id(channel["id"]).api_key_enc is None


def test_rotated_secret_keys_still_decrypt(env, admin, app, make_app):
    """The first key encrypts, all decrypt: old ciphertexts survive a rotation."""
    from app.crypto import new_secret_key

    channel = admin.create_channel(name="a", type="anthropic", api_key=UPSTREAM_KEY)
    rotated = make_app({**env, "OCTORELAY_SECRET_KEY": f"{new_secret_key()},{SECRET_KEY}"})
    token = Channel.get_by_id(channel["id"]).api_key_enc
    box = services(rotated).secrets
    assert box.decrypt(token) == UPSTREAM_KEY
    assert box.encrypt("x") != token
