"""The OpenAI adaptor, upward: build_request and the top-level fields, tools, tool_choice, thinking."""
from __future__ import annotations

import json

import pytest

from app.adaptors.base import Target
from tests.adaptors.openai.support import ADAPTOR, CLIENT_HEADERS, TARGET, body_of, invalid, translate


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
