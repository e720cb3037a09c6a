#!/usr/bin/env python
"""A fast mock Anthropic upstream for the benchmark: raw asyncio HTTP/1.1, keep-alive, stdlib only.

    python bench/mock_upstream.py --port 18001 [--procs 1]

POST /v1/messages (any path works) answers a valid Anthropic Message with usage, or, when the
body has "stream": true, an SSE stream (chunked transfer encoding, one HTTP chunk per event):
message_start, content_block_start, N content_block_delta, content_block_stop, message_delta,
message_stop. Every event's JSON carries "bench_ts": time.time() at the moment it is written, so a
client can compute per-event delay (arrival minus send stamp).

Stream shape, from request headers (octorelay forwards anthropic-* headers upstream) or the query
string (?events=&delay_ms=):
    anthropic-bench-events    number of content_block_delta events (default 10, max 100000)
    anthropic-bench-delay-ms  delay before each event after the first (default 0)

--procs N forks N processes sharing the port with SO_REUSEPORT.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import time
from urllib.parse import parse_qs

_MESSAGE = {
    "id": "msg_bench01", "type": "message", "role": "assistant", "model": "claude-bench",
    "content": [{"type": "text", "text": "Hello from the bench mock."}],
    "stop_reason": "end_turn", "stop_sequence": None,
    "usage": {"input_tokens": 12, "output_tokens": 7, "cache_creation_input_tokens": 0,
              "cache_read_input_tokens": 0},
}
_BODY = json.dumps(_MESSAGE, separators=(",", ":")).encode()
_JSON_HEAD = (b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nrequest-id: req_bench\r\n"
              b"content-length: " + str(len(_BODY)).encode() + b"\r\n\r\n")
_JSON_RESPONSE = _JSON_HEAD + _BODY
_SSE_HEAD = (b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
             b"request-id: req_bench\r\ntransfer-encoding: chunked\r\n\r\n")
_NOT_FOUND = b"HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}"
_MAX_HEAD = 65536


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def _event(name: str, payload: dict) -> bytes:
    payload["bench_ts"] = time.time()
    return _chunk(b"event: " + name.encode() + b"\ndata: "
                  + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n")


async def _stream(writer: asyncio.StreamWriter, events: int, delay_s: float) -> None:
    writer.write(_SSE_HEAD)
    writer.write(_event("message_start", {"type": "message_start", "message": {
        **_MESSAGE, "content": [], "stop_reason": None,
        "usage": {"input_tokens": 12, "output_tokens": 1}}}))
    writer.write(_event("content_block_start", {"type": "content_block_start", "index": 0,
                                                "content_block": {"type": "text", "text": ""}}))
    await writer.drain()
    for i in range(events):
        if delay_s > 0:
            await asyncio.sleep(delay_s)
        writer.write(_event("content_block_delta", {"type": "content_block_delta", "index": 0,
                                                    "delta": {"type": "text_delta", "text": f"tok{i} "}}))
        await writer.drain()
    writer.write(_event("content_block_stop", {"type": "content_block_stop", "index": 0}))
    writer.write(_event("message_delta", {"type": "message_delta",
                                          "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                                          "usage": {"output_tokens": max(1, events)}}))
    writer.write(_event("message_stop", {"type": "message_stop"}))
    writer.write(b"0\r\n\r\n")
    await writer.drain()


async def _handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                return
            lines = head.split(b"\r\n")
            parts = lines[0].split(b" ")
            if len(parts) < 3:
                return
            method, target = parts[0], parts[1].decode("latin-1")
            headers = {}
            for line in lines[1:]:
                name, sep, value = line.partition(b":")
                if sep:
                    headers[name.strip().lower()] = value.strip()
            length = int(headers.get(b"content-length", b"0") or 0)
            body = await reader.readexactly(length) if length else b""
            close = headers.get(b"connection", b"").lower() == b"close"
            if method != b"POST":
                writer.write(_NOT_FOUND)
            elif b'"stream":true' in body.replace(b" ", b""):
                path, _, query = target.partition("?")
                qs = parse_qs(query)
                events = int(headers.get(b"anthropic-bench-events") or (qs.get("events") or ["10"])[0])
                delay_ms = float(headers.get(b"anthropic-bench-delay-ms") or (qs.get("delay_ms") or ["0"])[0])
                await _stream(writer, max(0, min(events, 100000)), max(0.0, delay_ms) / 1000.0)
            else:
                writer.write(_JSON_RESPONSE)
            if close:
                await writer.drain()
                return
            if writer.transport.get_write_buffer_size() > 262144:
                await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError):
        return
    except asyncio.CancelledError:
        # only asyncio.run's shutdown cancels a handler (idle keep-alive connections at SIGTERM);
        # ending normally keeps Python 3.11's StreamReaderProtocol from logging a traceback each
        return
    finally:
        try:
            writer.close()
        except Exception:
            pass


def _serve(sock: socket.socket) -> None:
    async def main():
        server = await asyncio.start_server(_handle, sock=sock, limit=_MAX_HEAD, backlog=4096)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        async with server:
            await stop.wait()
    asyncio.run(main())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=18001)
    parser.add_argument("--procs", type=int, default=1)
    args = parser.parse_args()
    children = []
    for i in range(max(1, args.procs)):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((args.host, args.port))
        sock.listen(4096)
        if i == args.procs - 1:
            break
        pid = os.fork()
        if pid == 0:
            _serve(sock)
            os._exit(0)
        children.append(pid)
        sock.close()

    def _stop_children(*_):
        for pid in children:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    try:
        _serve(sock)
    finally:
        _stop_children()
        for pid in children:
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass


if __name__ == "__main__":
    main()
