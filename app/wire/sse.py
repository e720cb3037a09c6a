"""Server-sent events: split a byte stream into frames, and write frames.

Frames are parsed only to read them (usage, translation); passthrough
forwards the upstream's own bytes, so nothing is lost in re-encoding.
"""
from __future__ import annotations

import json
import re

_BOUNDARY = re.compile(rb"\r\n\r\n|\n\n|\r\r")


class SSEParser:
    """Incremental: feed() bytes, get back the (event, data) frames completed by them."""

    def __init__(self):
        self._buffer = b""

    def feed(self, chunk: bytes) -> list[tuple[str | None, str]]:
        self._buffer += chunk
        frames: list[tuple[str | None, str]] = []
        while True:
            match = _BOUNDARY.search(self._buffer)
            if match is None:
                return frames
            block, self._buffer = self._buffer[:match.start()], self._buffer[match.end():]
            frame = parse_frame(block)
            if frame is not None:
                frames.append(frame)

    def flush(self) -> list[tuple[str | None, str]]:
        """Whatever is left when the stream ends without a final blank line."""
        block, self._buffer = self._buffer, b""
        frame = parse_frame(block) if block.strip() else None
        return [frame] if frame is not None else []


def parse_frame(block: bytes) -> tuple[str | None, str] | None:
    event, data = None, []
    for line in block.decode("utf-8", "replace").splitlines():
        if not line or line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "event":
            event = value
        elif name == "data":
            data.append(value)
    if event is None and not data:
        return None
    return event, "\n".join(data)


def frame(event: str, data: dict) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'), ensure_ascii=False)}\n\n".encode()
