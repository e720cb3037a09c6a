"""What an `anthropic` upstream may answer that Anthropic would not, as the client sees it through
the official SDK: a JSON message to a streamed request, a refused channel key, and error bodies
that are not Anthropic's shape (issue 18, items 3, 5, 6)."""
import anthropic
import pytest

from app.models import ApiKey, RequestLog
from app.state import services
from tests.support.app import anthropic_channel, assert_error, wait_for_row
from tests.support.bodies import messages_body
from tests.support.upstream import anthropic_message, body_answer, error_answer, json_answer

BODY = messages_body()


def sdk(live, key, **kwargs):
    return anthropic.Anthropic(api_key=key["key"], base_url=live, max_retries=0, **kwargs)


def test_a_json_answer_to_a_stream_reaches_the_sdk_as_events_and_is_billed(live, admin, upstream, key):
    anthropic_channel(admin, upstream)
    content = [{"type": "thinking", "thinking": "let me see", "signature": "EqQBCgIYAh=="},
               {"type": "text", "text": "Paris is the capital."},
               {"type": "tool_use", "id": "toolu_01", "name": "lookup", "input": {"city": "Paris", "n": [1, 2]}}]
    usage = {"input_tokens": 40, "output_tokens": 17, "cache_read_input_tokens": 300,
             "cache_creation_input_tokens": 0}
    upstream.script(json_answer(anthropic_message(content=content, usage=usage, stop_reason="tool_use")))
    with sdk(live, key).messages.stream(**BODY) as stream:
        texts = list(stream.text_stream)
        final = stream.get_final_message()
    assert "".join(texts) == "Paris is the capital."
    assert [b.type for b in final.content] == ["thinking", "text", "tool_use"]
    assert final.content[0].signature == "EqQBCgIYAh==" and final.content[0].thinking == "let me see"
    assert final.content[2].input == {"city": "Paris", "n": [1, 2]}
    assert final.stop_reason == "tool_use"
    assert (final.usage.input_tokens, final.usage.output_tokens, final.usage.cache_read_input_tokens) == (40, 17, 300)
    row = wait_for_row()
    assert (row.status, row.stream, row.input_tokens, row.output_tokens, row.cache_read_input_tokens) == \
        (200, True, 40, 17, 300)
    assert row.cost_nanos > 0 and ApiKey.get_by_id(key["id"]).used_nanos == row.cost_nanos


def test_a_stream_answered_with_json_that_is_no_message_is_a_502(client, admin, upstream, key):
    anthropic_channel(admin, upstream)
    upstream.script(json_answer({"hello": "world"}))
    resp = client.post("/v1/messages", json={**BODY, "stream": True}, headers={"x-api-key": key["key"]})
    assert_error(resp, 502, "api_error", contains="neither an event stream nor a message")
    assert RequestLog.get().status == 502


@pytest.mark.parametrize("status, error_type", [(401, "authentication_error"), (403, "permission_error")])
def test_a_refused_channel_key_is_a_502_that_does_not_blame_the_client(live, admin, upstream, key, status,
                                                                         error_type):
    channel = anthropic_channel(admin, upstream)
    upstream.script(error_answer(status, error_type, "invalid x-api-key"))
    with pytest.raises(anthropic.APIStatusError) as caught:
        sdk(live, key).messages.create(**BODY)
    error = caught.value
    assert not isinstance(error, (anthropic.AuthenticationError, anthropic.PermissionDeniedError))
    assert error.status_code == 502 and error.body["error"]["type"] == "api_error"
    message = error.body["error"]["message"]
    assert f"channel {channel['id']}" in message and "your API key was accepted" in message
    row = wait_for_row()  # written just after the answer
    assert (row.status, row.error_type, row.channel_id) == (502, "api_error", channel["id"])


def test_a_refused_channel_key_still_fails_over(client, admin, upstream, key):
    anthropic_channel(admin, upstream, name="bad-key", priority=10)
    anthropic_channel(admin, upstream, name="good")
    upstream.script(error_answer(401, "authentication_error", "invalid x-api-key"), json_answer(anthropic_message()))
    resp = client.post("/v1/messages", json=BODY, headers={"x-api-key": key["key"]})
    assert resp.status_code == 200 and RequestLog.get().attempts == 2


@pytest.mark.parametrize("answer, status, error_type, said", [
    (lambda: body_answer("<html><head><style>p{}</style></head><body><h1>502 Bad Gateway</h1>"
                         "<hr><center>nginx</center></body></html>", status=502, content_type="text/html"),
     502, "api_error", "upstream answered 502: 502 Bad Gateway nginx"),
    (lambda: json_answer({"error": {"message": "Rate limit reached for requests", "type": "requests",
                                    "code": "rate_limit_exceeded"}}, status=429),
     429, "rate_limit_error", "upstream answered 429: Rate limit reached for requests"),
    (lambda: body_answer("", status=503), 503, "overloaded_error", "upstream answered 503"),
    (lambda: body_answer("x" * 5000, status=400), 400, "invalid_request_error", "upstream answered 400: xxx"),
])
def test_error_bodies_not_in_anthropics_shape_are_wrapped(live, admin, upstream, key, answer, status,
                                                           error_type, said):
    anthropic_channel(admin, upstream)
    upstream.script(answer())
    with pytest.raises(anthropic.APIStatusError) as caught:
        sdk(live, key).messages.create(**BODY)
    error = caught.value
    assert error.status_code == status
    assert error.response.headers["content-type"].startswith("application/json")
    body = error.body
    assert body["type"] == "error" and body["error"]["type"] == error_type
    assert body["request_id"] == error.response.headers["request-id"]
    message = body["error"]["message"]
    assert message.startswith(said) and "<" not in message and len(message) < 400


def test_anthropic_error_bodies_still_pass_through_unchanged(client, admin, upstream, key):
    anthropic_channel(admin, upstream)
    answer = error_answer(400, "invalid_request_error", "messages: roles must alternate")
    upstream.script(answer)
    resp = client.post("/v1/messages", json=BODY, headers={"x-api-key": key["key"]})
    assert resp.status_code == 400 and resp.get_data() == answer.body


@pytest.mark.parametrize("status", [200, 500])
def test_an_upstream_body_past_the_cap_is_a_502_not_a_full_worker(env, upstream, status):
    """Answers and error bodies are read whole: OCTORELAY_MAX_UPSTREAM_BODY_MB bounds them."""
    from app import create_app
    from app.db import db, upgrade
    from tests.support.admin import AdminClient

    app = create_app({**env, "OCTORELAY_MAX_UPSTREAM_BODY_MB": "1"})
    upgrade(db.obj)
    try:
        admin = AdminClient(app.test_client())
        anthropic_channel(admin, upstream)
        key = admin.create_key(name="k")
        huge = anthropic_message("x" * (2 * 1024 * 1024))
        upstream.script(json_answer(huge, status=status))
        resp = app.test_client().post("/v1/messages", json=BODY, headers={"x-api-key": key["key"]})
        if status == 200:
            assert_error(resp, 502, "api_error", contains="larger than 1 MB")
        else:  # an error body too big to keep: the status is kept, the body is ours
            assert_error(resp, 500, "api_error", contains="upstream answered 500")
    finally:
        services(app).close()
        db.obj.close_all()


def count(client, key, model="claude-sonnet-4-6"):
    return client.post("/v1/messages/count_tokens", json={"model": model, "messages": BODY["messages"]},
                       headers={"x-api-key": key["key"]})


def test_count_tokens_failures_never_cool_a_channel(client, admin, upstream, key):
    channel = anthropic_channel(admin, upstream)
    upstream.set_default(error_answer(429, "rate_limit_error", "slow down"), path="/v1/messages/count_tokens")
    for _ in range(5):
        assert count(client, key).status_code == 429
    shown = admin.get(f"/admin/channels/{channel['id']}").get_json()
    assert shown["consecutive_failures"] == 0 and shown["cooldown_until"] is None


def test_count_tokens_is_limited_per_key_and_refused_past_the_budget(env, upstream):
    from app import create_app
    from app.db import db, upgrade
    from tests.support.admin import AdminClient

    app = create_app({**env, "OCTORELAY_COUNT_TOKENS_RPM": "3"})
    upgrade(db.obj)
    try:
        client = app.test_client()
        admin = AdminClient(client)
        anthropic_channel(admin, upstream)
        upstream.set_default(json_answer({"input_tokens": 12}), path="/v1/messages/count_tokens")
        key, other = admin.create_key(name="a"), admin.create_key(name="b")
        assert [count(client, key).status_code for _ in range(4)] == [200, 200, 200, 429]
        assert 1 <= int(count(client, key).headers["retry-after"]) <= 60
        assert count(client, other).status_code == 200  # per key
        spent = admin.create_key(name="c", budget_usd=0)
        assert_error(count(client, spent), 402, "billing_error")
    finally:
        services(app).close()
        db.obj.close_all()
