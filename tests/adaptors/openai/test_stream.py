"""The OpenAI adaptor, downward: chat.completion.chunk streams as Anthropic's events.

Streams are fed byte by byte and in whole chunks and must give the same
frames; the frames are then accumulated the way the official `anthropic` SDK
does it, and once replayed to the real SDK client over a loopback socket, so
"the SDK never notices" is checked, not assumed.
"""
from __future__ import annotations

import json

import anthropic
import pytest

from app.adaptors.base import Usage, estimate_tokens
from app.adaptors.openai import OpenAIStream
from tests.adaptors.openai.support import (USAGE, accumulate, check_sequence, chunk, completion, events,
                                           names, run, sse, text_stream)
from tests.support.upstream import raw_sse_answer


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
