"""POST /v1/messages, non-streaming, through a real upstream on loopback."""
import json

import pytest

from app.models import ApiKey, RequestLog
from app.state import services
from tests.support.app import anthropic_channel, assert_error
from tests.support.bodies import messages_body
from tests.support.constants import ANSWER_CANARY, PROMPT_CANARY, UPSTREAM_KEY
from tests.support.upstream import (anthropic_message, body_answer, drop_answer, error_answer, hang_answer,
                                    json_answer)

BODY = messages_body("claude-sonnet-4-5", content=f"Hello {PROMPT_CANARY}")


def conversation(i: int) -> dict:
    """The first turn of conversation `i`: session affinity tells conversations apart by it."""
    return {**BODY, "messages": [{"role": "user", "content": f"Hello {i}"}]}


def post(client, key, body=BODY, **headers):
    return client.post("/v1/messages", data=json.dumps(body),
                       headers={"x-api-key": key["key"], "content-type": "application/json", **headers})


def test_answer_passes_through_unchanged(client, admin, upstream, key):
    anthropic_channel(admin, upstream)
    message = anthropic_message(f"Hi there {ANSWER_CANARY}", usage={"input_tokens": 40, "output_tokens": 7})
    upstream.script(json_answer(message, headers={"request-id": "req_up_123"}))
    resp = post(client, key)
    assert resp.status_code == 200
    assert resp.get_json() == message
    assert resp.headers["upstream-request-id"] == "req_up_123"
    assert resp.headers["request-id"].startswith("req_") and resp.headers["request-id"] != "req_up_123"
    assert "content-encoding" not in resp.headers


def test_body_bytes_and_headers_forwarded_from_an_allow_list(client, admin, upstream, key):
    anthropic_channel(admin, upstream)
    raw = json.dumps({**BODY, "future_field": {"x": [1, 2.50]}, "metadata": {"user_id": "u"}},
                     indent=1).encode()
    resp = client.post("/v1/messages?beta=true", data=raw, headers={
        "x-api-key": key["key"], "content-type": "application/json",
        "anthropic-version": "2023-06-01", "anthropic-beta": "a-2025-01-01,b-2025-02-02",
        "anthropic-dangerous-direct-browser-access": "true",
        "cookie": "session=abc", "connection": "keep-alive", "x-forwarded-for": "1.2.3.4",
        "authorization": "Bearer also-should-not-leak"})
    assert resp.status_code == 200
    seen = upstream.requests[0]
    assert seen.path == "/v1/messages" and seen.body == raw  # the client's exact bytes
    assert seen.headers["x-api-key"] == UPSTREAM_KEY
    assert seen.headers["anthropic-beta"] == "a-2025-01-01,b-2025-02-02"
    assert seen.headers["anthropic-version"] == "2023-06-01"
    assert seen.headers["anthropic-dangerous-direct-browser-access"] == "true"
    for header in ("cookie", "authorization", "x-forwarded-for"):
        assert header not in seen.headers
    assert key["key"] not in repr(dict(seen.headers)) + seen.body.decode()


def test_anthropic_version_defaulted(client, admin, upstream, key):
    anthropic_channel(admin, upstream)
    post(client, key)
    assert upstream.requests[0].headers["anthropic-version"] == "2023-06-01"


def test_model_map_rewrites_only_the_model(client, admin, upstream, key):
    anthropic_channel(admin, upstream, models=["team-model"], model_map={"team-model": "claude-opus-4-1"})
    upstream.script(json_answer(anthropic_message(model="claude-opus-4-1",
                                                  usage={"input_tokens": 1000, "output_tokens": 100})))
    resp = post(client, key, {**BODY, "model": "team-model", "temperature": 0.5})
    assert resp.status_code == 200
    sent = upstream.requests[0].json()
    assert sent == {**BODY, "model": "claude-opus-4-1", "temperature": 0.5}
    row = RequestLog.get()
    # priced as the upstream model: 1000 x $15/M + 100 x $75/M = $0.0225
    assert row.model == "team-model" and row.cost_nanos == 22_500_000


def test_usage_and_cost_exact_with_cache_tokens(client, admin, upstream, key):
    anthropic_channel(admin, upstream)
    usage = {"input_tokens": 1234, "output_tokens": 567, "cache_creation_input_tokens": 2000,
             "cache_read_input_tokens": 30000}
    upstream.script(json_answer(anthropic_message(usage=usage)))
    assert post(client, key).status_code == 200
    row = RequestLog.get()
    assert (row.input_tokens, row.output_tokens, row.cache_creation_input_tokens,
            row.cache_read_input_tokens) == (1234, 567, 2000, 30000)
    # sonnet 4.5: 3 / 15 / 3.75 / 0.30 per million
    expected = 1234 * 3000 + 567 * 15000 + 2000 * 3750 + 30000 * 300  # nano-dollars
    assert row.cost_nanos == expected
    assert (row.status, row.stream, row.attempts, row.client_disconnected) == (200, False, 1, False)
    charged = ApiKey.get_by_id(key["id"])
    assert charged.used_nanos == expected and charged.used_tokens == 1234 + 567 + 2000 + 30000
    assert RequestLog.get().request_id != ""


def test_unknown_price_costs_zero(client, admin, upstream, key):
    anthropic_channel(admin, upstream, models=["claude-*", "no-price-model"])
    upstream.script(json_answer(anthropic_message(model="no-price-model")))
    assert post(client, key, {**BODY, "model": "no-price-model"}).status_code == 200
    row = RequestLog.get()
    assert row.cost_nanos == 0 and row.input_tokens == 25
    assert ApiKey.get_by_id(key["id"]).used_tokens == 40


@pytest.mark.parametrize("status, error_type", [(400, "invalid_request_error"), (404, "not_found_error"),
                                                (413, "request_too_large")])
def test_client_errors_pass_through_without_retry(client, admin, upstream, key, status, error_type):
    anthropic_channel(admin, upstream, name="a")
    anthropic_channel(admin, upstream, name="b")
    answer = error_answer(status, error_type, "upstream says no")
    upstream.script(answer)
    resp = post(client, key)
    assert resp.status_code == status
    body = resp.get_json()
    assert body["error"] == {"type": error_type, "message": "upstream says no"}
    assert body["request_id"] == answer.request_id  # the upstream's body is kept
    assert resp.headers["upstream-request-id"] == answer.request_id
    assert resp.headers["request-id"] != answer.request_id
    assert len(upstream.requests) == 1
    row = RequestLog.get()
    assert (row.status, row.error_type, row.attempts) == (status, error_type, 1)


@pytest.mark.parametrize("failure", [
    lambda: error_answer(500, "api_error", "boom"),
    lambda: error_answer(529, "overloaded_error", "Overloaded"),
    lambda: error_answer(429, "rate_limit_error", "slow down"),
    lambda: error_answer(401, "authentication_error", "bad key"),
    lambda: error_answer(403, "permission_error", "nope"),
    lambda: body_answer("<html>bad gateway</html>", status=502, content_type="text/html"),
    lambda: drop_answer(),
])
def test_failover_to_the_next_channel(client, admin, upstream, key, failure):
    anthropic_channel(admin, upstream, name="first", priority=10)
    anthropic_channel(admin, upstream, name="second", priority=0)
    upstream.script(failure(), json_answer(anthropic_message("from second")))
    resp = post(client, key)
    assert resp.status_code == 200 and resp.get_json()["content"][0]["text"] == "from second"
    assert len(upstream.requests) == 2
    row = RequestLog.get()
    assert row.attempts == 2 and row.status == 200
    channels = {c["name"]: c for c in admin.get("/admin/channels").get_json()["data"]}
    assert row.channel_id == channels["second"]["id"]
    assert channels["first"]["consecutive_failures"] == 1


def test_failover_on_connection_refused(client, admin, upstream, key):
    from tests.support.net import free_port

    admin.create_channel(name="dead", type="anthropic", base_url=f"http://127.0.0.1:{free_port()}",
                         models=["claude-*"], priority=10)
    anthropic_channel(admin, upstream, name="alive")
    assert post(client, key).status_code == 200


def test_failover_on_timeout_before_the_head(client, admin, upstream, key):
    anthropic_channel(admin, upstream, name="slow", priority=10, timeout_s=0.5)
    anthropic_channel(admin, upstream, name="fast")
    upstream.script(hang_answer(5), json_answer(anthropic_message()))
    assert post(client, key).status_code == 200
    assert RequestLog.get().attempts == 2


def test_all_fail_returns_the_last_upstream_answer(client, admin, upstream, key):
    for name in ("a", "b", "c", "d"):
        anthropic_channel(admin, upstream, name=name)
    upstream.script(error_answer(500, "api_error", "one"), error_answer(503, "overloaded_error", "two"),
                    error_answer(529, "overloaded_error", "three"), json_answer(anthropic_message()))
    resp = post(client, key)
    assert resp.status_code == 529 and resp.get_json()["error"]["message"] == "three"
    assert len(upstream.requests) == 3  # OCTORELAY_MAX_ATTEMPTS defaults to 3
    row = RequestLog.get()
    assert (row.status, row.error_type, row.attempts) == (529, "overloaded_error", 3)


def test_no_answer_at_all_is_502_or_504(client, admin, upstream, key):
    anthropic_channel(admin, upstream, name="only", timeout_s=0.3)
    upstream.script(drop_answer())
    assert_error(post(client, key), 502, "api_error")
    upstream.script(hang_answer(3))
    assert_error(post(client, key), 504, "timeout_error")
    rows = list(RequestLog.select().order_by(RequestLog.id))
    assert [(r.status, r.error_type) for r in rows] == [(502, "api_error"), (504, "timeout_error")]


def test_retry_after_from_upstream_is_kept(client, admin, upstream, key):
    anthropic_channel(admin, upstream, name="only")
    upstream.script(error_answer(429, "rate_limit_error", "later", headers={"retry-after": "7"}))
    resp = post(client, key)
    assert resp.status_code == 429 and resp.headers["retry-after"] == "7"


def test_repeated_failures_cool_a_channel_down(client, admin, upstream, key):
    bad = anthropic_channel(admin, upstream, name="bad", priority=10)
    anthropic_channel(admin, upstream, name="good")
    upstream.set_default(json_answer(anthropic_message()))
    for i in range(3):  # three conversations: one would stay where it failed over (session affinity)
        upstream.script(error_answer(500, "api_error", "down"))
        assert post(client, key, conversation(i)).status_code == 200
    state = admin.get(f"/admin/channels/{bad['id']}").get_json()
    assert state["consecutive_failures"] == 3 and state["cooldown_until"] is not None
    before = len(upstream.requests)
    import time
    time.sleep(1.1)  # the channel list cache refreshes
    assert post(client, key).status_code == 200
    assert len(upstream.requests) == before + 1  # the cooling channel was skipped


def test_weights_spread_load_within_a_priority(client, admin, upstream, key):
    heavy = anthropic_channel(admin, upstream, name="heavy", weight=9)
    anthropic_channel(admin, upstream, name="light", weight=1)
    upstream.set_default(json_answer(anthropic_message()))
    for i in range(60):  # sixty conversations: the turns of one stay on one channel
        assert post(client, key, conversation(i)).status_code == 200
    share = RequestLog.select().where(RequestLog.channel_id == heavy["id"]).count() / 60
    assert 0.7 <= share <= 0.99


def test_no_channel_for_model_is_404_and_logged(client, admin, key):
    admin.create_channel(name="m", models=["claude-*"])
    assert_error(post(client, key, {**BODY, "model": "gpt-4o"}), 404, "not_found_error", contains="gpt-4o")
    row = RequestLog.get()
    assert (row.status, row.error_type, row.attempts) == (404, "not_found_error", 0)


def test_model_not_allowed_for_key_is_403(client, admin):
    admin.create_channel(name="m", models=["claude-*"])
    limited = admin.create_key(name="haiku-only", models=["claude-haiku-*"])
    assert_error(post(client, limited), 403, "permission_error", contains="claude-sonnet-4-5")
    assert post(client, limited, {**BODY, "model": "claude-haiku-4-5"}).status_code == 200


def test_disabled_channel_is_not_used(client, admin, upstream, key):
    anthropic_channel(admin, upstream, name="off", enabled=False)
    assert_error(post(client, key), 404, "not_found_error")
    assert upstream.requests == []


def test_connections_are_pooled(client, admin, upstream, key):
    anthropic_channel(admin, upstream)
    upstream.set_default(json_answer(anthropic_message()))
    for _ in range(5):
        assert post(client, key).status_code == 200
    assert upstream.connections_accepted == 1


def test_count_tokens_is_forwarded(client, admin, upstream, key):
    anthropic_channel(admin, upstream, model_map={"claude-x": "claude-haiku-4-5"}, models=["claude-x"])
    upstream.script(json_answer({"input_tokens": 321}), path="/v1/messages/count_tokens")
    resp = client.post("/v1/messages/count_tokens", json={"model": "claude-x", "messages": BODY["messages"]},
                       headers={"x-api-key": key["key"]})
    assert resp.status_code == 200 and resp.get_json() == {"input_tokens": 321}
    assert upstream.requests[0].path == "/v1/messages/count_tokens"
    assert upstream.requests[0].json()["model"] == "claude-haiku-4-5"
    assert RequestLog.select().count() == 0  # free: not billed, not logged


def test_mock_channel_answers_locally(client, admin, key):
    admin.create_channel(name="mock", models=["claude-*"])
    resp = post(client, key)
    body = resp.get_json()
    assert resp.status_code == 200 and body["type"] == "message" and body["content"][0]["type"] == "text"
    assert body["usage"]["input_tokens"] > 0 and body["usage"]["output_tokens"] > 0
    row = RequestLog.get()
    assert row.output_tokens == body["usage"]["output_tokens"] and row.cost_nanos > 0


def test_a_channel_whose_key_cannot_be_decrypted_does_not_break_the_others(env, admin, upstream, key, make_app):
    from app.crypto import new_secret_key

    anthropic_channel(admin, upstream, name="old-secret", priority=10)
    admin.create_channel(name="mock", models=["claude-*"])
    other = make_app({**env, "OCTORELAY_SECRET_KEY": new_secret_key()}).test_client()
    resp = post(other, key)
    assert resp.status_code == 200 and resp.get_json()["id"].startswith("msg_mock_")
    assert upstream.requests == []


def test_an_answer_cut_mid_body_counts_against_the_channel(client, admin, upstream, key):
    from tests.support.upstream import raw_answer

    channel = anthropic_channel(admin, upstream)
    upstream.script(raw_answer(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                               b"content-length: 500\r\n\r\n{\"id\": \"msg_"))
    assert_error(post(client, key), 502, "api_error")
    assert admin.get(f"/admin/channels/{channel['id']}").get_json()["consecutive_failures"] == 1


def test_failures_interleaved_with_successes_in_other_workers_do_not_cool_a_channel(app, admin, upstream):
    """Worker B's success must reset a count worker A raised, even while B's cache is stale."""
    import time

    from app.services.routing import ChannelDirectory

    channel = anthropic_channel(admin, upstream)
    box = services(app).secrets
    worker_a, worker_b = ChannelDirectory(box, ttl=1.0), ChannelDirectory(box, ttl=1.0)
    stale = worker_b.candidates("claude-sonnet-4-5")[0]
    for _ in range(4):
        worker_a.record_failure(worker_a.candidates("claude-sonnet-4-5")[0], "http_500")
        time.sleep(1.05)  # B re-checks a channel it believes healthy at most once a second
        worker_b.record_success(stale)
    state = admin.get(f"/admin/channels/{channel['id']}").get_json()
    assert state["consecutive_failures"] == 0 and state["cooldown_until"] is None


def test_a_burst_of_failures_makes_one_cooldown(app, admin, upstream):
    from app.services.routing import ChannelDirectory

    channel = anthropic_channel(admin, upstream)
    directory = ChannelDirectory(services(app).secrets, ttl=1.0)
    config = directory.candidates("claude-sonnet-4-5")[0]
    for _ in range(16):  # 16 requests in flight all fail
        directory.record_failure(config, "http_529")
    state = admin.get(f"/admin/channels/{channel['id']}").get_json()
    assert state["consecutive_failures"] == 3  # counting stopped once it cooled down
    until = state["cooldown_until"]
    from datetime import datetime, timezone
    rest = datetime.fromisoformat(until.replace("Z", "+00:00")) - datetime.now(timezone.utc)
    assert 20 < rest.total_seconds() <= 31  # the first cooldown: 30 s, not escalated by the burst


def test_a_channel_without_base_url_is_routed_to_the_types_default(app, admin):
    """An `anthropic` channel created without `base_url` (as bootstrap does with ANTHROPIC_API_KEY)
    must reach https://api.anthropic.com, not fail every request with a URL-less 502."""
    admin.create_channel(name="official", type="anthropic", api_key="sk-ant-api03-x", models=["claude-*"])
    [channel] = services(app).relay.directory.candidates("claude-sonnet-4-5")
    assert channel.base_url == "https://api.anthropic.com"
