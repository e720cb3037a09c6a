"""The OpenAI adaptor, downward: a chat.completion as a Messages API message."""
from __future__ import annotations

import json

import anthropic
import pytest

from app.adaptors.base import Usage
from app.errors import UpstreamError
from tests.adaptors.openai.support import ADAPTOR, USAGE, completion
from tests.support.upstream import BodyAnswer


def response(message: dict, **kw) -> tuple[dict, Usage]:
    body, usage = ADAPTOR.translate_response(completion(message, **kw))
    return json.loads(body), usage


def test_text_response():
    raw, usage = ADAPTOR.translate_response(completion({"content": "Hello!"}))
    assert b": " not in raw and b", " not in raw  # compact
    assert json.loads(raw) == {
        "id": "msg_abc123", "type": "message", "role": "assistant", "model": "qwen3:8b",
        "content": [{"type": "text", "text": "Hello!"}], "stop_reason": "end_turn", "stop_sequence": None,
        "usage": {"input_tokens": 20, "output_tokens": 5, "cache_creation_input_tokens": 0,
                  "cache_read_input_tokens": 0}}
    assert usage == Usage(20, 5, 0, 0)
    anthropic.types.Message.model_validate_json(raw)  # the SDK's own model accepts it


def test_response_with_reasoning_text_and_several_tool_calls():
    message, _ = response({
        "content": "Checking both.", "reasoning_content": "Two cities, two calls.",
        "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}},
            {"type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Rome"}'}},
            {"id": "call_3", "type": "function", "function": {"name": "broken", "arguments": "{not json"}},
            {"id": "call_4", "type": "function", "function": {"name": "empty", "arguments": ""}},
        ]}, finish_reason="tool_calls")
    content = message["content"]
    assert content[0] == {"type": "thinking", "thinking": "Two cities, two calls.", "signature": ""}
    assert content[1] == {"type": "text", "text": "Checking both."}
    assert content[2] == {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}}
    assert content[3]["id"].startswith("toolu_") and len(content[3]["id"]) > 10
    assert content[3]["input"] == {"city": "Rome"}
    assert content[4]["input"] == {} and content[5]["input"] == {}
    assert message["stop_reason"] == "tool_use"
    anthropic.types.Message.model_validate(message)


def test_reasoning_field_of_openrouter():
    message, _ = response({"content": "42", "reasoning": "thought"})
    assert message["content"][0] == {"type": "thinking", "thinking": "thought", "signature": ""}


def test_cached_tokens_are_split_out_of_the_prompt():
    message, usage = response({"content": "x"}, usage={
        "prompt_tokens": 1000, "completion_tokens": 50, "total_tokens": 1050,
        "prompt_tokens_details": {"cached_tokens": 768}})
    assert usage == Usage(input_tokens=232, output_tokens=50, cache_creation_input_tokens=0,
                          cache_read_input_tokens=768)
    assert usage.total == 1050
    assert message["usage"] == {"input_tokens": 232, "output_tokens": 50, "cache_creation_input_tokens": 0,
                                "cache_read_input_tokens": 768}


def test_deepseek_cache_hit_tokens():
    _, usage = response({"content": "x"}, usage={"prompt_tokens": 100, "completion_tokens": 3,
                                                 "prompt_cache_hit_tokens": 64, "prompt_cache_miss_tokens": 36})
    assert usage == Usage(36, 3, 0, 64)


def test_missing_usage_gives_zeros():
    raw = json.dumps({"id": "x", "model": "m", "choices": [{"message": {"content": "hi"},
                                                            "finish_reason": "stop"}]}).encode()
    body, usage = ADAPTOR.translate_response(raw)
    assert usage == Usage() and json.loads(body)["usage"]["input_tokens"] == 0


@pytest.mark.parametrize("finish_reason, stop_reason", [
    ("stop", "end_turn"), ("length", "max_tokens"), ("tool_calls", "tool_use"),
    ("function_call", "tool_use"), ("content_filter", "refusal"), (None, "end_turn"), ("eos", "end_turn"),
])
def test_stop_reasons(finish_reason, stop_reason):
    message, _ = response({"content": "x"}, finish_reason=finish_reason)
    assert message["stop_reason"] == stop_reason and message["stop_sequence"] is None


def test_vllm_reports_the_stop_sequence_it_matched():
    message, _ = response({"content": "1, 2, 3"}, choice={"stop_reason": "###"})
    assert message["stop_reason"] == "stop_sequence" and message["stop_sequence"] == "###"
    message, _ = response({"content": "x"}, choice={"stop_reason": 128001})  # a stop token id: natural end
    assert message["stop_reason"] == "end_turn" and message["stop_sequence"] is None


def test_tool_calls_with_finish_reason_stop_are_tool_use():
    message, _ = response({"content": None, "tool_calls": [
        {"id": "c", "type": "function", "function": {"name": "f", "arguments": {"a": 1}}}]})
    assert message["stop_reason"] == "tool_use"
    assert message["content"] == [{"type": "tool_use", "id": "c", "name": "f", "input": {"a": 1}}]


def test_legacy_function_call_and_refusal_and_content_parts():
    message, _ = response({"content": None, "function_call": {"name": "f", "arguments": '{"x": 2}'}},
                          finish_reason="function_call")
    assert message["content"][0]["type"] == "tool_use" and message["content"][0]["input"] == {"x": 2}
    message, _ = response({"content": None, "refusal": "I can't help with that."},
                          finish_reason="content_filter")
    assert message["content"] == [{"type": "text", "text": "I can't help with that."}]
    assert message["stop_reason"] == "refusal"
    message, _ = response({"content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]})
    assert message["content"] == [{"type": "text", "text": "ab"}]


def test_empty_answer_has_no_blocks():
    message, _ = response({"content": ""})
    assert message["content"] == []


def test_id_without_prefix_and_missing_id():
    body, _ = ADAPTOR.translate_response(json.dumps(
        {"id": "gen-777", "model": "m", "choices": [{"message": {"content": "x"}}]}).encode())
    assert json.loads(body)["id"] == "msg_gen-777"
    body, _ = ADAPTOR.translate_response(json.dumps({"choices": [{"message": {"content": "x"}}]}).encode())
    assert json.loads(body)["id"].startswith("msg_") and json.loads(body)["model"] == ""


@pytest.mark.parametrize("raw, words", [
    (b"<html>502 Bad Gateway</html>", "not JSON"),
    (b"[]", "not an object"),
    (b'{"id": "x", "choices": []}', "without any choices"),
    (b'{"object": "list"}', "without any choices"),
    (b'{"error": {"message": "model overloaded"}}', "model overloaded"),
    (b'{"choices": [{"index": 0, "text": "legacy completion"}]}', "without a message"),
])
def test_unusable_bodies_raise_upstream_error(raw, words):
    with pytest.raises(UpstreamError) as info:
        ADAPTOR.translate_response(raw)
    assert words in info.value.message and info.value.status == 502


def test_the_sdk_reads_a_translated_message(upstream):
    body, _ = ADAPTOR.translate_response(completion({"content": "Sure.", "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": '{"a": [1, 2]}'}}]},
        finish_reason="tool_calls", usage=USAGE))
    upstream.script(BodyAnswer(body, headers={"Content-Type": "application/json"}))
    client = anthropic.Anthropic(base_url=upstream.url, api_key="k", max_retries=0)
    message = client.messages.create(model="claude-x", max_tokens=100, messages=[{"role": "user", "content": "hi"}])
    assert message.content[0].text == "Sure." and message.content[1].input == {"a": [1, 2]}
    assert message.usage.cache_read_input_tokens == 10 and message.stop_reason == "tool_use"
