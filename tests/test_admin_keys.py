"""Admin API for keys: create/list/show/update/revoke, validation, and the admin token."""
import pytest

from app.models import ApiKey
from tests.support.app import assert_error
from tests.support.constants import ADMIN_TOKEN


def test_create_returns_key_once_and_fields(admin):
    body = admin.create_key(name="team-a", budget_usd=12.5, token_quota=1000, rpm=60, tpm=10000,
                            max_concurrency=4, models=["claude-*"], expires_at="2031-01-02T03:04:05Z")
    assert body["key"].startswith("sk-octo-") and len(body["key"]) >= 8 + 43
    assert body["key_prefix"] == body["key"][:12]
    assert body["budget_usd"] == 12.5 and body["used_usd"] == 0 and body["used_tokens"] == 0
    assert body["token_quota"] == 1000 and body["rpm"] == 60 and body["tpm"] == 10000
    assert body["max_concurrency"] == 4 and body["models"] == ["claude-*"]
    assert body["expires_at"] == "2031-01-02T03:04:05Z" and body["created_at"].endswith("Z")
    assert body["status"] == "active" and body["enabled"] is True

    shown = admin.get(f"/admin/keys/{body['id']}").get_json()
    assert "key" not in shown and "key_hash" not in shown
    assert shown == {k: v for k, v in body.items() if k != "key"}
    listed = admin.get("/admin/keys").get_json()["data"]
    assert [k["id"] for k in listed] == [body["id"]] and "key" not in listed[0]


def test_keys_stored_only_as_hash(admin, app):
    body = admin.create_key()
    row = ApiKey.get_by_id(body["id"])
    assert body["key"] not in (row.key_hash, row.key_prefix, row.name)
    import hashlib
    assert row.key_hash == hashlib.sha256(body["key"].encode()).hexdigest()


def test_two_keys_differ(admin):
    assert admin.create_key(name="a")["key"] != admin.create_key(name="b")["key"]


def test_expiry_with_offset_is_stored_as_utc_and_past_expiry_accepted(admin):
    body = admin.create_key(expires_at="2030-06-01T12:00:00+02:00")
    assert body["expires_at"] == "2030-06-01T10:00:00Z"
    past = admin.create_key(name="old", expires_at="2001-01-01T00:00:00Z")
    assert past["status"] == "expired"


@pytest.mark.parametrize("fields, field", [
    ({}, "name"),
    ({"name": ""}, "name"),
    ({"name": 5}, "name"),
    ({"name": "x", "budget_usd": -1}, "budget_usd"),
    ({"name": "x", "budget_usd": "10"}, "budget_usd"),
    ({"name": "x", "token_quota": 1.5}, "token_quota"),
    ({"name": "x", "rpm": True}, "rpm"),
    ({"name": "x", "rpm": 0}, "rpm"),
    ({"name": "x", "models": "claude-*"}, "models"),
    ({"name": "x", "models": [1]}, "models.0"),
    ({"name": "x", "expires_at": "next tuesday"}, "expires_at"),
    ({"name": "x", "enabled": "yes"}, "enabled"),
    ({"name": "x", "colour": "red"}, "colour"),
])
def test_create_rejects_bad_fields_and_writes_nothing(admin, fields, field):
    body = assert_error(admin.post("/admin/keys", json=fields), 400, "invalid_request_error")
    assert body["error"]["message"].startswith(f"{field}:") or f"; {field}:" in body["error"]["message"]
    assert ApiKey.select().count() == 0


@pytest.mark.parametrize("data", ["not json", "[1, 2]", "null"])
def test_create_rejects_non_object_bodies(admin, data):
    resp = admin.post("/admin/keys", data=data, headers={"content-type": "application/json"})
    assert_error(resp, 400, "invalid_request_error")


def test_update_changes_only_given_fields(admin):
    key = admin.create_key(name="a", rpm=10, budget_usd=5)
    resp = admin.patch(f"/admin/keys/{key['id']}", json={"rpm": 20, "models": ["claude-haiku-*"]})
    assert resp.status_code == 200
    body = resp.get_json()
    assert body["rpm"] == 20 and body["models"] == ["claude-haiku-*"]
    assert body["budget_usd"] == 5 and body["name"] == "a"
    cleared = admin.patch(f"/admin/keys/{key['id']}", json={"budget_usd": None, "enabled": False}).get_json()
    assert cleared["budget_usd"] is None and cleared["status"] == "disabled"


def test_update_rejects_bad_input_and_changes_nothing(admin):
    key = admin.create_key(name="a", rpm=10)
    assert_error(admin.patch(f"/admin/keys/{key['id']}", json={"rpm": -1, "name": "b"}),
                 400, "invalid_request_error", contains="rpm:")
    assert admin.get(f"/admin/keys/{key['id']}").get_json()["name"] == "a"


def test_unknown_ids_are_404(admin):
    for method, path in [("get", "/admin/keys/999"), ("patch", "/admin/keys/999"),
                         ("delete", "/admin/keys/999"), ("get", "/admin/keys/abc")]:
        kwargs = {"json": {"rpm": 1}} if method == "patch" else {}
        assert_error(getattr(admin, method)(path, **kwargs), 404, "not_found_error")


def test_revoke_is_204_and_final(admin):
    key = admin.create_key()
    resp = admin.delete(f"/admin/keys/{key['id']}")
    assert resp.status_code == 204 and resp.data == b""
    shown = admin.get(f"/admin/keys/{key['id']}").get_json()
    assert shown["status"] == "revoked" and shown["revoked_at"]
    assert admin.delete(f"/admin/keys/{key['id']}").status_code == 204  # idempotent
    assert_error(admin.patch(f"/admin/keys/{key['id']}", json={"enabled": True}),
                 400, "invalid_request_error", contains="revoked")


def test_admin_requires_the_token(client):
    assert_error(client.get("/admin/keys"), 401, "authentication_error")
    assert_error(client.get("/admin/keys", headers={"Authorization": "Bearer wrong"}),
                 401, "authentication_error")
    assert_error(client.get("/admin/keys", headers={"x-api-key": ADMIN_TOKEN}),
                 401, "authentication_error")
    assert client.get("/admin/keys", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}).status_code == 200


def test_client_key_cannot_reach_admin(admin, client):
    key = admin.create_key()["key"]
    assert_error(client.get("/admin/keys", headers={"Authorization": f"Bearer {key}"}),
                 401, "authentication_error")


def test_admin_disabled_without_token(env, make_app):
    env = {k: v for k, v in env.items() if k != "OCTORELAY_ADMIN_TOKEN"}
    client = make_app(env).test_client()
    assert_error(client.get("/admin/keys", headers={"Authorization": "Bearer anything"}),
                 403, "permission_error", contains="OCTORELAY_ADMIN_TOKEN")


@pytest.mark.parametrize("value", [1, 0, "true", None])
def test_enabled_must_be_a_real_boolean(admin, value):
    assert_error(admin.post("/admin/keys", json={"name": "x", "enabled": value}), 400,
                 "invalid_request_error", contains="enabled:")
