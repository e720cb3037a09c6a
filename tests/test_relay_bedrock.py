"""`bedrock` channels through the relay, against a loopback Bedrock that checks SigV4 with botocore."""
import base64
import json

import anthropic
import pytest
import requests

from app.adaptors import estimate_input_tokens
from app.models import Channel, RequestLog
from tests.support.app import assert_error, wait_for_row
from tests.support.clouds import (AWS_KEY_ID, AWS_SECRET, AWS_SESSION_TOKEN, BEDROCK_API_KEY, FakeBedrock,
                                  anthropic_events, aws_error, bedrock_frames, chunk_frame, event_json,
                                  event_stream_answer, exception_frame, sse_of)
from tests.support.constants import PROMPT_CANARY, SECRETS_USED
from tests.support.upstream import anthropic_message, json_answer

SECRETS_USED.update({AWS_SECRET, AWS_SESSION_TOKEN, BEDROCK_API_KEY})
PROFILE = "us.anthropic.claude-sonnet-4-5-20250929-v1:0"
CREDENTIALS = {"aws_access_key_id": AWS_KEY_ID, "aws_secret_access_key": AWS_SECRET,
               "aws_session_token": AWS_SESSION_TOKEN}


@pytest.fixture
def bedrock(upstream):
    fake = FakeBedrock()
    upstream.set_default(fake)
    return fake


def bedrock_channel(admin, upstream, **fields):
    fields.setdefault("credentials", CREDENTIALS)
    return admin.create_channel(**{"name": "aws", "type": "bedrock", "base_url": upstream.url,
                                   "options": {"region": "us-east-1"}, "models": ["claude-*"],
                                   "model_map": {"claude-sonnet-4-5": PROFILE}, **fields})


@pytest.fixture
def sdk(live, admin):
    return anthropic.Anthropic(base_url=live, api_key=admin.create_key(name="bedrock")["key"], max_retries=0)


def test_plain_message_is_signed_translated_and_billed(admin, upstream, bedrock, sdk):
    bedrock_channel(admin, upstream)
    message = sdk.messages.create(model="claude-sonnet-4-5", max_tokens=64, extra_body={"temperature": 0.5},
                                  messages=[{"role": "user", "content": PROMPT_CANARY}],
                                  extra_headers={"anthropic-beta": "context-1m-2025-08-07, fine-grained-tool-streaming-2025-05-14"})
    assert message.content[0].text == "Hello from Bedrock"
    assert not bedrock.refusals  # botocore's signer agreed with ours
    call = bedrock.calls[0]
    assert call.model == PROFILE and call.action == "invoke"
    assert call.request.path == "/model/us.anthropic.claude-sonnet-4-5-20250929-v1%3A0/invoke"
    assert call.body == {"max_tokens": 64, "temperature": 0.5, "messages": [{"role": "user", "content": PROMPT_CANARY}],
                         "anthropic_version": "bedrock-2023-05-31",
                         "anthropic_beta": ["context-1m-2025-08-07", "fine-grained-tool-streaming-2025-05-14"]}
    headers = call.request.headers
    assert headers["x-amz-security-token"] == AWS_SESSION_TOKEN and "x-api-key" not in headers
    assert AWS_SECRET not in repr(dict(headers))
    row = wait_for_row()
    assert (row.status, row.channel_id, row.input_tokens, row.output_tokens) == (200, Channel.get().id, 25, 15)


def test_a_wrong_secret_is_refused_by_the_signature_check_and_blamed_on_the_channel(admin, upstream, bedrock, sdk):
    bedrock_channel(admin, upstream, credentials={**CREDENTIALS, "aws_secret_access_key": "not-the-secret-0000000000"})
    with pytest.raises(anthropic.APIStatusError) as err:
        sdk.messages.create(model="claude-sonnet-4-5", max_tokens=8, messages=[{"role": "user", "content": "hi"}])
    assert err.value.status_code == 502
    assert err.value.body["error"]["type"] == "api_error"
    assert "credentials" in err.value.body["error"]["message"]  # the channel's, never the client's key
    assert bedrock.refusals == ["The request signature we calculated does not match the signature you provided."]
    assert Channel.get().consecutive_failures == 1


def test_a_bedrock_api_key_is_sent_as_a_bearer_token(admin, upstream, bedrock, sdk):
    bedrock_channel(admin, upstream, credentials=None, api_key=BEDROCK_API_KEY)
    assert sdk.messages.create(model="claude-sonnet-4-5", max_tokens=8,
                               messages=[{"role": "user", "content": "hi"}]).content[0].text
    headers = bedrock.calls[0].request.headers
    assert headers["authorization"] == f"Bearer {BEDROCK_API_KEY}" and "x-amz-date" not in headers


def test_stream_is_anthropics_sse_byte_for_byte(admin, upstream, bedrock, live):
    bedrock_channel(admin, upstream)
    key = admin.create_key(name="raw")["key"]
    events = anthropic_events(["Hel", "lo ", "there"], model=PROFILE)
    bedrock.respond = lambda call: event_stream_answer(bedrock_frames(events))
    resp = requests.post(f"{live}/v1/messages", headers={"x-api-key": key, "anthropic-version": "2023-06-01"},
                         json={"model": "claude-sonnet-4-5", "max_tokens": 32, "stream": True,
                               "messages": [{"role": "user", "content": "hi"}]}, timeout=30)
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/event-stream")
    assert resp.content == sse_of(events)  # metrics dropped from message_stop, every other byte kept
    assert bedrock.calls[0].action == "invoke-with-response-stream" and "stream" not in bedrock.calls[0].body
    row = wait_for_row()
    assert (row.status, row.stream, row.input_tokens, row.output_tokens) == (200, True, 25, 15)


def test_stream_through_the_sdk_with_thinking(admin, upstream, bedrock, sdk):
    bedrock_channel(admin, upstream)
    start = anthropic_events([], model=PROFILE)[0]
    events = [start,
              {"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": "", "signature": ""}},
              {"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "Let me see."}},
              {"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": "EqQBCkYIARgCSigG"}},
              {"type": "content_block_stop", "index": 0},
              {"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}},
              {"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "Four."}},
              {"type": "content_block_stop", "index": 1},
              {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
               "usage": {"output_tokens": 30}},
              {"type": "message_stop"}]
    bedrock.respond = lambda call: event_stream_answer(bedrock_frames(events), delay=0.01)
    with sdk.messages.stream(model="claude-sonnet-4-5", max_tokens=2048,
                             thinking={"type": "enabled", "budget_tokens": 1024},
                             messages=[{"role": "user", "content": "2+2?"}]) as stream:
        final = stream.get_final_message()
    assert [b.type for b in final.content] == ["thinking", "text"]
    assert final.content[0].signature == "EqQBCkYIARgCSigG" and final.content[1].text == "Four."
    assert final.usage.output_tokens == 30
    assert bedrock.calls[0].body["thinking"] == {"type": "enabled", "budget_tokens": 1024}


def test_tools_plain_and_streamed(admin, upstream, bedrock, sdk):
    bedrock_channel(admin, upstream)
    tool = {"name": "get_weather", "description": "Weather for a city",
            "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}
    use = {"type": "tool_use", "id": "toolu_01A", "name": "get_weather", "input": {"city": "Paris"}}
    start = anthropic_events([], model=PROFILE)[0]
    streamed = [start,
                {"type": "content_block_start", "index": 0, "content_block": {**use, "input": {}}},
                {"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": '{"city":'}},
                {"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": ' "Paris"}'}},
                {"type": "content_block_stop", "index": 0},
                {"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": None},
                 "usage": {"output_tokens": 12}},
                {"type": "message_stop"}]

    def respond(call):
        if call.stream:
            return event_stream_answer(bedrock_frames(streamed))
        return json_answer(anthropic_message(content=[use], stop_reason="tool_use", model=call.model))

    bedrock.respond = respond
    ask = dict(model="claude-sonnet-4-5", max_tokens=256, tools=[tool], tool_choice={"type": "auto"},
               messages=[{"role": "user", "content": "Weather in Paris?"}])
    plain = sdk.messages.create(**ask)
    assert plain.stop_reason == "tool_use" and plain.content[0].input == {"city": "Paris"}
    with sdk.messages.stream(**ask) as stream:
        final = stream.get_final_message()
    assert final.content[0].type == "tool_use" and final.content[0].input == {"city": "Paris"}
    assert bedrock.calls[0].body["tools"] == [tool] and bedrock.calls[0].body["tool_choice"] == {"type": "auto"}


@pytest.mark.parametrize("status, name, client_status, error_type, says", [
    (429, "ThrottlingException", 429, "rate_limit_error", "ThrottlingException says no"),
    (400, "ValidationException", 400, "invalid_request_error", "ValidationException says no"),
    (403, "AccessDeniedException", 502, "api_error", "credentials"),
    (424, "ModelErrorException", 500, "api_error", "ModelErrorException says no"),
    (503, "ServiceUnavailableException", 503, "overloaded_error", "ServiceUnavailableException says no"),
])
def test_bedrock_exceptions_become_anthropic_errors(admin, upstream, bedrock, client, status, name,
                                                    client_status, error_type, says):
    bedrock_channel(admin, upstream)
    bedrock.respond = lambda call: aws_error(status, name, f"{name} says no")
    key = admin.create_key(name="errors")["key"]
    resp = client.post("/v1/messages", headers={"x-api-key": key},
                       json={"model": "claude-sonnet-4-5", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]})
    body = assert_error(resp, client_status, error_type, contains=says)
    assert RequestLog.get().error_type == error_type and body["request_id"] == resp.headers["request-id"]


def test_throttling_through_the_sdk_is_a_rate_limit_error(admin, upstream, bedrock, sdk):
    bedrock_channel(admin, upstream)
    bedrock.respond = lambda call: aws_error(429, "ThrottlingException", "Too many requests, please wait.")
    with pytest.raises(anthropic.RateLimitError):
        sdk.messages.create(model="claude-sonnet-4-5", max_tokens=8, messages=[{"role": "user", "content": "hi"}])


def test_throttling_fails_over_and_counts_against_the_channel(admin, upstream, bedrock, sdk):
    bedrock_channel(admin, upstream, priority=10)
    admin.create_channel(name="fallback", type="mock", models=["claude-*"], priority=0)
    bedrock.respond = lambda call: aws_error(429, "ThrottlingException", "Too many requests")
    message = sdk.messages.create(model="claude-sonnet-4-5", max_tokens=8, messages=[{"role": "user", "content": "hi"}])
    assert "mock channel" in message.content[0].text
    assert Channel.get(Channel.name == "aws").consecutive_failures == 1
    assert wait_for_row().attempts == 2


def test_an_exception_frame_mid_stream_ends_it_with_an_error_event(admin, upstream, bedrock, sdk):
    bedrock_channel(admin, upstream)
    events = anthropic_events(["Hel", "lo"], model=PROFILE)
    frames = [chunk_frame(e) for e in events[:4]]
    frames.append(exception_frame("modelStreamErrorException", "The model stream broke off."))
    bedrock.respond = lambda call: event_stream_answer(frames)
    seen = []
    with pytest.raises(anthropic.APIStatusError) as err:
        with sdk.messages.stream(model="claude-sonnet-4-5", max_tokens=32,
                                 messages=[{"role": "user", "content": "hi"}]) as stream:
            for text in stream.text_stream:
                seen.append(text)
    assert "".join(seen) == "Hel"
    assert err.value.body["error"] == {"type": "api_error", "message": "The model stream broke off."}
    row = wait_for_row()
    assert (row.status, row.error_type, row.input_tokens) == (200, "api_error", 25)


def test_a_throttling_frame_mid_stream_is_a_rate_limit_error_event(admin, upstream, bedrock, live):
    bedrock_channel(admin, upstream)
    events = anthropic_events(["Hi"], model=PROFILE)
    bedrock.respond = lambda call: event_stream_answer([chunk_frame(events[0]),
                                                        exception_frame("throttlingException", "Slow down")])
    key = admin.create_key(name="raw")["key"]
    resp = requests.post(f"{live}/v1/messages", headers={"x-api-key": key}, timeout=30,
                         json={"model": "claude-sonnet-4-5", "max_tokens": 8, "stream": True,
                               "messages": [{"role": "user", "content": "hi"}]})
    assert resp.content == sse_of(events[:1]) + (
        b'event: error\ndata: {"type":"error","error":{"type":"rate_limit_error","message":"Slow down"}}\n\n')


def test_a_corrupt_frame_ends_the_stream_with_an_error(admin, upstream, bedrock, live):
    bedrock_channel(admin, upstream)
    events = anthropic_events(["Hi"], model=PROFILE)
    broken = bytearray(chunk_frame(events[1]))
    broken[-1] ^= 0xFF  # message CRC no longer matches
    bedrock.respond = lambda call: event_stream_answer([chunk_frame(events[0]), bytes(broken)])
    key = admin.create_key(name="raw")["key"]
    resp = requests.post(f"{live}/v1/messages", headers={"x-api-key": key}, timeout=30,
                         json={"model": "claude-sonnet-4-5", "max_tokens": 8, "stream": True,
                               "messages": [{"role": "user", "content": "hi"}]})
    assert resp.content.startswith(b"event: message_start\ndata: " + event_json(events[0]) + b"\n\n")
    assert resp.content.endswith(b'"message":"Bedrock sent a corrupt event-stream frame"}}\n\n')


def test_count_tokens_uses_bedrocks_count_tokens_with_the_bare_model_id(admin, upstream, bedrock, sdk):
    bedrock_channel(admin, upstream)
    counted = sdk.messages.count_tokens(model="claude-sonnet-4-5", messages=[{"role": "user", "content": "hi"}],
                                        system="Be brief.")
    assert counted.input_tokens == 42
    call = bedrock.calls[0]
    assert call.request.path == "/model/anthropic.claude-sonnet-4-5-20250929-v1%3A0/count-tokens"
    outer = call.request.json()
    assert json.loads(base64.b64decode(outer["input"]["invokeModel"]["body"])) == {
        "messages": [{"role": "user", "content": "hi"}], "system": "Be brief.",
        "anthropic_version": "bedrock-2023-05-31", "max_tokens": 1}
    assert RequestLog.select().count() == 0  # count_tokens is free and unlogged, as for Anthropic


def test_channel_test_button_signs_like_the_relay(admin, upstream, bedrock):
    channel = bedrock_channel(admin, upstream)
    result = admin.post(f"/admin/channels/{channel['id']}/test").get_json()
    assert result["ok"] is True and result["model"] == "claude-sonnet-4-5"
    assert bedrock.calls[0].model == PROFILE and not bedrock.refusals


def test_count_tokens_falls_back_to_the_local_estimate_where_bedrock_cannot_count(admin, upstream, bedrock, sdk):
    bedrock_channel(admin, upstream, model_map={"claude-sonnet-4-5": "amazon.nova-pro-v1:0"})
    messages = [{"role": "user", "content": "x" * 400}]
    counted = sdk.messages.count_tokens(model="claude-sonnet-4-5", messages=messages)
    assert counted.input_tokens == estimate_input_tokens({"messages": messages}) > 100
    assert not bedrock.calls  # refused by the fake's validation, as Bedrock refuses models it cannot count


def test_bedrocks_request_id_is_passed_on_and_its_ids_are_priced(admin, upstream, bedrock, live):
    """x-amzn-RequestId reaches the client as upstream-request-id; the Bedrock id the model_map
    names is priced through the seeded Bedrock globs (so the turn is not free)."""
    bedrock_channel(admin, upstream)
    key = admin.create_key(name="budgeted", budget_usd=5)
    resp = requests.post(f"{live}/v1/messages", headers={"x-api-key": key["key"]}, timeout=10,
                         json={"model": "claude-sonnet-4-5", "max_tokens": 16,
                               "messages": [{"role": "user", "content": "hi"}]})
    assert resp.status_code == 200, resp.text
    assert resp.headers["upstream-request-id"] and resp.headers["upstream-request-id"] != resp.headers["request-id"]
    assert wait_for_row().cost_nanos == 25 * 3000 + 15 * 15000  # Sonnet 4.5: $3 in, $15 out
