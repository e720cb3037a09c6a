"""The OpenAI adaptor, upward: system text, user content and tool history as Chat Completions messages."""
from __future__ import annotations

import base64
import json

import pytest

from tests.adaptors.openai.support import PNG, body_of, invalid, messages_of, translate


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
