"""Slow clients (issue 18, slowloris): read deadlines give a worker's slots back.

One gevent worker with 4 connection slots and 2-second deadlines (OCTORELAY_THREADS,
OCTORELAY_HEADER_TIMEOUT_S, OCTORELAY_BODY_TIMEOUT_S): four slow clients fill every slot,
and a normal request on a fifth connection must still be answered, after the worker drops
the slow ones. Before the deadlines, headers could trickle for 75 s (gunicorn's keep-alive)
and a body forever. bench/slow_clients.py measures the same at the default 1,000 slots
(SECURITY.md).
"""
from __future__ import annotations

import json
import socket
import threading
import time

import pytest
import requests

from tests.support.bodies import messages_bytes
from tests.support.processes import serve_gunicorn

pytestmark = pytest.mark.slow

HOST = "127.0.0.1"
SLOTS = 4
DEADLINE_S = 2.0
BODY = messages_bytes("claude-x", 5)


@pytest.fixture(params=["gevent", "gthread"])
def server(env, procs, request):
    served = serve_gunicorn(procs, env, workers=1, threads=SLOTS, worker_class=request.param,
                            OCTORELAY_HEADER_TIMEOUT_S=str(DEADLINE_S), OCTORELAY_BODY_TIMEOUT_S=str(DEADLINE_S))
    port, admin = served.port, served.admin
    admin.create_channel(name="mock", type="mock", models=["claude-*"])
    return port, admin.create_key(name="k")["key"]


def headers_for(key: str, length: int) -> bytes:
    return (b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nx-api-key: " + key.encode()
            + b"\r\nanthropic-version: 2023-06-01\r\ncontent-type: application/json\r\n"
            + b"content-length: %d\r\n\r\n" % length)


class Trickle(threading.Thread):
    """One connection sending `first`, then `drip` one byte every `every` seconds until the
    server closes it (or 60 s); records what it got back and when it was closed."""

    def __init__(self, port: int, first: bytes, drip: bytes, every: float):
        super().__init__(daemon=True)
        self.sock = socket.create_connection((HOST, port), timeout=5)
        self.first, self.drip, self.every = first, drip, every
        self.got = b""
        self.opened_at = time.monotonic()
        self.closed_at: float | None = None
        self.start()

    def run(self) -> None:
        if self.first:
            self.sock.sendall(self.first)
        self.sock.settimeout(self.every)
        ends = time.monotonic() + 60
        for i in range(10_000):
            if time.monotonic() > ends:
                return
            try:
                chunk = self.sock.recv(65536)
                if not chunk:
                    break
                self.got += chunk
                continue
            except socket.timeout:
                pass
            except OSError:
                break
            try:
                if self.drip:
                    self.sock.sendall(self.drip[i % len(self.drip):i % len(self.drip) + 1])
            except OSError:
                break
        self.closed_at = time.monotonic()
        self.sock.close()


def normal_request(port: int, key: str) -> int:
    """A request on a fifth connection: the worker can take it only once a slow one is gone."""
    resp = requests.post(f"http://{HOST}:{port}/v1/messages", data=BODY, timeout=30,
                         headers={"x-api-key": key, "anthropic-version": "2023-06-01",
                                  "content-type": "application/json", "Connection": "close"})
    return resp.status_code


def dropped_by_deadline(conn: Trickle) -> bool:
    """Closed by the server within a few deadlines (gunicorn alone waited 75 s, or forever)."""
    conn.join(timeout=30)
    return conn.closed_at is not None and conn.closed_at - conn.opened_at < 5 * DEADLINE_S


def fill_slots(port: int, first: bytes, drip: bytes) -> list[Trickle]:
    slow = [Trickle(port, first, drip, every=0.5) for _ in range(SLOTS)]
    time.sleep(0.5)  # the worker takes them in
    return slow


def test_idle_connections_are_dropped_so_a_normal_request_is_served(server, request):
    port, key = server
    slow = fill_slots(port, b"", b"")
    status = normal_request(port, key)
    assert status == 200
    if "gthread" in request.node.name:
        return  # gthread parks a silent connection in its poller after 5 s: it holds no thread
    for conn in slow:
        assert dropped_by_deadline(conn) and conn.got == b""


def test_headers_sent_a_byte_at_a_time_are_dropped_so_a_normal_request_is_served(server):
    port, key = server
    slow = fill_slots(port, b"POST /v1/messages HTTP/1.1\r\nHost: x\r\n", b"X-Slow: aaaaaaaa")
    status = normal_request(port, key)
    assert status == 200
    for conn in slow:
        assert dropped_by_deadline(conn) and conn.got == b""


def test_a_body_sent_a_byte_at_a_time_gets_408_and_a_normal_request_is_served(server):
    port, key = server
    slow = fill_slots(port, headers_for(key, len(BODY)) + BODY[:1], BODY[1:])
    status = normal_request(port, key)
    assert status == 200
    for conn in slow:
        assert dropped_by_deadline(conn)
        head, _, body = conn.got.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 408"), conn.got[:200]
        error = json.loads(body)
        assert error["type"] == "error" and error["error"]["type"] == "invalid_request_error"
        assert "too slow" in error["error"]["message"] or "slower than" in error["error"]["message"]


def test_a_body_arriving_steadily_is_not_cut_however_long_it_takes(server):
    """8 KB/s keeps a body alive: 48 KB at 16 KB/s takes 3 s, past the 2 s deadline."""
    port, key = server
    pad = " " * (48 * 1024 - len(BODY))
    body = BODY[:-1] + b', "metadata": {"user_id": "' + pad.encode()[:-20] + b'"}}'
    sock = socket.create_connection((HOST, port), timeout=10)
    started = time.monotonic()
    sock.sendall(headers_for(key, len(body)))
    for i in range(0, len(body), 4096):
        sock.sendall(body[i:i + 4096])
        time.sleep(0.25)
    got = b""
    while b"\r\n\r\n" not in got:
        chunk = sock.recv(65536)
        if not chunk:
            break
        got += chunk
    sock.close()
    assert time.monotonic() - started > DEADLINE_S
    assert got.startswith(b"HTTP/1.1 200"), got[:300]


def read_response(sock: socket.socket) -> bytes:
    """One response with a Content-Length, read whole from `sock`."""
    got = b""
    while b"\r\n\r\n" not in got:
        chunk = sock.recv(65536)
        assert chunk, f"closed after {got[:200]!r}"
        got += chunk
    head, _, body = got.partition(b"\r\n\r\n")
    length = int(next(line.split(b":", 1)[1] for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length:")))
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk
        body += chunk
    return head


def test_a_keep_alive_connection_may_idle_past_the_header_deadline(server):
    """Between requests the wait is gunicorn's keep-alive (75 s), not the header deadline."""
    port, key = server
    sock = socket.create_connection((HOST, port), timeout=10)
    sock.sendall(headers_for(key, len(BODY)) + BODY)
    assert read_response(sock).startswith(b"HTTP/1.1 200")
    time.sleep(DEADLINE_S + 1)
    sock.sendall(headers_for(key, len(BODY)) + BODY)  # the same connection, idle past the deadline
    assert read_response(sock).startswith(b"HTTP/1.1 200")
    sock.close()
