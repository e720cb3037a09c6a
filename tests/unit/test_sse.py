"""The SSE reader and writer (app/wire/sse.py): framing across chunk boundaries, all three line
endings, comments, multi-line data, and what is left at the end of a stream."""
from __future__ import annotations

import json

import pytest

from app.wire.sse import SSEParser, frame, parse_frame

STREAM = (b"event: message_start\ndata: {\"a\":1}\n\n"
          b": a comment, ignored\n\n"
          b"event: ping\ndata: {}\n\n"
          b"data: [DONE]\n\n")
FRAMES = [("message_start", '{"a":1}'), ("ping", "{}"), (None, "[DONE]")]


def test_whole_stream_in_one_chunk():
    assert SSEParser().feed(STREAM) == FRAMES


@pytest.mark.parametrize("size", [1, 2, 3, 7, 16])
def test_any_chunking_gives_the_same_frames(size):
    parser = SSEParser()
    got = []
    for i in range(0, len(STREAM), size):
        got += parser.feed(STREAM[i:i + size])
    assert got + parser.flush() == FRAMES


@pytest.mark.parametrize("newline", [b"\n", b"\r\n", b"\r"])
def test_every_line_ending(newline):
    data = STREAM.replace(b"\n", newline)
    assert SSEParser().feed(data) == FRAMES


def test_multi_line_data_is_joined_and_one_leading_space_dropped():
    assert parse_frame(b"event: x\ndata:  two spaces\ndata:none") == ("x", " two spaces\nnone")


def test_comment_only_and_unknown_fields_are_no_frame():
    assert parse_frame(b": keep-alive") is None
    assert parse_frame(b"id: 7\nretry: 100") is None


def test_flush_returns_an_unterminated_last_frame_once():
    parser = SSEParser()
    assert parser.feed(b"event: message_stop\ndata: {}") == []
    assert parser.flush() == [("message_stop", "{}")]
    assert parser.flush() == []


def test_invalid_utf8_is_replaced_not_raised():
    assert SSEParser().feed(b"data: \xff\n\n") == [(None, "\ufffd")]


def test_frame_round_trips_through_the_parser():
    payload = {"type": "content_block_delta", "delta": {"text": "h\u00e9llo\nworld"}}
    encoded = frame("content_block_delta", payload)
    assert encoded.endswith(b"\n\n") and b"\n\n" not in encoded[:-2]
    ((event, data),) = SSEParser().feed(encoded)
    assert event == "content_block_delta" and json.loads(data) == payload
