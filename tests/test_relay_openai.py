"""openai channels end to end: a Claude client against an OpenAI-compatible upstream on loopback."""
import json

import pytest

from app.models import RequestLog
from tests.support.app import assert_error, wait_for_row
from tests.support.constants import UPSTREAM_KEY
from tests.support.openai import MODEL, chunk, completion, done, text_stream
from tests.support.upstream import json_answer, sse_answer, sse_then_drop

anthropic = pytest.importorskip("anthropic")

@pytest.fixture
def openai_channel(admin, upstream):
    return admin.create_channel(name="llama", type="openai", base_url=upstream.url + "/v1",
                                api_key=UPSTREAM_KEY, models=["llama-*"])


@pytest.fixture
def sdk(live, key):
    return anthropic.Anthropic(api_key=key["key"], base_url=live, max_retries=0)


def test_non_streaming_round_trip(sdk, upstream, openai_channel, admin):
    admin.put(f"/admin/prices/{MODEL}", json={"input": 1, "output": 2, "cache_write": 0, "cache_read": 0.5})
    upstream.script(json_answer(completion(usage={"prompt_tokens": 50, "completion_tokens": 7,
                                                  "prompt_tokens_details": {"cached_tokens": 20}})))
    message = sdk.messages.create(model=MODEL, max_tokens=64, system="Be brief.",
                                  messages=[{"role": "user", "content": "Hi"}])
    assert message.content[0].text == "Hello from llama" and message.stop_reason == "end_turn"
    assert message.usage.input_tokens == 30 and message.usage.cache_read_input_tokens == 20
    seen = upstream.requests[0]
    assert seen.path == "/v1/chat/completions"
    assert seen.headers["authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert "x-api-key" not in seen.headers and "anthropic-version" not in seen.headers
    sent = seen.json()
    assert sent["model"] == MODEL and sent["max_tokens"] == 64
    assert sent["messages"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    row = wait_for_row()  # written after the response
    assert (row.input_tokens, row.output_tokens, row.cache_read_input_tokens) == (30, 7, 20)
    assert row.cost_nanos == 30 * 1000 + 7 * 2000 + 20 * 500


def test_streaming_text_and_usage(sdk, upstream, openai_channel):
    upstream.script(done(text_stream(["Hel", "lo ", "there"])))
    with sdk.messages.stream(model=MODEL, max_tokens=64, messages=[{"role": "user", "content": "Hi"}]) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "Hello there" and final.stop_reason == "end_turn"
    assert final.usage.output_tokens == 9
    sent = upstream.requests[0].json()
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}
    row = wait_for_row()
    assert (row.input_tokens, row.output_tokens, row.cache_read_input_tokens) == (10, 9, 30)


def test_streaming_tool_call(sdk, upstream, openai_channel):
    call = {"index": 0, "id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": ""}}
    events = [chunk({"role": "assistant", "content": None, "tool_calls": [call]}),
              chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"city": '}}]}),
              chunk({"tool_calls": [{"index": 0, "function": {"arguments": '"Paris"}'}}]}),
              chunk({}, finish="tool_calls"),
              chunk(choices=False, usage={"prompt_tokens": 80, "completion_tokens": 12})]
    upstream.script(done(events))
    tools = [{"name": "get_weather", "description": "Weather", "input_schema": {
        "type": "object", "properties": {"city": {"type": "string"}}}}]
    with sdk.messages.stream(model=MODEL, max_tokens=64, tools=tools,
                             messages=[{"role": "user", "content": "Weather in Paris?"}]) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "tool_use"
    block = final.content[-1]
    assert block.type == "tool_use" and block.name == "get_weather" and block.input == {"city": "Paris"}
    sent = upstream.requests[0].json()
    assert sent["tools"][0]["function"]["name"] == "get_weather"
    assert sent["tools"][0]["function"]["parameters"]["properties"]["city"] == {"type": "string"}


def test_tool_result_conversation_is_translated(sdk, upstream, openai_channel):
    upstream.script(json_answer(completion("It is sunny.")))
    sdk.messages.create(model=MODEL, max_tokens=64, messages=[
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "get_weather",
                                           "input": {"city": "Paris"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"}]},
    ])
    messages = upstream.requests[0].json()["messages"]
    assert messages[1]["tool_calls"][0]["id"] == "toolu_1"
    assert json.loads(messages[1]["tool_calls"][0]["function"]["arguments"]) == {"city": "Paris"}
    assert messages[2] == {"role": "tool", "tool_call_id": "toolu_1", "content": "sunny"}


def test_missing_usage_chunk_is_estimated(client, key, upstream, openai_channel):
    upstream.script(done(text_stream(["a" * 40, "b" * 40], usage=False)))
    resp = client.post("/v1/messages", json={"model": MODEL, "max_tokens": 64, "stream": True,
                                             "messages": [{"role": "user", "content": "Hi"}]},
                       headers={"x-api-key": key["key"]})
    frames = resp.get_data(as_text=True)
    assert "event: message_stop" in frames
    assert wait_for_row().output_tokens >= 20  # 80 characters forwarded


def test_upstream_errors_are_mapped_and_fail_over(client, key, upstream, admin, openai_channel):
    admin.create_channel(name="backup", type="openai", base_url=upstream.url + "/v1", models=["llama-*"],
                         priority=-1)
    upstream.script(json_answer({"error": {"message": "Rate limit reached", "type": "requests"}}, status=429),
                    json_answer(completion("from backup")))
    body = {"model": MODEL, "max_tokens": 64, "messages": [{"role": "user", "content": "Hi"}]}
    resp = client.post("/v1/messages", json=body, headers={"x-api-key": key["key"]})
    assert resp.status_code == 200 and resp.get_json()["content"][0]["text"] == "from backup"
    upstream.script(json_answer({"error": {"message": "context too long", "type": "invalid_request_error"}},
                                status=400))
    resp = client.post("/v1/messages", json=body, headers={"x-api-key": key["key"]})
    assert resp.status_code == 400
    error = resp.get_json()
    assert error["type"] == "error" and error["error"] == {"type": "invalid_request_error",
                                                         "message": "context too long"}


def test_unsupported_block_is_a_400_naming_it_and_nothing_is_sent(client, key, upstream, openai_channel):
    body = {"model": MODEL, "max_tokens": 64, "messages": [{"role": "user", "content": [
        {"type": "text", "text": "read this"},
        {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0="}}]}]}
    resp = client.post("/v1/messages", json=body, headers={"x-api-key": key["key"]})
    assert_error(resp, 400, "invalid_request_error", contains="messages.0.content.1")
    assert upstream.requests == []


def test_count_tokens_is_estimated_locally(client, key, upstream, openai_channel):
    resp = client.post("/v1/messages/count_tokens", headers={"x-api-key": key["key"]},
                       json={"model": MODEL, "system": "x" * 400,
                             "messages": [{"role": "user", "content": "y" * 400}]})
    assert resp.status_code == 200
    assert 200 <= resp.get_json()["input_tokens"] <= 220
    assert upstream.requests == []


def test_mid_stream_drop_becomes_an_error_event(client, key, upstream, openai_channel):
    upstream.script(sse_then_drop(text_stream(["partial"], usage=False)[:2]))
    resp = client.post("/v1/messages", json={"model": MODEL, "max_tokens": 64, "stream": True,
                                             "messages": [{"role": "user", "content": "Hi"}]},
                       headers={"x-api-key": key["key"]})
    text = resp.get_data(as_text=True)
    assert "event: message_start" in text and text.rstrip().split("\n\n")[-1].startswith("event: error")
    assert wait_for_row().error_type == "api_error"


def test_a_channel_that_cannot_carry_the_request_is_skipped(client, key, upstream, admin, openai_channel):
    from tests.support.app import anthropic_channel
    from tests.support.upstream import anthropic_message

    admin.patch(f"/admin/channels/{openai_channel['id']}", json={"priority": 10})
    anthropic_channel(admin, upstream, models=["llama-*"])
    upstream.script(json_answer(anthropic_message("read by claude")))
    body = {"model": MODEL, "max_tokens": 64, "messages": [{"role": "user", "content": [
        {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0="}}]}]}
    resp = client.post("/v1/messages", json=body, headers={"x-api-key": key["key"]})
    assert resp.status_code == 200 and resp.get_json()["content"][0]["text"] == "read by claude"
    assert [r.path for r in upstream.requests] == ["/v1/messages"]
    assert RequestLog.get().attempts == 1


def test_translated_errors_carry_our_request_id(client, key, upstream, openai_channel):
    upstream.script(json_answer({"error": {"message": "bad", "type": "invalid_request_error"}}, status=400))
    resp = client.post("/v1/messages", json={"model": MODEL, "max_tokens": 64,
                                             "messages": [{"role": "user", "content": "Hi"}]},
                       headers={"x-api-key": key["key"]})
    assert_error(resp, 400, "invalid_request_error", contains="bad")


def test_image_input_becomes_an_image_part(sdk, upstream, openai_channel):
    upstream.script(json_answer(completion("A red dot.")))
    sdk.messages.create(model=MODEL, max_tokens=64, messages=[{"role": "user", "content": [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}},
        {"type": "text", "text": "What is this?"}]}])
    parts = upstream.requests[0].json()["messages"][0]["content"]
    assert parts[0] == {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
    assert parts[1] == {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}
    assert parts[2] == {"type": "text", "text": "What is this?"}


def test_streaming_parallel_tool_calls(sdk, upstream, openai_channel):
    def call(index, id_, name):
        return {"index": index, "id": id_, "type": "function", "function": {"name": name, "arguments": ""}}

    def args(index, text):
        return {"tool_calls": [{"index": index, "function": {"arguments": text}}]}

    events = [chunk({"role": "assistant", "content": None, "tool_calls": [call(0, "call_a", "get_weather")]}),
              chunk({"tool_calls": [call(1, "call_b", "get_time")]}),
              chunk(args(0, '{"city": "Par')), chunk(args(1, '{"tz": "Europe/')),
              chunk(args(0, 'is"}')), chunk(args(1, 'Paris"}')),
              chunk({}, finish="tool_calls"),
              chunk(choices=False, usage={"prompt_tokens": 80, "completion_tokens": 30})]
    upstream.script(done(events))
    with sdk.messages.stream(model=MODEL, max_tokens=64,
                             messages=[{"role": "user", "content": "Weather and time in Paris?"}]) as stream:
        final = stream.get_final_message()
    calls = [(b.id, b.name, b.input) for b in final.content if b.type == "tool_use"]
    assert calls == [("call_a", "get_weather", {"city": "Paris"}), ("call_b", "get_time", {"tz": "Europe/Paris"})]
    assert final.stop_reason == "tool_use" and final.usage.output_tokens == 30


def test_stop_sequence_and_max_tokens(sdk, upstream, openai_channel):
    hit = completion("one two")
    hit["choices"][0]["stop_reason"] = "END"  # vLLM names the stop string it matched
    upstream.script(json_answer(hit), json_answer(completion("cut off here", finish="length")))
    message = sdk.messages.create(model=MODEL, max_tokens=64, stop_sequences=["END"],
                                  messages=[{"role": "user", "content": "count"}])
    assert upstream.requests[0].json()["stop"] == ["END"]
    assert message.stop_reason == "stop_sequence" and message.stop_sequence == "END"
    cut = sdk.messages.create(model=MODEL, max_tokens=3, messages=[{"role": "user", "content": "talk"}])
    assert cut.stop_reason == "max_tokens"


def test_upstream_error_object_mid_stream(sdk, upstream, openai_channel):
    events = text_stream(["partial "], usage=False)[:2]
    events.append((None, {"error": {"message": "The server is overloaded", "type": "server_error", "code": 503}}))
    upstream.script(sse_answer(events))
    with pytest.raises(anthropic.APIStatusError) as err:
        with sdk.messages.stream(model=MODEL, max_tokens=64,
                                 messages=[{"role": "user", "content": "Hi"}]) as stream:
            for _ in stream.text_stream:
                pass
    assert "overloaded" in str(err.value).lower()
    assert wait_for_row().error_type == "overloaded_error"
