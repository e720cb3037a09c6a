"""`vertex` channels through the relay, against a loopback Vertex AI and its OAuth token endpoint."""
import threading

import anthropic
import pytest
import requests

from app.models import Channel
from tests.support.app import assert_error, wait_for_row
from tests.support.clouds import FakeVertex, google_error
from tests.support.constants import PROMPT_CANARY, SECRETS_USED
from tests.support.upstream import (anthropic_message, anthropic_stream_events, encode_event, json_answer,
                                    sse_answer)

MODEL = "claude-sonnet-4-5@20250929"


@pytest.fixture
def vertex(upstream):
    fake = FakeVertex(upstream.url)
    SECRETS_USED.add(fake.service_account["private_key"].splitlines()[1])
    upstream.set_default(fake)
    return fake


def vertex_channel(admin, upstream, vertex, region="us-east5", **fields):
    return admin.create_channel(**{"name": f"gcp-{region}", "type": "vertex", "base_url": upstream.url,
                                   "options": {"project_id": vertex.project, "region": region},
                                   "credentials": vertex.service_account, "models": ["claude-*"],
                                   "model_map": {"claude-sonnet-4-5": MODEL}, **fields})


@pytest.fixture
def sdk(live, admin):
    return anthropic.Anthropic(base_url=live, api_key=admin.create_key(name="vertex")["key"], max_retries=0)


def ask(sdk, **kwargs):
    return sdk.messages.create(**{"model": "claude-sonnet-4-5", "max_tokens": 32,
                                  "messages": [{"role": "user", "content": PROMPT_CANARY}], **kwargs})


def test_plain_message_on_raw_predict_with_one_token_for_many_requests(admin, upstream, vertex, sdk):
    vertex_channel(admin, upstream, vertex)
    for _ in range(3):
        assert ask(sdk, extra_headers={"anthropic-beta": "context-1m-2025-08-07"}).content[0].text == "Hello from Vertex"
    assert vertex.token_requests == 1  # cached for its hour
    call = vertex.calls[0]
    assert call.request.path == (f"/v1/projects/{vertex.project}/locations/us-east5/publishers/anthropic/"
                                 f"models/{MODEL}:rawPredict")
    assert call.body == {"max_tokens": 32, "messages": [{"role": "user", "content": PROMPT_CANARY}],
                         "anthropic_version": "vertex-2023-10-16"}
    assert call.request.headers["anthropic-beta"] == "context-1m-2025-08-07"
    assert "x-api-key" not in call.request.headers and "anthropic-version" not in call.request.headers
    row = wait_for_row()
    assert (row.status, row.input_tokens, row.output_tokens) == (200, 25, 15)


def test_the_token_is_refreshed_before_it_expires(admin, upstream, vertex, sdk):
    vertex.expires_in = 120  # inside google-auth's refresh margin: stale at once, so fetched again each time
    vertex_channel(admin, upstream, vertex)
    for _ in range(3):
        ask(sdk)
    assert vertex.token_requests == 3 and not vertex.refusals  # never sent an expired token


def test_concurrent_requests_share_one_token_refresh(admin, upstream, vertex, live):
    vertex.token_delay = 0.3
    vertex_channel(admin, upstream, vertex)
    key = admin.create_key(name="burst")["key"]
    statuses = []

    def one():
        resp = requests.post(f"{live}/v1/messages", headers={"x-api-key": key}, timeout=30,
                             json={"model": "claude-sonnet-4-5", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]})
        statuses.append(resp.status_code)

    threads = [threading.Thread(target=one) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert statuses == [200] * 8
    assert vertex.token_requests == 1


def test_stream_passes_through_untouched(admin, upstream, vertex, live):
    vertex_channel(admin, upstream, vertex)
    events = anthropic_stream_events(["Hel", "lo"], model=MODEL)
    vertex.respond = lambda call: sse_answer(events)
    key = admin.create_key(name="raw")["key"]
    resp = requests.post(f"{live}/v1/messages", headers={"x-api-key": key}, timeout=30,
                         json={"model": "claude-sonnet-4-5", "max_tokens": 8, "stream": True,
                               "messages": [{"role": "user", "content": "hi"}]})
    assert resp.content == b"".join(encode_event(name, data) for name, data in events)
    call = vertex.calls[0]
    assert call.method == "streamRawPredict" and call.body["stream"] is True
    assert wait_for_row().output_tokens == 15


def test_stream_tools_and_thinking_through_the_sdk(admin, upstream, vertex, sdk):
    vertex_channel(admin, upstream, vertex)
    start = anthropic_stream_events([], model=MODEL)[0]
    events = [start,
              ("content_block_start", {"type": "content_block_start", "index": 0,
                                       "content_block": {"type": "thinking", "thinking": "", "signature": ""}}),
              ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                       "delta": {"type": "thinking_delta", "thinking": "Use the tool."}}),
              ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                       "delta": {"type": "signature_delta", "signature": "sig-vertex"}}),
              ("content_block_stop", {"type": "content_block_stop", "index": 0}),
              ("content_block_start", {"type": "content_block_start", "index": 1, "content_block": {
                  "type": "tool_use", "id": "toolu_01V", "name": "get_weather", "input": {}}}),
              ("content_block_delta", {"type": "content_block_delta", "index": 1,
                                       "delta": {"type": "input_json_delta", "partial_json": '{"city": "Oslo"}'}}),
              ("content_block_stop", {"type": "content_block_stop", "index": 1}),
              ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": None},
                                 "usage": {"output_tokens": 21}}),
              ("message_stop", {"type": "message_stop"})]
    vertex.respond = lambda call: sse_answer(events)
    tool = {"name": "get_weather", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}
    with sdk.messages.stream(model="claude-sonnet-4-5", max_tokens=2048, tools=[tool],
                             thinking={"type": "enabled", "budget_tokens": 1024},
                             messages=[{"role": "user", "content": "Weather in Oslo?"}]) as stream:
        final = stream.get_final_message()
    assert [b.type for b in final.content] == ["thinking", "tool_use"]
    assert final.content[0].signature == "sig-vertex" and final.content[1].input == {"city": "Oslo"}
    assert vertex.calls[0].body["tools"] == [tool]


def test_plain_tool_use(admin, upstream, vertex, sdk):
    vertex_channel(admin, upstream, vertex)
    use = {"type": "tool_use", "id": "toolu_01P", "name": "get_weather", "input": {"city": "Rome"}}
    vertex.respond = lambda call: json_answer(anthropic_message(content=[use], stop_reason="tool_use", model=MODEL))
    tool = {"name": "get_weather", "input_schema": {"type": "object"}}
    message = ask(sdk, tools=[tool])
    assert message.stop_reason == "tool_use" and message.content[0].input == {"city": "Rome"}


def test_global_region_uses_the_global_location(admin, upstream, vertex, sdk):
    vertex_channel(admin, upstream, vertex, region="global")
    ask(sdk)
    assert vertex.calls[0].region == "global"


def test_count_tokens_uses_the_count_tokens_endpoint(admin, upstream, vertex, sdk):
    vertex_channel(admin, upstream, vertex)
    assert sdk.messages.count_tokens(model="claude-sonnet-4-5",
                                     messages=[{"role": "user", "content": "hi"}]).input_tokens == 17
    call = vertex.calls[0]
    assert call.count_tokens and call.body["model"] == MODEL


@pytest.mark.parametrize("answer, status, error_type", [
    (lambda: google_error(429, "RESOURCE_EXHAUSTED", "Quota exceeded for aiplatform.googleapis.com"),
     429, "rate_limit_error"),
    (lambda: google_error(404, "NOT_FOUND", "Publisher model not found"), 404, "not_found_error"),
    (lambda: json_answer({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}, 529),
     529, "overloaded_error"),
    (lambda: google_error(403, "PERMISSION_DENIED", "Permission 'aiplatform.endpoints.predict' denied"),
     502, "api_error"),
])
def test_errors_are_anthropic_shaped(admin, upstream, vertex, client, answer, status, error_type):
    vertex_channel(admin, upstream, vertex)
    vertex.respond = lambda call: answer()
    key = admin.create_key(name="errors")["key"]
    resp = client.post("/v1/messages", headers={"x-api-key": key},
                       json={"model": "claude-sonnet-4-5", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]})
    assert_error(resp, status, error_type)


def test_rate_limit_through_the_sdk(admin, upstream, vertex, sdk):
    vertex_channel(admin, upstream, vertex)
    vertex.respond = lambda call: google_error(429, "RESOURCE_EXHAUSTED", "Quota exceeded")
    with pytest.raises(anthropic.RateLimitError):
        ask(sdk)


def test_a_key_google_refuses_is_a_channel_credential_failure(admin, upstream, vertex, sdk):
    vertex_channel(admin, upstream, vertex, credentials=vertex.other_key_account())
    with pytest.raises(anthropic.APIStatusError) as err:
        ask(sdk)
    assert err.value.status_code == 502 and "service account" in err.value.body["error"]["message"]
    assert vertex.refusals == ["assertion"] and not vertex.calls
    assert Channel.get().consecutive_failures == 1


def test_channel_test_button(admin, upstream, vertex):
    channel = vertex_channel(admin, upstream, vertex)
    result = admin.post(f"/admin/channels/{channel['id']}/test").get_json()
    assert result["ok"] is True and vertex.calls[0].model == MODEL
