"""POST /admin/channels/{id}/test: one minimal request through one channel, timed; health untouched."""
from app.models import Channel, RequestLog
from tests.support.app import anthropic_channel, assert_error
from tests.support.constants import UPSTREAM_KEY
from tests.support.upstream import drop_answer, error_answer


def probe(admin, channel_id):
    resp = admin.post(f"/admin/channels/{channel_id}/test")
    assert resp.status_code == 200, resp.get_json()
    return resp.get_json()


def test_success_sends_a_minimal_request_with_the_channel_key(admin, upstream):
    channel = anthropic_channel(admin, upstream, models=["claude-*"], model_map={"alias": "claude-haiku-4-5"})
    result = probe(admin, channel["id"])
    assert result["ok"] is True and result["status"] == 200 and result["error"] is None
    assert isinstance(result["latency_ms"], int) and result["latency_ms"] >= 0
    seen = upstream.requests[0]
    assert seen.path == "/v1/messages" and seen.headers["x-api-key"] == UPSTREAM_KEY
    body = seen.json()
    assert body["max_tokens"] == 1 and len(body["messages"]) == 1
    assert result["model"] == "alias" and body["model"] == "claude-haiku-4-5"  # mapped, as routing would
    assert RequestLog.select().count() == 0  # not client traffic: neither logged nor billed


def test_a_glob_is_tested_with_a_priced_model_it_matches(admin, upstream):
    channel = anthropic_channel(admin, upstream, models=["claude-sonnet-*"])
    result = probe(admin, channel["id"])
    assert result["ok"] and result["model"] == "claude-sonnet-5-5"  # the newest priced name, never a glob price
    assert upstream.requests[0].json()["model"] == result["model"]


def test_an_exact_model_name_comes_first(admin, upstream):
    channel = anthropic_channel(admin, upstream, models=["claude-*", "claude-opus-4-6"])
    assert probe(admin, channel["id"])["model"] == "claude-opus-4-6"


def test_upstream_401_is_reported_and_health_is_unchanged(admin, upstream):
    channel = anthropic_channel(admin, upstream)
    upstream.script(*[error_answer(401, "authentication_error", "invalid x-api-key")] * 4)
    for _ in range(4):  # more than the failures that would start a cooldown
        result = probe(admin, channel["id"])
        assert result == {**result, "ok": False, "status": 401, "error": "invalid x-api-key"}
    row = Channel.get_by_id(channel["id"])
    assert row.consecutive_failures == 0 and row.cooldown_until is None


def test_no_answer_is_a_502(admin, upstream):
    channel = anthropic_channel(admin, upstream)
    upstream.script(drop_answer())
    result = probe(admin, channel["id"])
    assert (result["ok"], result["status"]) == (False, 502) and result["error"]


def test_a_disabled_mock_channel_can_be_tested(admin):
    channel = admin.create_channel(name="m", type="mock", models=["claude-*"], enabled=False)
    assert probe(admin, channel["id"])["ok"] is True


def test_unknown_channel_is_404_and_needs_the_admin_token(admin, client):
    assert_error(admin.post("/admin/channels/999/test"), 404, "not_found_error")
    assert_error(client.post("/admin/channels/999/test"), 401, "authentication_error")


def test_a_glob_matching_no_priced_model_is_400(admin, upstream):
    channel = anthropic_channel(admin, upstream, models=["nothing-priced-*"])
    assert_error(admin.post(f"/admin/channels/{channel['id']}/test"), 400, "invalid_request_error",
                 contains="models:")
    assert not upstream.requests
