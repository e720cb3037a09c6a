"""message_events: a whole message as Anthropic's event sequence.

The events are accumulated with the official `anthropic` SDK's own
accumulate_event, so "a client rebuilds the same message" is checked by the
reader clients use, not by a reading of our own.
"""
from __future__ import annotations

from anthropic.lib.streaming._messages import accumulate_event

from app.wire.message_events import message_events

USAGE = {"input_tokens": 12, "cache_creation_input_tokens": 3, "cache_read_input_tokens": 40, "output_tokens": 9}


def message_of(*content, stop_reason="end_turn", usage=None) -> dict:
    return {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x", "content": list(content),
            "stop_reason": stop_reason, "stop_sequence": None, "usage": dict(usage or USAGE)}


def rebuilt(events) -> dict:
    """The message the SDK builds from the events, without the fields it leaves None."""
    snapshot, bufs = None, {}
    for _, data in events:
        if data["type"] != "message_stop":
            snapshot = accumulate_event(event=data, current_snapshot=snapshot, json_bufs=bufs)
    return snapshot.model_dump(exclude_none=True)


def check_grammar(events) -> None:
    """Event names match their types; start, blocks one at a time by consecutive index, delta, stop."""
    assert all(name == data["type"] for name, data in events)
    assert events[0][0] == "message_start" and [n for n, _ in events[-2:]] == ["message_delta", "message_stop"]
    open_index, next_index = None, 0
    for name, data in events[1:-2]:
        if name == "content_block_start":
            assert open_index is None and data["index"] == next_index
            open_index, next_index = next_index, next_index + 1
        else:
            assert name in ("content_block_delta", "content_block_stop") and data["index"] == open_index
            open_index = None if name == "content_block_stop" else open_index
    assert open_index is None


def test_every_kind_of_block_comes_back_whole_through_the_sdk():
    message = message_of(
        {"type": "thinking", "thinking": "Let me see.", "signature": "EqQBCgIYAh=="},
        {"type": "redacted_thinking", "data": "opaque=="},
        {"type": "text", "text": "Paris ✓, as \"cited\".",
         "citations": [{"type": "char_location", "cited_text": "Paris", "document_index": 0,
                        "document_title": "atlas", "start_char_index": 0, "end_char_index": 5}]},
        {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Zürich", "days": [1, 2]}},
        stop_reason="tool_use")
    events = list(message_events(message))
    check_grammar(events)
    assert rebuilt(events) == {k: v for k, v in message.items() if v is not None}


def test_message_start_carries_input_and_cache_counts_and_at_most_one_output_token():
    start = next(message_events(message_of({"type": "text", "text": "Hi"})))[1]["message"]
    assert start["usage"] == {"input_tokens": 12, "cache_creation_input_tokens": 3, "cache_read_input_tokens": 40,
                              "output_tokens": 1}
    assert start["content"] == [] and start["stop_reason"] is None and start["stop_sequence"] is None
    empty = next(message_events(message_of(usage={"input_tokens": 5, "output_tokens": 0})))[1]["message"]
    assert empty["usage"] == {"input_tokens": 5, "output_tokens": 0}


def test_an_explicit_start_usage_is_sent_as_given_and_the_delta_carries_the_messages_own():
    events = list(message_events(message_of(), start_usage={"input_tokens": 99, "output_tokens": 0}))
    assert events[0][1]["message"]["usage"] == {"input_tokens": 99, "output_tokens": 0}
    assert events[-2][1] == {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                             "usage": USAGE}


def test_a_message_without_content_is_start_delta_stop():
    assert [name for name, _ in message_events(message_of())] == ["message_start", "message_delta", "message_stop"]


def test_text_pieces_split_a_text_into_several_deltas_in_order():
    events = list(message_events(message_of({"type": "text", "text": "one two three"}),
                                 text_pieces=lambda text: [w + " " for w in text.split(" ")[:-1]] + ["three"]))
    deltas = [data["delta"]["text"] for name, data in events if name == "content_block_delta"]
    assert deltas == ["one ", "two ", "three"]
    assert events[1][1]["content_block"] == {"type": "text", "text": ""}
    assert rebuilt(events)["content"] == [{"type": "text", "text": "one two three"}]


def test_a_thinking_block_is_closed_by_its_signature_even_an_empty_one():
    signed = list(message_events(message_of({"type": "thinking", "thinking": "hmm", "signature": ""})))
    assert [data["delta"] for name, data in signed if name == "content_block_delta"] == [
        {"type": "thinking_delta", "thinking": "hmm"}, {"type": "signature_delta", "signature": ""}]
    unsigned = list(message_events(message_of({"type": "thinking", "thinking": "hmm"})))
    assert [data["delta"]["type"] for name, data in unsigned if name == "content_block_delta"] == ["thinking_delta"]


def test_tool_input_is_one_compact_json_delta_and_starts_empty():
    events = list(message_events(message_of({"type": "tool_use", "id": "t", "name": "f", "input": {"a": "é"}})))
    assert events[1][1]["content_block"] == {"type": "tool_use", "id": "t", "name": "f", "input": {}}
    assert events[2][1]["delta"] == {"type": "input_json_delta", "partial_json": '{"a":"é"}'}


def test_the_message_given_is_not_changed():
    message = message_of({"type": "text", "text": "Hi"})
    before = repr(message)
    list(message_events(message, start_usage={"input_tokens": 1}))
    assert repr(message) == before
