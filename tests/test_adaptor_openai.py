"""The OpenAI-compatible adaptor: Messages <-> Chat Completions, as pure dicts and bytes.

Table-driven where the rule is a table (stop reasons, tool_choice, thinking,
error statuses). Streams are fed byte by byte and in whole chunks and must
give the same frames; the frames are then accumulated the way the official
`anthropic` SDK does it, and once replayed to the real SDK client over a
loopback socket, so "the SDK never notices" is checked, not assumed.
"""
from __future__ import annotations

import base64
import json

import anthropic
import pytest
from anthropic.lib.streaming._messages import accumulate_event

from app.adaptors.base import Target, Usage, estimate_tokens
from app.adaptors.openai import OpenAIAdaptor, OpenAIStream
from app.errors import InvalidRequest, UpstreamError
from app.wire.sse import SSEParser
from tests.upstream import BodyAnswer, raw_sse_answer

ADAPTOR = OpenAIAdaptor()
TARGET = Target(base_url="http://127.0.0.1:11434/v1/", api_key="sk-upstream-secret-123456",
                model="qwen3:8b", timeout_s=42.0)
CLIENT_HEADERS = {"x-api-key": "sk-octo-client", "Authorization": "Bearer sk-octo-client",
                  "anthropic-version": "2023-06-01", "anthropic-beta": "interleaved-thinking-2025-05-14",
                  "user-agent": "claude-cli/2.1", "Cookie": "a=b"}
PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="


def body_of(**fields) -> dict:
    return {"model": "claude-sonnet-4-6", "max_tokens": 100,
            "messages": [{"role": "user", "content": "Hi"}], **fields}


def translate(body: dict, target: Target = TARGET) -> dict:
    raw = json.dumps(body).encode()
    request = ADAPTOR.build_request(target, body, raw, CLIENT_HEADERS)
    return json.loads(request.body)


def messages_of(*turns, **fields) -> list[dict]:
    return translate(body_of(messages=list(turns), **fields))["messages"]


def invalid(body: dict) -> str:
    with pytest.raises(InvalidRequest) as info:
        translate(body)
    assert info.value.status == 400 and info.value.error_type == "invalid_request_error"
    return info.value.message


# =========================================================================== build_request


def test_request_url_headers_body_and_timeout():
    body = body_of()
    request = ADAPTOR.build_request(TARGET, body, json.dumps(body).encode(), CLIENT_HEADERS)
    assert request.url == "http://127.0.0.1:11434/v1/chat/completions"
    assert request.timeout_s == 42.0
    # Only our own headers: nothing of the client's (its key, anthropic-*, cookies) goes upstream.
    assert request.headers == {"content-type": "application/json", "accept": "application/json",
                               "accept-encoding": "identity",
                               "authorization": "Bearer sk-upstream-secret-123456"}
    assert b"sk-octo-client" not in request.body
    assert b" " not in request.body.replace(b"Hi", b"")  # compact JSON
    sent = json.loads(request.body)
    assert sent == {"model": "qwen3:8b", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 100}


def test_request_without_channel_key_has_no_authorization():
    target = Target("http://localhost:8000/v1", None, "m")
    request = ADAPTOR.build_request(target, body_of(), b"{}", {})
    assert "authorization" not in request.headers
    assert request.url == "http://localhost:8000/v1/chat/completions"


def test_stream_request_asks_for_sse_and_usage():
    body = body_of(stream=True)
    request = ADAPTOR.build_request(TARGET, body, b"", {})
    assert request.headers["accept"] == "text/event-stream"
    sent = json.loads(request.body)
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}
    assert "stream" not in translate(body_of(stream=False))


def test_count_tokens_is_refused():
    with pytest.raises(ValueError):
        ADAPTOR.build_request(TARGET, body_of(), b"", {}, count_tokens=True)


def test_sampling_and_simple_fields():
    sent = translate(body_of(temperature=0.2, top_p=0.9, top_k=40, stop_sequences=["###", "END"],
                             metadata={"user_id": "user-7"}, max_tokens=512))
    assert sent["temperature"] == 0.2 and sent["top_p"] == 0.9
    assert "top_k" not in sent  # no such parameter in OpenAI's API
    assert sent["stop"] == ["###", "END"]
    assert sent["user"] == "user-7"
    assert sent["max_tokens"] == 512 and "max_completion_tokens" not in sent


def test_nothing_is_injected_and_unknown_fields_are_dropped_not_fatal():
    sent = translate(body_of(context_management={"edits": []}, output_config={"effort": "high"},
                             service_tier="auto", container="c1", mcp_servers=[], brand_new_field=1,
                             metadata={}))
    assert sent == {"model": "qwen3:8b", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 100}


def test_temperature_zero_is_kept():
    assert translate(body_of(temperature=0))["temperature"] == 0


# ----------------------------------------------------------------- system


def test_system_string_becomes_first_message():
    sent = translate(body_of(system="Be brief."))
    assert sent["messages"][0] == {"role": "system", "content": "Be brief."}
    assert sent["messages"][1] == {"role": "user", "content": "Hi"}


def test_system_blocks_are_joined_and_cache_control_dropped():
    system = [{"type": "text", "text": "You are Claude Code."},
              {"type": "text", "text": "Follow the rules.", "cache_control": {"type": "ephemeral"}}]
    assert translate(body_of(system=system))["messages"][0] == {
        "role": "system", "content": "You are Claude Code.\n\nFollow the rules."}


def test_empty_system_sends_nothing():
    assert translate(body_of(system=""))["messages"] == [{"role": "user", "content": "Hi"}]
    assert translate(body_of(system=[]))["messages"] == [{"role": "user", "content": "Hi"}]


def test_system_turns_mid_conversation_stay_in_place():
    got = messages_of({"role": "user", "content": "Hi"},
                      {"role": "assistant", "content": "Hello"},
                      {"role": "system", "content": [{"type": "text", "text": "Now be formal."}]},
                      {"role": "user", "content": "ok"},
                      {"role": "system", "content": "final reminder"})
    assert got == [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"},
                   {"role": "system", "content": "Now be formal."}, {"role": "user", "content": "ok"},
                   {"role": "system", "content": "final reminder"}]


def test_system_with_non_text_block_names_the_path():
    message = invalid(body_of(system=[{"type": "text", "text": "a"},
                                      {"type": "image", "source": {"type": "url", "url": "http://x"}}]))
    assert message.startswith("system.1:")


# ----------------------------------------------------------------- user content


def test_user_text_blocks_become_one_string():
    got = messages_of({"role": "user", "content": [{"type": "text", "text": "<reminder>x</reminder>"},
                                                   {"type": "text", "text": "hello",
                                                    "cache_control": {"type": "ephemeral"}}]})
    assert got == [{"role": "user", "content": "<reminder>x</reminder>\n\nhello"}]


def test_images_base64_and_url():
    got = messages_of({"role": "user", "content": [
        {"type": "text", "text": "What is in these?"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
    ]})
    assert got == [{"role": "user", "content": [
        {"type": "text", "text": "What is in these?"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
    ]}]


def test_image_from_files_api_is_refused_with_its_path():
    message = invalid(body_of(messages=[{"role": "user", "content": [
        {"type": "text", "text": "x"}, {"type": "image", "source": {"type": "file", "file_id": "file_1"}}]}]))
    assert message.startswith("messages.0.content.1.source:") and "'file'" in message


def test_documents_as_text_where_possible():
    encoded = base64.b64encode("plain notes ✓".encode()).decode()
    got = messages_of({"role": "user", "content": [
        {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "doc one"},
         "title": "t", "citations": {"enabled": True}},
        {"type": "document", "source": {"type": "base64", "media_type": "text/plain", "data": encoded}},
        {"type": "document", "source": {"type": "content", "content": [{"type": "text", "text": "c1"},
                                                                         {"type": "text", "text": "c2"}]}},
        {"type": "text", "text": "Summarise."},
    ]})
    assert got == [{"role": "user", "content": "doc one\n\nplain notes ✓\n\nc1\n\nc2\n\nSummarise."}]


@pytest.mark.parametrize("source, described", [
    ({"type": "base64", "media_type": "application/pdf", "data": "JVBERi0="}, "base64 application/pdf"),
    ({"type": "url", "url": "https://example.com/a.pdf"}, "url"),
    ({"type": "file", "file_id": "file_1"}, "file"),
])
def test_documents_that_cannot_be_text_are_refused_naming_the_path(source, described):
    message = invalid(body_of(messages=[
        {"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
        {"role": "user", "content": [{"type": "text", "text": "x"}, {"type": "document", "source": source}]}]))
    assert message == (f"messages.2.content.1: document blocks of type {described} "
                       "cannot be sent to an OpenAI-compatible channel")


def test_invalid_base64_text_document():
    message = invalid(body_of(messages=[{"role": "user", "content": [
        {"type": "document", "source": {"type": "base64", "media_type": "text/plain", "data": "***"}}]}]))
    assert message.startswith("messages.0.content.0.source.data:")


@pytest.mark.parametrize("turn, path", [
    ({"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "brand_new_block", "x": 1}]},
     "messages.0.content.1:"),
    ({"role": "user", "content": [{"type": "search_result", "source": "s", "title": "t", "content": []}]},
     "messages.0.content.0:"),
    ({"role": "user", "content": [{"type": "tool_use", "id": "t", "name": "n", "input": {}}]},
     "messages.0.content.0:"),
    ({"role": "assistant", "content": [{"type": "server_tool_use", "id": "s", "name": "web_search",
                                        "input": {}}]}, "messages.0.content.0:"),
    ({"role": "assistant", "content": [{"type": "text", "text": "a"},
                                       {"type": "image", "source": {"type": "url", "url": "http://x"}}]},
     "messages.0.content.1:"),
])
def test_blocks_without_an_openai_equivalent_are_refused_not_lost(turn, path):
    message = invalid(body_of(messages=[turn]))
    assert message.startswith(path), message


def test_unknown_role_is_refused():
    assert invalid(body_of(messages=[{"role": "tool", "content": "x"}])).startswith("messages.0.role:")


# ----------------------------------------------------------------- tools in history


def test_multi_turn_tool_conversation():
    got = messages_of(
        {"role": "user", "content": "Weather in Paris and Rome?"},
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": "I should call the tool.", "signature": "EqQBsig=="},
            {"type": "text", "text": "Let me check."},
            {"type": "tool_use", "id": "toolu_01", "name": "get_weather", "input": {"city": "Paris"}},
            {"type": "tool_use", "id": "toolu_02", "name": "get_weather", "input": {"city": "Rome", "deg": "C"}},
        ]},
        {"role": "user", "content": [
            {"type": "text", "text": "Here you go."},
            {"type": "tool_result", "tool_use_id": "toolu_01", "content": "18°C, sunny"},
            {"type": "tool_result", "tool_use_id": "toolu_02", "is_error": True,
             "content": [{"type": "text", "text": "timeout"}, {"type": "text", "text": "try later"}]},
        ]},
        {"role": "assistant", "content": "Paris is 18°C; Rome failed."},
        {"role": "user", "content": "Thanks"},
    )
    assert got == [
        {"role": "user", "content": "Weather in Paris and Rome?"},
        {"role": "assistant", "content": "Let me check.", "tool_calls": [
            {"id": "toolu_01", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
            {"id": "toolu_02", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"city": "Rome", "deg": "C"}'}},
        ]},
        # tool messages first, in order, then the rest of the same user turn
        {"role": "tool", "tool_call_id": "toolu_01", "content": "18°C, sunny"},
        {"role": "tool", "tool_call_id": "toolu_02", "content": "Error: timeout\n\ntry later"},
        {"role": "user", "content": "Here you go."},
        {"role": "assistant", "content": "Paris is 18°C; Rome failed."},
        {"role": "user", "content": "Thanks"},
    ]
    assert json.loads(got[1]["tool_calls"][0]["function"]["arguments"]) == {"city": "Paris"}


def test_assistant_with_only_tool_use_has_null_content():
    got = messages_of({"role": "user", "content": "go"}, {"role": "assistant", "content": [
        {"type": "tool_use", "id": "toolu_9", "name": "ls", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_9"}]})
    assert got[1] == {"role": "assistant", "content": None, "tool_calls": [
        {"id": "toolu_9", "type": "function", "function": {"name": "ls", "arguments": "{}"}}]}
    assert got[2] == {"role": "tool", "tool_call_id": "toolu_9", "content": ""}
    assert len(got) == 3  # no empty user message after the tool result


def test_unicode_tool_input_is_not_escaped():
    got = messages_of({"role": "assistant", "content": [
        {"type": "tool_use", "id": "t", "name": "say", "input": {"text": "héllo ✓"}}]})
    assert got[0]["tool_calls"][0]["function"]["arguments"] == '{"text": "héllo ✓"}'


def test_error_tool_result_without_text():
    got = messages_of({"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "t1", "is_error": True, "content": []}]})
    assert got == [{"role": "tool", "tool_call_id": "t1", "content": "Error"}]


def test_images_in_tool_results_follow_in_a_user_message():
    got = messages_of({"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "toolu_shot", "content": [
            {"type": "text", "text": "screenshot taken"},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}}]},
        {"type": "tool_result", "tool_use_id": "toolu_2", "content": [
            {"type": "image", "source": {"type": "url", "url": "https://example.com/x.png"}}]},
        {"type": "text", "text": "What do you see?"},
    ]})
    assert got[0] == {"role": "tool", "tool_call_id": "toolu_shot", "content": "screenshot taken"}
    assert got[1]["role"] == "tool" and got[1]["tool_call_id"] == "toolu_2" and got[1]["content"]
    assert got[2] == {"role": "user", "content": [
        {"type": "text", "text": "Images returned by tool call toolu_shot:"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
        {"type": "text", "text": "Images returned by tool call toolu_2:"},
        {"type": "image_url", "image_url": {"url": "https://example.com/x.png"}},
        {"type": "text", "text": "What do you see?"},
    ]}
    assert len(got) == 3


def test_unknown_block_inside_a_tool_result_names_its_path():
    message = invalid(body_of(messages=[{"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "t", "content": [{"type": "text", "text": "a"},
                                                                 {"type": "mystery"}]}]}]))
    assert message.startswith("messages.0.content.0.content.1:")


def test_thinking_history_is_dropped_everywhere():
    got = messages_of({"role": "user", "content": "q"},
                      {"role": "assistant", "content": [{"type": "redacted_thinking", "data": "abc"}]},
                      {"role": "assistant", "content": [{"type": "thinking", "thinking": "t", "signature": "s"},
                                                        {"type": "text", "text": "answer"}]})
    assert got == [{"role": "user", "content": "q"}, {"role": "assistant", "content": "answer"}]


def test_assistant_text_blocks_are_glued_as_the_model_wrote_them():
    got = messages_of({"role": "assistant", "content": [{"type": "text", "text": "The sky "},
                                                        {"type": "text", "text": "is blue."}]})
    assert got == [{"role": "assistant", "content": "The sky is blue."}]


def test_final_assistant_turn_is_sent_as_is():
    got = messages_of({"role": "user", "content": "Say a JSON"}, {"role": "assistant", "content": "{"})
    assert got[-1] == {"role": "assistant", "content": "{"}


# ----------------------------------------------------------------- tools, tool_choice, thinking


WEATHER = {"name": "get_weather", "description": "Weather for a city",
           "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}


def test_custom_tools_become_functions():
    sent = translate(body_of(tools=[
        WEATHER,
        {"type": "custom", "name": "noop", "input_schema": {"type": "object"},
         "cache_control": {"type": "ephemeral"}, "defer_loading": True},
        {"name": "bare"},
    ]))
    assert sent["tools"] == [
        {"type": "function", "function": {"name": "get_weather", "description": "Weather for a city",
                                          "parameters": WEATHER["input_schema"]}},
        {"type": "function", "function": {"name": "noop", "parameters": {"type": "object"}}},
        {"type": "function", "function": {"name": "bare", "parameters": {"type": "object", "properties": {}}}},
    ]


@pytest.mark.parametrize("server_tool", [
    {"type": "web_search_20250305", "name": "web_search", "max_uses": 3},
    {"type": "bash_20250124", "name": "bash"},
    {"type": "text_editor_20250728", "name": "str_replace_based_edit_tool"},
])
def test_server_tools_are_refused_naming_the_tool(server_tool):
    message = invalid(body_of(tools=[WEATHER, server_tool]))
    assert message.startswith("tools.1:") and server_tool["type"] in message


@pytest.mark.parametrize("choice, expected", [
    ({"type": "auto"}, {"tool_choice": "auto"}),
    ({"type": "any"}, {"tool_choice": "required"}),
    ({"type": "none"}, {"tool_choice": "none"}),
    ({"type": "tool", "name": "get_weather"},
     {"tool_choice": {"type": "function", "function": {"name": "get_weather"}}}),
    ({"type": "auto", "disable_parallel_tool_use": True}, {"tool_choice": "auto", "parallel_tool_calls": False}),
    ({"type": "any", "disable_parallel_tool_use": True},
     {"tool_choice": "required", "parallel_tool_calls": False}),
    ({"type": "tool", "name": "get_weather", "disable_parallel_tool_use": False},
     {"tool_choice": {"type": "function", "function": {"name": "get_weather"}}}),
])
def test_tool_choice(choice, expected):
    sent = translate(body_of(tools=[WEATHER], tool_choice=choice))
    assert {k: sent[k] for k in ("tool_choice", "parallel_tool_calls") if k in sent} == expected


def test_tool_choice_without_tools_is_not_sent():
    sent = translate(body_of(tool_choice={"type": "auto", "disable_parallel_tool_use": True}))
    assert "tool_choice" not in sent and "parallel_tool_calls" not in sent and "tools" not in sent


def test_unknown_tool_choice_is_refused():
    assert invalid(body_of(tools=[WEATHER], tool_choice={"type": "sometimes"})).startswith("tool_choice.type:")


@pytest.mark.parametrize("thinking, effort", [
    ({"type": "enabled", "budget_tokens": 1024}, "low"),
    ({"type": "enabled", "budget_tokens": 4095}, "low"),
    ({"type": "enabled", "budget_tokens": 4096}, "medium"),
    ({"type": "enabled", "budget_tokens": 16383}, "medium"),
    ({"type": "enabled", "budget_tokens": 16384}, "high"),
    ({"type": "enabled", "budget_tokens": 64000}, "high"),
    ({"type": "adaptive"}, None),
    ({"type": "disabled"}, None),
])
def test_thinking_becomes_reasoning_effort(thinking, effort):
    sent = translate(body_of(thinking=thinking))
    assert sent.get("reasoning_effort") == effort


def test_a_claude_code_shaped_request_translates():
    body = {
        "model": "claude-sonnet-4-5", "max_tokens": 32000, "stream": True,
        "thinking": {"type": "adaptive"}, "context_management": {"edits": [{"type": "clear_thinking_20251015"}]},
        "output_config": {"effort": "medium"}, "metadata": {"user_id": "user_abc_account_x_session_y"},
        "system": [{"type": "text", "text": "You are Claude Code.", "cache_control": {"type": "ephemeral"}},
                   {"type": "text", "text": "Rules...", "cache_control": {"type": "ephemeral"}}],
        "tools": [{"name": "Bash", "description": "Run", "input_schema": {"type": "object"},
                   "defer_loading": False}],
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "<system-reminder>ctx</system-reminder>"},
                                         {"type": "text", "text": "list files",
                                          "cache_control": {"type": "ephemeral"}}]},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "ls", "signature": "sig"},
                {"type": "tool_use", "id": "toolu_1", "name": "Bash", "input": {"command": "ls"}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1",
                                          "content": "a.py\nb.py", "cache_control": {"type": "ephemeral"}}]},
            {"role": "system", "content": "reminder"},
        ],
    }
    sent = translate(body)
    assert [m["role"] for m in sent["messages"]] == ["system", "user", "assistant", "tool", "system"]
    assert "reasoning_effort" not in sent and sent["user"] == "user_abc_account_x_session_y"
    assert set(sent) == {"model", "messages", "max_tokens", "stream", "stream_options", "tools", "user"}


# =========================================================================== translate_response


def completion(message: dict, finish_reason="stop", usage=None, **extra) -> bytes:
    payload = {"id": "chatcmpl-abc123", "object": "chat.completion", "created": 1, "model": "qwen3:8b",
               "choices": [{"index": 0, "message": {"role": "assistant", **message},
                            "finish_reason": finish_reason, **extra.pop("choice", {})}],
               "usage": usage if usage is not None else {"prompt_tokens": 20, "completion_tokens": 5,
                                                          "total_tokens": 25},
               **extra}
    return json.dumps(payload).encode()


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


# =========================================================================== translate_error


@pytest.mark.parametrize("status, out_status, error_type", [
    (400, 400, "invalid_request_error"), (401, 401, "authentication_error"), (403, 403, "permission_error"),
    (404, 404, "not_found_error"), (413, 413, "request_too_large"), (422, 400, "invalid_request_error"),
    (429, 429, "rate_limit_error"), (500, 500, "api_error"), (502, 502, "overloaded_error"),
    (503, 503, "overloaded_error"), (504, 504, "timeout_error"), (418, 418, "invalid_request_error"),
    (507, 507, "api_error"),
])
def test_error_statuses(status, out_status, error_type):
    body = json.dumps({"error": {"message": "boom", "type": "x", "param": None, "code": None}}).encode()
    got_status, got_body = ADAPTOR.translate_error(status, body)
    assert got_status == out_status
    assert json.loads(got_body) == {"type": "error", "error": {"type": error_type, "message": "boom"}}


@pytest.mark.parametrize("body, message", [
    (b'{"error": {"message": "This model\'s maximum context length is 8192 tokens", '
     b'"type": "invalid_request_error", "code": "context_length_exceeded"}}',
     "This model's maximum context length is 8192 tokens"),
    (b'{"error": "model \\"llama9\\" not found, try pulling it first"}',
     'model "llama9" not found, try pulling it first'),
    (b'{"detail": [{"loc": ["body", "messages"], "msg": "field required", "type": "missing"}]}',
     "body.messages: field required"),
    (b'{"detail": "Not Found"}', "Not Found"),
    (b'{"message": "quota exceeded"}', "quota exceeded"),
    (b"<html><body>Bad Gateway</body></html>", "the upstream failed"),
    (b"", "the upstream failed"),
    (b"upstream connect error", "upstream connect error"),
    (b'{"error": {"code": 500}}', "the upstream failed"),
])
def test_error_messages(body, message):
    _, out = ADAPTOR.translate_error(500 if b"context" not in body else 400, body)
    assert json.loads(out)["error"]["message"] == message


def test_error_messages_never_carry_keys():
    body = json.dumps({"error": {"message": "Incorrect API key provided: sk-proj-AbCdEfGhIjKlMnOpQrSt. "
                                            "Sent header Authorization: Bearer sk-upstream-secret-123456"}})
    _, out = ADAPTOR.translate_error(401, body.encode())
    assert b"AbCdEfGhIjKlMnOpQrSt" not in out and b"secret-123456" not in out
    assert json.loads(out)["error"]["type"] == "authentication_error"


def test_huge_error_messages_are_cut():
    _, out = ADAPTOR.translate_error(400, json.dumps({"error": {"message": "x" * 50000}}).encode())
    assert len(json.loads(out)["error"]["message"]) <= 1001


# =========================================================================== streams


def chunk(delta: dict | None = None, finish_reason=None, usage=None, choices=True, **extra) -> dict:
    payload = {"id": "chatcmpl-s1", "object": "chat.completion.chunk", "created": 1, "model": "qwen3:8b",
               "choices": [{"index": 0, "delta": delta or {}, "finish_reason": finish_reason}] if choices else [],
               **extra}
    if usage is not None:
        payload["usage"] = usage
    return payload


def sse(*payloads, done=True, crlf=False) -> list[bytes]:
    """OpenAI's framing: `data: JSON` and a blank line per chunk, then `data: [DONE]`."""
    end = b"\r\n\r\n" if crlf else b"\n\n"
    frames = [b"data: " + (p if isinstance(p, bytes) else json.dumps(p).encode()) + end for p in payloads]
    return frames + ([b"data: [DONE]" + end] if done else [])


USAGE = {"prompt_tokens": 30, "completion_tokens": 7, "total_tokens": 37,
         "prompt_tokens_details": {"cached_tokens": 10}}


def text_stream(*pieces, usage=USAGE, finish="stop", done=True):
    payloads = [chunk({"role": "assistant", "content": ""})]
    payloads += [chunk({"content": p}) for p in pieces]
    payloads.append(chunk({}, finish_reason=finish))
    if usage is not None:
        payloads.append(chunk(choices=False, usage=usage))
    return sse(*payloads, done=done)


def run(frames: list[bytes], mode: str = "chunks") -> tuple[bytes, OpenAIStream]:
    """Feed the upstream bytes whole-chunk, byte by byte, or as one blob; then finish()."""
    translator = ADAPTOR.translate_stream()
    data = b"".join(frames)
    if mode == "chunks":
        pieces = frames
    elif mode == "bytes":
        pieces = [data[i:i + 1] for i in range(len(data))]
    else:
        pieces = [data]
    out = b"".join(translator.feed(piece) for piece in pieces)
    return out + translator.finish(), translator


def events(out: bytes) -> list[tuple[str, dict]]:
    assert not out or out.endswith(b"\n\n")
    frames = SSEParser().feed(out)
    parsed = [(name, json.loads(data)) for name, data in frames]
    for name, data in parsed:
        assert name == data["type"]  # every frame keeps its event: line, matching its type
    return parsed


def names(out: bytes) -> list[str]:
    return [name for name, _ in events(out)]


def accumulate(out: bytes):
    """What the SDK's MessageStream builds from these events (its own accumulate_event)."""
    snapshot, bufs = None, {}
    for name, data in events(out):
        if name in ("ping", "message_stop"):
            continue
        assert name != "error", data
        snapshot = accumulate_event(event=data, current_snapshot=snapshot, json_bufs=bufs)
    return snapshot


def check_sequence(evs: list[tuple[str, dict]]) -> None:
    """Anthropic's grammar: start, ping, then blocks one at a time with consecutive indexes."""
    assert evs[0][0] == "message_start" and evs[1][0] == "ping"
    assert evs[-2][0] == "message_delta" and evs[-1][0] == "message_stop"
    open_index, next_index = None, 0
    for name, data in evs[2:-2]:
        if name == "content_block_start":
            assert open_index is None and data["index"] == next_index
            open_index, next_index = data["index"], next_index + 1
        elif name == "content_block_delta":
            assert data["index"] == open_index
        elif name == "content_block_stop":
            assert data["index"] == open_index
            open_index = None
        else:
            raise AssertionError(name)
    assert open_index is None


@pytest.mark.parametrize("mode", ["chunks", "bytes", "blob"])
def test_text_stream_exact_events(mode):
    out, translator = run(text_stream("Hel", "lo"), mode)
    evs = events(out)
    assert evs == [
        ("message_start", {"type": "message_start", "message": {
            "id": "msg_s1", "type": "message", "role": "assistant", "model": "qwen3:8b", "content": [],
            "stop_reason": None, "stop_sequence": None,
            "usage": {"input_tokens": 0, "output_tokens": 0, "cache_creation_input_tokens": 0,
                      "cache_read_input_tokens": 0}}}),
        ("ping", {"type": "ping"}),
        ("content_block_start", {"type": "content_block_start", "index": 0,
                                 "content_block": {"type": "text", "text": ""}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                 "delta": {"type": "text_delta", "text": "Hel"}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                 "delta": {"type": "text_delta", "text": "lo"}}),
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                           "usage": {"input_tokens": 20, "output_tokens": 7, "cache_creation_input_tokens": 0,
                                     "cache_read_input_tokens": 10}}),
        ("message_stop", {"type": "message_stop"}),
    ]
    assert translator.usage == Usage(20, 7, 0, 10)
    assert translator.usage_final is True and translator.output_chars == 5 and translator.error_type is None


def test_byte_by_byte_whole_chunks_and_blob_give_identical_bytes():
    frames = sse(
        chunk({"role": "assistant", "reasoning_content": "Let me th"}), chunk({"reasoning_content": "ink. ✓"}),
        chunk({"content": "Calling ünïcode "}),
        chunk({"tool_calls": [{"index": 0, "id": "call_a", "type": "function",
                               "function": {"name": "get_weather", "arguments": ""}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"city": "Pa'}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": 'ris"}'}}]}),
        chunk({}, finish_reason="tool_calls"), chunk(choices=False, usage=USAGE))
    results = {mode: run(frames, mode)[0] for mode in ("chunks", "bytes", "blob")}
    assert results["chunks"] == results["bytes"] == results["blob"]
    check_sequence(events(results["chunks"]))


def test_each_chunk_is_translated_as_it_arrives():
    translator = OpenAIStream()
    frames = text_stream("a", "b")
    first = translator.feed(frames[0])
    assert names(first) == ["message_start", "ping"]
    assert names(translator.feed(frames[1])) == ["content_block_start", "content_block_delta"]
    assert translator.feed(frames[2][:10]) == b""  # half a chunk: nothing yet
    assert names(translator.feed(frames[2][10:])) == ["content_block_delta"]
    assert names(translator.feed(frames[3])) == ["content_block_stop"]  # finish_reason closes the block
    assert translator.feed(frames[4]) == b""  # the usage chunk: numbers kept for message_delta
    assert translator.usage_final
    assert names(translator.feed(frames[5])) == ["message_delta", "message_stop"]  # [DONE]
    assert translator.finish() == b""  # idempotent with [DONE]


def test_reasoning_deltas_become_a_thinking_block_with_an_empty_signature():
    out, translator = run(sse(
        chunk({"role": "assistant", "content": None, "reasoning_content": "Think"}),
        chunk({"reasoning_content": "ing..."}),
        chunk({"content": "Answer"}),
        chunk({}, finish_reason="stop"), chunk(choices=False, usage=USAGE)))
    evs = events(out)
    check_sequence(evs)
    assert evs[2][1]["content_block"] == {"type": "thinking", "thinking": "", "signature": ""}
    assert [e[1]["delta"] for e in evs if e[0] == "content_block_delta" and e[1]["index"] == 0] == [
        {"type": "thinking_delta", "thinking": "Think"}, {"type": "thinking_delta", "thinking": "ing..."},
        {"type": "signature_delta", "signature": ""}]
    message = accumulate(out)
    assert message.content[0].type == "thinking" and message.content[0].thinking == "Thinking..."
    assert message.content[0].signature == ""
    assert message.content[1].text == "Answer"
    assert translator.output_chars == len("Thinking...Answer")


def test_openrouter_reasoning_field_and_keepalive_comments():
    out, _ = run([b": OPENROUTER PROCESSING\n\n"] + sse(
        chunk({"role": "assistant", "reasoning": "r"}), chunk({"content": "t"}),
        chunk({}, finish_reason="stop"), chunk(choices=False, usage=USAGE)))
    message = accumulate(out)
    assert [b.type for b in message.content] == ["thinking", "text"]


def two_tool_frames(interleaved: bool) -> list[bytes]:
    starts = [chunk({"tool_calls": [{"index": 0, "id": "call_p", "type": "function",
                                     "function": {"name": "get_weather", "arguments": ""}}]}),
              chunk({"tool_calls": [{"index": 1, "id": "call_r", "type": "function",
                                     "function": {"name": "get_time", "arguments": ""}}]})]
    args0 = [chunk({"tool_calls": [{"index": 0, "function": {"arguments": a}}]}) for a in ('{"city":', ' "Paris"}')]
    args1 = [chunk({"tool_calls": [{"index": 1, "function": {"arguments": a}}]}) for a in ('{"tz":', ' "CET"}')]
    if interleaved:
        body = [starts[0], starts[1], args0[0], args1[0], args0[1], args1[1]]
    else:
        body = [starts[0], *args0, starts[1], *args1]
    return sse(chunk({"role": "assistant", "content": "Checking."}), *body,
               chunk({}, finish_reason="tool_calls"), chunk(choices=False, usage=USAGE))


def test_two_tool_calls_keyed_by_index():
    out, translator = run(two_tool_frames(interleaved=False), "bytes")
    evs = events(out)
    check_sequence(evs)
    starts = [e[1] for e in evs if e[0] == "content_block_start"]
    assert [s["content_block"] for s in starts] == [
        {"type": "text", "text": ""},
        {"type": "tool_use", "id": "call_p", "name": "get_weather", "input": {}},
        {"type": "tool_use", "id": "call_r", "name": "get_time", "input": {}}]
    assert [e[1]["delta"]["partial_json"] for e in evs if e[0] == "content_block_delta"
            and e[1]["delta"]["type"] == "input_json_delta"] == ['{"city":', ' "Paris"}', '{"tz":', ' "CET"}']
    message = accumulate(out)
    assert message.stop_reason == "tool_use"
    assert [(b.type, getattr(b, "input", None)) for b in message.content] == [
        ("text", None), ("tool_use", {"city": "Paris"}), ("tool_use", {"tz": "CET"})]
    assert translator.output_chars == len("Checking.") + len('{"city": "Paris"}{"tz": "CET"}')


def test_truly_interleaved_tool_fragments_still_complete_each_input():
    out, _ = run(two_tool_frames(interleaved=True))
    message = accumulate(out)
    assert [(b.id, b.input) for b in message.content[1:]] == [("call_p", {"city": "Paris"}),
                                                              ("call_r", {"tz": "CET"})]
    evs = events(out)
    assert [e[1]["index"] for e in evs if e[0] == "content_block_stop"] == [0, 1, 2]


def test_parallel_calls_in_one_chunk_ollama_style():
    out, _ = run(sse(chunk({"role": "assistant", "content": "", "tool_calls": [
        {"id": "call_1", "index": 0, "type": "function", "function": {"name": "a", "arguments": '{"x":1}'}},
        {"id": "call_2", "index": 1, "type": "function", "function": {"name": "b", "arguments": {"y": 2}}},
    ]}), chunk({}, finish_reason="stop"), chunk(choices=False, usage=USAGE)))
    check_sequence(events(out))
    message = accumulate(out)
    assert [(b.name, b.input) for b in message.content] == [("a", {"x": 1}), ("b", {"y": 2})]
    assert message.stop_reason == "tool_use"  # "stop" after tool calls means tool_use


def test_calls_all_numbered_zero_are_told_apart_by_id():
    out, _ = run(sse(
        chunk({"tool_calls": [{"index": 0, "id": "call_1", "function": {"name": "a", "arguments": '{"x":'}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": " 1}"}}]}),
        chunk({"tool_calls": [{"index": 0, "id": "call_2", "function": {"name": "b", "arguments": '{"y":'}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": " 2}"}}]}),
        chunk({}, finish_reason="tool_calls")))
    check_sequence(events(out))
    assert [(b.id, b.name, b.input) for b in accumulate(out).content] == [("call_1", "a", {"x": 1}),
                                                                         ("call_2", "b", {"y": 2})]


def test_tool_call_without_id_or_index_and_name_arriving_late():
    out, _ = run(sse(
        chunk({"tool_calls": [{"function": {"arguments": '{"q": '}}]}),
        chunk({"tool_calls": [{"function": {"name": "search", "arguments": '"x"}'}}]}),
        chunk({}, finish_reason="tool_calls"), chunk(choices=False, usage=USAGE)))
    check_sequence(events(out))
    message = accumulate(out)
    block = message.content[0]
    assert block.name == "search" and block.input == {"q": "x"} and block.id.startswith("toolu_")


def test_tool_call_whose_name_never_comes_is_still_delivered():
    out, _ = run(sse(chunk({"tool_calls": [{"index": 0, "function": {"arguments": "{}"}}]}),
                     chunk({}, finish_reason="tool_calls")))
    check_sequence(events(out))
    assert accumulate(out).content[0].type == "tool_use"


def test_text_after_a_tool_call_opens_a_new_block():
    out, _ = run(sse(
        chunk({"tool_calls": [{"index": 0, "id": "c", "function": {"name": "f", "arguments": "{}"}}]}),
        chunk({"content": "done"}), chunk({}, finish_reason="stop")))
    check_sequence(events(out))
    assert [b.type for b in accumulate(out).content] == ["tool_use", "text"]


@pytest.mark.parametrize("finish, stop_reason", [("length", "max_tokens"), ("content_filter", "refusal"),
                                                 ("stop", "end_turn"), ("tool_calls", "tool_use")])
def test_stream_stop_reasons(finish, stop_reason):
    out, _ = run(text_stream("x", finish=finish))
    assert accumulate(out).stop_reason == stop_reason


def test_stream_vllm_stop_sequence():
    frames = sse(chunk({"content": "1 2 3"}),
                 chunk() | {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop", "stop_reason": "###"}]})
    message = accumulate(run(frames)[0])
    assert message.stop_reason == "stop_sequence" and message.stop_sequence == "###"


def test_done_without_usage_chunk_estimates_output():
    out, translator = run(text_stream("x" * 40, usage=None))
    evs = events(out)
    assert evs[-2][1]["usage"] == {"input_tokens": 0, "output_tokens": estimate_tokens(40),  # no request given
                                   "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}
    assert translator.usage_final is False
    assert translator.usage.output_tokens == estimate_tokens(40) == 10
    message = accumulate(out)
    assert message.usage.output_tokens == 10 and message.usage.input_tokens == 0


def test_upstream_ending_without_done_is_closed_by_finish():
    frames = sse(chunk({"content": "partial"}), done=False)
    translator = OpenAIStream()
    out = b"".join(translator.feed(f) for f in frames)
    assert names(out) == ["message_start", "ping", "content_block_start", "content_block_delta"]
    tail = translator.finish()
    assert names(tail) == ["content_block_stop", "message_delta", "message_stop"]
    assert translator.finish() == b""
    assert accumulate(out + tail).content[0].text == "partial"


def test_last_frame_without_blank_line_is_read_by_finish():
    frames = text_stream("hi")
    frames[-1] = frames[-1].rstrip(b"\n")  # "data: [DONE]" with no terminator
    out, translator = run(frames)
    assert names(out)[-2:] == ["message_delta", "message_stop"] and translator.usage_final


def test_usage_in_every_chunk_and_in_the_first():
    frames = sse(chunk({"role": "assistant", "content": ""}, usage={"prompt_tokens": 12, "completion_tokens": 0}),
                 chunk({"content": "a"}, usage={"prompt_tokens": 12, "completion_tokens": 1}),
                 chunk({}, finish_reason="stop", usage={"prompt_tokens": 12, "completion_tokens": 2}))
    out, translator = run(frames)
    assert events(out)[0][1]["message"]["usage"]["input_tokens"] == 12
    assert translator.usage == Usage(12, 2, 0, 0) and translator.usage_final
    assert accumulate(out).usage.output_tokens == 2


def test_null_usage_on_ordinary_chunks_is_ignored():
    frames = sse(chunk({"content": "a"}, usage=None) | {"usage": None}, chunk({}, finish_reason="stop"))
    _, translator = run(frames)
    assert translator.usage_final is False


def test_crlf_framed_stream():
    out, _ = run(sse(chunk({"content": "ab"}), chunk({}, finish_reason="stop"),
                     chunk(choices=False, usage=USAGE), crlf=True))
    assert accumulate(out).content[0].text == "ab"


def test_other_choices_are_ignored():
    frames = sse(chunk({"content": "first"}),
                 chunk() | {"choices": [{"index": 1, "delta": {"content": "second"}, "finish_reason": None}]},
                 chunk({}, finish_reason="stop"))
    assert accumulate(run(frames)[0]).content[0].text == "first"


@pytest.mark.parametrize("error, error_type", [
    ({"message": "Rate limit reached", "type": "requests", "code": "rate_limit_exceeded"}, "rate_limit_error"),
    ({"message": "Provider returned error", "code": 502}, "overloaded_error"),
    ({"message": "Internal error", "type": "server_error"}, "api_error"),
    ({"message": "context too long", "type": "invalid_request_error", "code": "context_length_exceeded"},
     "invalid_request_error"),
    ("plain string error", "api_error"),
])
def test_error_object_mid_stream(error, error_type):
    frames = sse(chunk({"content": "Hal"}), {"error": error}, chunk({"content": "never"}),
                 chunk({}, finish_reason="stop"))
    out, translator = run(frames)
    evs = events(out)
    assert [e[0] for e in evs] == ["message_start", "ping", "content_block_start", "content_block_delta", "error"]
    expected_message = error if isinstance(error, str) else error["message"]
    assert evs[-1][1] == {"type": "error", "error": {"type": error_type, "message": expected_message}}
    assert translator.error_type == error_type
    assert translator.finish() == b""


def test_error_event_line_and_error_before_anything():
    out, translator = run([b'event: error\ndata: {"message": "upstream exploded"}\n\n'])
    assert events(out) == [("error", {"type": "error", "error": {"type": "api_error",
                                                                 "message": "upstream exploded"}})]
    assert translator.error_type == "api_error"


def test_empty_stream_is_an_error_not_a_silent_empty_answer():
    for frames in ([], sse()):
        out, translator = run(frames)
        assert names(out) == ["error"] and translator.error_type == "api_error"


def test_junk_between_chunks_is_ignored():
    out, _ = run([b"data: not json\n\n", b"data: 42\n\n"] + text_stream("ok"))
    assert accumulate(out).content[0].text == "ok"


# ----------------------------------------------------------------- the real SDK, over loopback


def serve_and_stream(upstream, anthropic_bytes: bytes):
    upstream.script(raw_sse_answer([anthropic_bytes]))
    client = anthropic.Anthropic(base_url=upstream.url, api_key="k", max_retries=0)
    with client.messages.stream(model="claude-x", max_tokens=100,
                                messages=[{"role": "user", "content": "hi"}]) as stream:
        texts = list(stream.text_stream)
        return texts, stream.get_final_message()


def test_the_sdk_reads_a_translated_tool_stream(upstream):
    out, _ = run(two_tool_frames(interleaved=False), "bytes")
    texts, message = serve_and_stream(upstream, out)
    assert texts == ["Checking."]
    assert message.id == "msg_s1" and message.model == "qwen3:8b" and message.stop_reason == "tool_use"
    assert [b.type for b in message.content] == ["text", "tool_use", "tool_use"]
    assert message.content[1].input == {"city": "Paris"} and message.content[2].input == {"tz": "CET"}
    assert (message.usage.input_tokens, message.usage.output_tokens, message.usage.cache_read_input_tokens) == (
        20, 7, 10)


def test_the_sdk_reads_a_translated_thinking_stream(upstream):
    out, _ = run(sse(chunk({"reasoning_content": "hmm"}), chunk({"content": "Hi!"}),
                     chunk({}, finish_reason="length"), chunk(choices=False, usage=USAGE)))
    texts, message = serve_and_stream(upstream, out)
    assert texts == ["Hi!"] and message.stop_reason == "max_tokens"
    assert message.content[0].type == "thinking" and message.content[0].thinking == "hmm"


def test_the_sdk_raises_on_a_translated_mid_stream_error(upstream):
    out, _ = run(sse(chunk({"content": "Hal"}), {"error": {"message": "overloaded", "code": 503}}))
    with pytest.raises(anthropic.APIStatusError) as info:
        serve_and_stream(upstream, out)
    assert "overloaded" in str(info.value)


def test_the_sdk_reads_a_translated_message(upstream):
    body, _ = ADAPTOR.translate_response(completion({"content": "Sure.", "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": '{"a": [1, 2]}'}}]},
        finish_reason="tool_calls", usage=USAGE))
    upstream.script(BodyAnswer(body, headers={"Content-Type": "application/json"}))
    client = anthropic.Anthropic(base_url=upstream.url, api_key="k", max_retries=0)
    message = client.messages.create(model="claude-x", max_tokens=100, messages=[{"role": "user", "content": "hi"}])
    assert message.content[0].text == "Sure." and message.content[1].input == {"a": [1, 2]}
    assert message.usage.cache_read_input_tokens == 10 and message.stop_reason == "tool_use"


def test_the_sdk_reads_a_translated_error(upstream):
    status, body = ADAPTOR.translate_error(429, b'{"error": {"message": "slow down", "type": "requests"}}')
    upstream.script(BodyAnswer(body, status=status, headers={"Content-Type": "application/json"}))
    client = anthropic.Anthropic(base_url=upstream.url, api_key="k", max_retries=0)
    with pytest.raises(anthropic.RateLimitError) as info:
        client.messages.create(model="claude-x", max_tokens=10, messages=[{"role": "user", "content": "hi"}])
    assert info.value.body["error"]["type"] == "rate_limit_error"


def test_a_server_that_ignores_stream_true_is_replayed_as_events():
    body = completion({"content": "Whole answer", "reasoning_content": "why",
                       "tool_calls": [{"id": "call_1", "type": "function",
                                       "function": {"name": "f", "arguments": '{"a": 1}'}}]},
                      finish_reason="tool_calls", usage=USAGE)
    out, translator = run([body[:20], body[20:]])
    evs = events(out)
    check_sequence(evs)
    message = accumulate(out)
    assert [b.type for b in message.content] == ["thinking", "text", "tool_use"]
    assert message.content[2].input == {"a": 1} and message.stop_reason == "tool_use"
    assert translator.usage == Usage(20, 7, 0, 10) and translator.usage_final
    assert translator.output_chars == len("why") + len("Whole answer") + len('{"a": 1}')


def test_a_plain_json_error_instead_of_a_stream():
    out, translator = run([b'{"error": {"message": "no such model", "code": 404}}'])
    assert events(out) == [("error", {"type": "error", "error": {"type": "not_found_error",
                                                                 "message": "no such model"}})]
    assert translator.error_type == "not_found_error"


def test_a_plain_json_answer_without_usage_is_estimated():
    raw = json.dumps({"id": "x", "model": "m", "choices": [{"message": {"content": "y" * 16}}]}).encode()
    out, translator = run([raw])
    assert events(out)[-2][1]["usage"] == {"input_tokens": 0, "output_tokens": 4,
                                           "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}
    assert translator.usage_final is False and translator.usage.output_tokens == 4
