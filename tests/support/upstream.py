"""A scripted fake upstream (api.anthropic.com or an OpenAI-compatible server) for relay tests.

Why it exists: the relay behaviours that matter most -- streaming pass-through,
timeouts, upstreams that drop or stall, a client's cancellation reaching the
upstream, connection pooling -- only show up on a real socket; mocking
`requests` hides exactly those bugs. This module runs a small threaded HTTP/1.1
server on 127.0.0.1 (random free port) that answers each incoming request with
the next scripted answer and can misbehave at the socket level.

Usage from a relay test::

    from tests.support.upstream import upstream, sse_answer, anthropic_stream_events  # or via conftest

    def test_streams(upstream):
        upstream.script(sse_answer(anthropic_stream_events(["Hi"]), delay=0.1))
        ...  # point a channel at upstream.url and call the relay
        assert upstream.requests[0].json()["stream"] is True

Everything is bounded: sleeps wake up when the client goes away or on close(),
and close() stops all threads within about a second.
"""
from __future__ import annotations

import json
import socket
import socketserver
import struct
import sys
import threading
import time
import uuid
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Iterable, Union

import pytest
from requests.structures import CaseInsensitiveDict

from tests.support.net import readable

PROBE_INTERVAL = 0.05  # how often a sleeping answer checks for a departed client or close()
IDLE_TIMEOUT = 30.0  # socket timeout: idle keep-alive connections, blocked reads and writes
CLOSE_GRACE = 1.0  # how long close() waits for connection threads
DEFAULT_MODEL = "claude-sonnet-4-5"
REASONS = {529: "Overloaded"}  # status phrases http.server does not know

MESSAGE_USAGE = {"input_tokens": 25, "cache_creation_input_tokens": 0,
                 "cache_read_input_tokens": 0, "output_tokens": 15}
STREAM_USAGE_START = {**MESSAGE_USAGE, "output_tokens": 1}
STREAM_USAGE_DELTA = {"output_tokens": 15}

Event = tuple[Union[str, None], Union[dict, str]]


# --------------------------------------------------------------------------- recording


class RecordedRequest:
    """One request as the upstream received it (path includes the query string)."""

    def __init__(self, method: str, path: str, headers: CaseInsensitiveDict, body: bytes):
        self.method = method
        self.path = path
        self.headers = headers
        self.body = body
        self.received_at = time.monotonic()

    def json(self):
        return json.loads(self.body)

    def __repr__(self) -> str:
        return f"<RecordedRequest {self.method} {self.path} {len(self.body)}B>"


# --------------------------------------------------------------------------- answers


class Answer:
    """Base class: writes one response (or one misbehaviour) onto a connection."""

    def serve(self, conn: "_Handler") -> None:
        raise NotImplementedError


class BodyAnswer(Answer):
    """A complete response with a Content-Length body; the connection stays alive."""

    def __init__(self, body: bytes, status: int = 200, headers: dict | None = None):
        self.body = body
        self.status = status
        self.headers = headers or {}

    def serve(self, conn):
        headers = _merge({"Content-Length": str(len(self.body))}, self.headers)
        if conn.start(self.status, headers) and conn.command != "HEAD":
            conn.write(self.body)


class StreamAnswer(Answer):
    """Frames written and flushed one by one (one HTTP chunk each), then an ending.

    `ending` is "complete" (terminating chunk), "drop" (close without it) or
    "hang" (stall `hang` seconds, then close). `sent_at` holds the monotonic
    time each frame was handed to the socket.
    """

    def __init__(self, frames: list[bytes], delays: list[float], status: int = 200,
                 headers: dict | None = None, chunked: bool = True,
                 ending: str = "complete", hang: float = 0.0):
        self.frames = frames
        self.delays = delays
        self.status = status
        self.headers = headers or {}
        self.chunked = chunked
        self.ending = ending
        self.hang = hang
        self.sent_at: list[float] = []

    def serve(self, conn):
        self.sent_at = []
        if not conn.start(self.status, self._head()):
            return
        for frame, delay in zip(self.frames, self.delays):
            if not conn.wait(delay) or not conn.write(self._encode(frame)):
                return conn.abort()
            self.sent_at.append(time.monotonic())
        self._finish(conn)

    def _head(self) -> dict:
        framing = {"Transfer-Encoding": "chunked"} if self.chunked else {"Connection": "close"}
        return _merge(framing, self.headers)

    def _encode(self, frame: bytes) -> bytes:
        if not self.chunked or not frame:  # an empty chunk would end the body
            return frame
        return b"%x\r\n%s\r\n" % (len(frame), frame)

    def _finish(self, conn) -> None:
        if self.ending == "hang":
            conn.wait(self.hang)
        if self.ending == "complete" and self.chunked:
            conn.write(b"0\r\n\r\n")
        else:
            conn.abort()


class HangAnswer(Answer):
    """Sends nothing for `seconds`, then closes -- or serves `then` if given."""

    def __init__(self, seconds: float, then: Answer | None = None):
        self.seconds = seconds
        self.then = then

    def serve(self, conn):
        if conn.wait(self.seconds) and self.then is not None:
            return self.then.serve(conn)
        conn.abort()


class DropAnswer(Answer):
    """Closes the connection without a response (FIN, or RST when `reset`)."""

    def __init__(self, reset: bool = False):
        self.reset = reset

    def serve(self, conn):
        conn.abort(reset=self.reset)


class RawAnswer(Answer):
    """Writes `data` verbatim onto the socket (status line included), then closes."""

    def __init__(self, data: bytes):
        self.data = data

    def serve(self, conn):
        conn.write(self.data)
        conn.abort()


ScriptItem = Union[Answer, Callable[[RecordedRequest], Answer]]


def json_answer(body, status: int = 200, headers: dict | None = None) -> BodyAnswer:
    """A JSON response (application/json, Content-Length)."""
    return BodyAnswer(json.dumps(body).encode(), status,
                      _merge({"Content-Type": "application/json"}, headers))


def body_answer(body: bytes | str, status: int = 200, content_type: str = "text/plain",
                headers: dict | None = None) -> BodyAnswer:
    """A non-JSON response, e.g. a proxy's HTML 502 page."""
    data = body.encode() if isinstance(body, str) else body
    return BodyAnswer(data, status, _merge({"Content-Type": content_type}, headers))


def error_answer(status: int, error_type: str, message: str,
                 headers: dict | None = None) -> BodyAnswer:
    """Anthropic's error JSON plus a `request-id` header; the id is on `.request_id`."""
    request_id = _new_id("req_upstream_")
    body = {"type": "error", "error": {"type": error_type, "message": message},
            "request_id": request_id}
    answer = json_answer(body, status, _merge({"request-id": request_id}, headers))
    answer.request_id = request_id
    return answer


def sse_answer(events: Iterable[Event], delay: float = 0.0, delays: list[float] | None = None,
               status: int = 200, headers: dict | None = None,
               chunked: bool = True) -> StreamAnswer:
    """text/event-stream, one `event: NAME\\ndata: JSON\\n\\n` frame per chunk.

    Sleeps `delay` (or `delays[i]`) before event i. A None name gives a data-only
    frame (OpenAI style); str data is sent verbatim. `chunked=False` sends a
    close-delimited body instead.
    """
    frames = [encode_event(name, data) for name, data in events]
    return StreamAnswer(frames, _delays(len(frames), delay, delays), status,
                        _merge(SSE_HEADERS, headers), chunked)


def raw_sse_answer(chunks: Iterable[bytes], delay: float = 0.0, delays: list[float] | None = None,
                   status: int = 200, headers: dict | None = None,
                   chunked: bool = True) -> StreamAnswer:
    """text/event-stream made of arbitrary raw chunks (malformed or split events)."""
    frames = list(chunks)
    return StreamAnswer(frames, _delays(len(frames), delay, delays), status,
                        _merge(SSE_HEADERS, headers), chunked)


def sse_then_drop(events: Iterable[Event], delay: float = 0.0,
                  headers: dict | None = None) -> StreamAnswer:
    """Sends the events, then closes without the terminating zero-length chunk."""
    answer = sse_answer(events, delay=delay, headers=headers)
    answer.ending = "drop"
    return answer


def sse_then_hang(events: Iterable[Event], seconds: float, delay: float = 0.0,
                  headers: dict | None = None) -> StreamAnswer:
    """Sends the events, then stalls `seconds` (a mid-stream read timeout), then closes."""
    answer = sse_answer(events, delay=delay, headers=headers)
    answer.ending, answer.hang = "hang", seconds
    return answer


def hang_answer(seconds: float, then: Answer | None = None) -> HangAnswer:
    """Accepts the request and sends nothing for `seconds` (a timeout before headers)."""
    return HangAnswer(seconds, then)


def drop_answer(reset: bool = False) -> DropAnswer:
    """Closes the socket without any response (RemoteDisconnected / reset for the client)."""
    return DropAnswer(reset)


def raw_answer(data: bytes) -> RawAnswer:
    """Raw bytes instead of a well-formed response, then close."""
    return RawAnswer(data)


SSE_HEADERS = {"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache"}


def encode_event(name: str | None, data: dict | str) -> bytes:
    """One SSE frame: optional `event:` line, `data:` line(s), blank line."""
    payload = data if isinstance(data, str) else json.dumps(data)
    lines = [f"event: {name}"] if name else []
    lines += [f"data: {line}" for line in payload.split("\n")]
    return ("\n".join(lines) + "\n\n").encode()


# --------------------------------------------------------------------------- Anthropic shapes


def anthropic_message(text: str = "Hello", model: str = DEFAULT_MODEL, usage: dict | None = None,
                      content: list | None = None, stop_reason: str = "end_turn") -> dict:
    """A non-streaming Messages API response body."""
    return {
        "id": _new_id("msg_01"),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content if content is not None else [{"type": "text", "text": text}],
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": {**MESSAGE_USAGE, **(usage or {})},
    }


def anthropic_stream_events(text_chunks: Iterable[str] = ("Hel", "lo"), model: str = DEFAULT_MODEL,
                            usage_start: dict | None = None, usage_delta: dict | None = None,
                            extra_events: Iterable[Event] | None = None,
                            stop_reason: str = "end_turn") -> list[Event]:
    """A streamed text reply; `extra_events` go after the content block, before message_delta."""
    return [
        message_start_event(model, usage_start),
        *_text_block(0, text_chunks, ping=True),
        *(extra_events or []),
        *message_end_events(stop_reason, usage_delta),
    ]


def tool_use_stream_events(name: str = "get_weather",
                           input_json_chunks: Iterable[str] = ('{"location":', ' "Paris"}'),
                           model: str = DEFAULT_MODEL, usage_start: dict | None = None,
                           usage_delta: dict | None = None, tool_id: str | None = None,
                           text_chunks: Iterable[str] | None = None) -> list[Event]:
    """A streamed tool_use reply (input_json_delta), optionally after a text block."""
    events = [message_start_event(model, usage_start)]
    if text_chunks is not None:
        events += _text_block(0, text_chunks, ping=True)
    index = 1 if text_chunks is not None else 0
    block = {"type": "tool_use", "id": tool_id or _new_id("toolu_01"), "name": name, "input": {}}
    deltas = [{"type": "input_json_delta", "partial_json": c} for c in input_json_chunks]
    events += _block(index, block, deltas, ping=text_chunks is None)
    return events + message_end_events("tool_use", usage_delta)


def message_start_event(model: str = DEFAULT_MODEL, usage: dict | None = None) -> Event:
    message = {"id": _new_id("msg_01"), "type": "message", "role": "assistant", "model": model,
               "content": [], "stop_reason": None, "stop_sequence": None,
               "usage": {**STREAM_USAGE_START, **(usage or {})}}
    return ("message_start", {"type": "message_start", "message": message})


def message_end_events(stop_reason: str = "end_turn", usage: dict | None = None) -> list[Event]:
    delta = {"type": "message_delta", "delta": {"stop_reason": stop_reason, "stop_sequence": None},
             "usage": {**STREAM_USAGE_DELTA, **(usage or {})}}
    return [("message_delta", delta), ("message_stop", {"type": "message_stop"})]


def error_event(error_type: str = "overloaded_error", message: str = "Overloaded") -> Event:
    """A mid-stream `event: error` frame."""
    return ("error", {"type": "error", "error": {"type": error_type, "message": message}})


def _text_block(index: int, chunks: Iterable[str], ping: bool) -> list[Event]:
    deltas = [{"type": "text_delta", "text": c} for c in chunks]
    return _block(index, {"type": "text", "text": ""}, deltas, ping)


def _block(index: int, block: dict, deltas: list[dict], ping: bool) -> list[Event]:
    events = [("content_block_start",
               {"type": "content_block_start", "index": index, "content_block": block})]
    if ping:
        events.append(("ping", {"type": "ping"}))
    events += [("content_block_delta", {"type": "content_block_delta", "index": index, "delta": d})
               for d in deltas]
    return events + [("content_block_stop", {"type": "content_block_stop", "index": index})]


# --------------------------------------------------------------------------- server


class _Handler(BaseHTTPRequestHandler):
    """Records each request, then lets the next scripted answer write the response."""

    protocol_version = "HTTP/1.1"
    timeout = IDLE_TIMEOUT

    def setup(self):
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format, *args):  # keep test output clean
        pass

    def _dispatch(self):
        headers = CaseInsensitiveDict(self.headers.items())
        request = RecordedRequest(self.command, self.path, headers, self._read_body())
        self.server.upstream._answer_for(request).serve(self)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _dispatch

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _read_chunked(self) -> bytes:
        parts = []
        while size := self._chunk_size():
            parts.append(self.rfile.read(size))
            self.rfile.readline(1024)
        while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):  # trailers
            pass
        return b"".join(parts)

    def _chunk_size(self) -> int:
        line = self.rfile.readline(1024)
        if not line:
            raise ConnectionResetError("client closed mid-body")
        return int(line.split(b";")[0].strip(), 16)

    # -- primitives used by answers ------------------------------------------------

    def start(self, status: int, headers: dict) -> bool:
        """Send the status line and headers; False if the client is gone."""
        self.send_response(status, REASONS.get(status))
        for name, value in headers.items():
            self.send_header(name, value)
        try:
            self.end_headers()
            return True
        except OSError:
            return self._lost()

    def write(self, data: bytes) -> bool:
        """Write and flush `data`; False if the client is gone."""
        try:
            self.wfile.write(data)
            return True
        except OSError:
            return self._lost()

    def wait(self, seconds: float) -> bool:
        """Sleep up to `seconds` while watching the socket; False if the client left or close()."""
        stopping = self.server.upstream._stopping
        deadline = time.monotonic() + seconds
        while not stopping.is_set():
            remaining = deadline - time.monotonic()
            step = min(max(remaining, 0.0), PROBE_INTERVAL)
            state = self._probe(step)
            if state == "gone":
                return self._lost()
            if state == "data":  # unexpected bytes from the client: don't spin on them
                stopping.wait(step)
            if remaining <= 0:
                return True
        return False

    def abort(self, reset: bool = False) -> None:
        """End the connection now: FIN, or RST when `reset`."""
        self.close_connection = True
        try:
            if reset:
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                           struct.pack("ii", 1, 0))
                self.connection.close()
            else:
                self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _probe(self, timeout: float) -> str:
        """'idle', 'gone' (EOF or error from the client) or 'data' (client sent bytes)."""
        try:
            if not readable([self.connection], timeout):
                return "idle"
            return "data" if self.connection.recv(1, socket.MSG_PEEK) else "gone"
        except (BlockingIOError, InterruptedError, TimeoutError):
            return "idle"
        except (OSError, ValueError):
            return "gone"

    def _lost(self) -> bool:
        self.close_connection = True
        self.server.upstream._client_left()
        return False


class _Server(ThreadingHTTPServer):
    """Tracks every connection thread and socket so close() can end them."""

    daemon_threads = True
    block_on_close = False
    request_queue_size = 1024  # a burst of hundreds of connections must queue, not be refused

    def __init__(self, upstream: "Upstream"):
        self.upstream = upstream
        super().__init__(("127.0.0.1", 0), _Handler)

    def server_bind(self):  # skip HTTPServer's reverse DNS lookup
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    def process_request(self, request, client_address):
        thread = threading.Thread(target=self.process_request_thread,
                                  args=(request, client_address), daemon=True)
        self.upstream._connection_opened(request, thread)
        thread.start()

    def shutdown_request(self, request):
        self.upstream._connection_closed(request)
        super().shutdown_request(request)

    def handle_error(self, request, client_address):
        error = sys.exc_info()[1]
        if not isinstance(error, (ConnectionError, TimeoutError)):
            self.upstream.errors.append(error)


class Upstream:
    """A scripted fake upstream on 127.0.0.1; see the module docstring.

    Answers are taken per request from, in order: the request path's queue, the
    path's default, the general FIFO queue, then `default` (a valid Anthropic
    message). A script item may also be a callable `f(RecordedRequest) -> Answer`.
    """

    def __init__(self, default: ScriptItem | None = None):
        self.default = default or json_answer(anthropic_message())
        self.requests: list[RecordedRequest] = []
        self.disconnects: list[float] = []
        self.client_gone = threading.Event()
        self.connections_accepted = 0
        self.errors: list[BaseException] = []  # unexpected exceptions in connection threads
        self._queue: deque = deque()
        self._path_queues: dict[str, deque] = {}
        self._path_defaults: dict[str, ScriptItem] = {}
        self._lock = threading.Condition()
        self._stopping = threading.Event()
        self._sockets: set = set()
        self._threads: list[threading.Thread] = []
        self._server: _Server | None = None
        self._accept_thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> "Upstream":
        if self._server is None:
            self._server = _Server(self)
            self._accept_thread = threading.Thread(
                target=self._server.serve_forever, kwargs={"poll_interval": PROBE_INTERVAL},
                name="fake-upstream", daemon=True)
            self._accept_thread.start()
        return self

    def close(self) -> None:
        """Stop accepting, wake every sleeping answer, end all connections (bounded)."""
        if self._server is None or self._stopping.is_set():
            return
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
        with self._lock:
            sockets, threads = list(self._sockets), list(self._threads)
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        deadline = time.monotonic() + CLOSE_GRACE
        for thread in [self._accept_thread, *threads]:
            thread.join(max(0.0, deadline - time.monotonic()))

    def __enter__(self) -> "Upstream":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("Upstream not started")
        return f"http://127.0.0.1:{self._server.server_port}"

    # -- scripting -------------------------------------------------------------------

    def script(self, *answers: ScriptItem, path: str | None = None) -> "Upstream":
        """Queue answers, one per request in order; `path` limits them to that path."""
        with self._lock:
            queue = self._queue if path is None else self._path_queues.setdefault(path, deque())
            queue.extend(answers)
        return self

    def set_default(self, answer: ScriptItem, path: str | None = None) -> None:
        """The answer used when the queues are empty (for every request, or for `path`)."""
        with self._lock:
            if path is None:
                self.default = answer
            else:
                self._path_defaults[path] = answer

    @property
    def pending(self) -> int:
        """Scripted answers not yet consumed."""
        with self._lock:
            return len(self._queue) + sum(len(q) for q in self._path_queues.values())

    # -- observing -------------------------------------------------------------------

    def wait_for_requests(self, count: int, timeout: float) -> bool:
        """Block until at least `count` requests arrived; False on timeout."""
        with self._lock:
            return self._lock.wait_for(lambda: len(self.requests) >= count, timeout)

    def wait_for_disconnect(self, timeout: float) -> bool:
        """Block until a client went away mid-answer; False on timeout."""
        return self.client_gone.wait(timeout)

    # -- called from connection threads ------------------------------------------------

    def _answer_for(self, request: RecordedRequest) -> Answer:
        with self._lock:
            self.requests.append(request)
            self._lock.notify_all()
            answer = self._pick(request.path)
        if not isinstance(answer, Answer):
            answer = answer(request)
        return answer

    def _pick(self, target: str) -> ScriptItem:
        keys = (target, target.split("?", 1)[0])
        for key in keys:
            if self._path_queues.get(key):
                return self._path_queues[key].popleft()
        for key in keys:
            if key in self._path_defaults:
                return self._path_defaults[key]
        return self._queue.popleft() if self._queue else self.default

    def _client_left(self) -> None:
        if self._stopping.is_set():  # our own close(), not the client
            return
        with self._lock:
            self.disconnects.append(time.monotonic())
        self.client_gone.set()

    def _connection_opened(self, sock, thread: threading.Thread) -> None:
        with self._lock:
            self.connections_accepted += 1
            self._sockets.add(sock)
            self._threads = [t for t in self._threads if t.is_alive()] + [thread]

    def _connection_closed(self, sock) -> None:
        with self._lock:
            self._sockets.discard(sock)


@pytest.fixture
def upstream():
    """A started Upstream, closed after the test."""
    with Upstream() as server:
        yield server


def _delays(count: int, delay: float, delays: list[float] | None) -> list[float]:
    delays = delays or []
    return [delays[i] if i < len(delays) else delay for i in range(count)]


def _merge(defaults: dict, extra: dict | None) -> dict:
    """Headers with `extra` overriding `defaults` case-insensitively; a None value removes one."""
    out = dict(defaults)
    for name, value in (extra or {}).items():
        for key in [k for k in out if k.lower() == name.lower()]:
            del out[key]
        if value is not None:
            out[name] = value
    return out


def _new_id(prefix: str) -> str:
    return prefix + uuid.uuid4().hex[:22]
