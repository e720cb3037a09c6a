"""Faults (issue 7, item 3): bad upstream bytes, a database or Redis that goes away, gunicorn
signals. Each fault is its own test; what other modules already cover (upstream refuses,
hangs before headers, drops or stalls mid-stream: test_relay_stream, test_relay_messages,
test_relay_gunicorn) is not repeated here.

Process-level tests are marked slow, bind only 127.0.0.1, bound every wait and stop what they
start (the `procs` fixture kills each process group at teardown).
"""
from __future__ import annotations

import json
import os
import select
import signal
import socket
import struct
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
import requests

from app import create_app
from app.db import db, upgrade
from app.models import ApiKey, RequestLog
from tests.support.admin import AdminClient
from tests.support.app import anthropic_channel, assert_error
from tests.support.bodies import messages_body
from tests.support.constants import PG_URL, UPSTREAM_KEY
from tests.support.database import query
from tests.support.net import free_port, url
from tests.support.processes import base_env, migrate, serve_gunicorn, worker_pids
from tests.support.upstream import (anthropic_message, anthropic_stream_events, body_answer, encode_event,
                                    json_answer, message_start_event, raw_answer, raw_sse_answer, sse_answer)
from tests.support.waiting import wait_until

BODY = messages_body(content="Hello")
STREAM_BODY = {**BODY, "stream": True}
SONNET_NANOS = (3000, 15000, 3750, 300)  # claude-sonnet-4-6 list price, nano-dollars a token: in, out, cache w/r


# --------------------------------------------------------------------------- helpers


def post(client, key: dict, body: dict = BODY):
    return client.post("/v1/messages", data=json.dumps(body),
                       headers={"x-api-key": key["key"], "content-type": "application/json"})


def rows_for(request_id: str) -> list[RequestLog]:
    return list(RequestLog.select().where(RequestLog.request_id == request_id))


def one_row(request_id: str, timeout: float = 5.0) -> RequestLog:
    found = wait_until(lambda: rows_for(request_id), timeout)
    assert found, f"no log row for {request_id}"
    assert len(found) == 1, found
    return found[0]


def sonnet_cost(input_tokens=0, output_tokens=0, cache_write=0, cache_read=0) -> int:
    return (input_tokens * SONNET_NANOS[0] + output_tokens * SONNET_NANOS[1]
            + cache_write * SONNET_NANOS[2] + cache_read * SONNET_NANOS[3])


class TcpProxy:
    """127.0.0.1:<port> piped to `target`. `fail()` resets every open connection and resets each
    new one at once (the peer sees the server vanish); `hang()` resets the open ones and holds
    each new one without a word (a server that never answers); `restore()` pipes again."""

    def __init__(self, target: tuple[str, int]):
        self.target = target
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(128)
        self._listener.settimeout(0.1)
        self.port = self._listener.getsockname()[1]
        self.mode = "open"
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._pairs: set[tuple[socket.socket, socket.socket]] = set()
        self._held: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self.refused = 0
        self._accepter = threading.Thread(target=self._accept_loop, name="db-proxy", daemon=True)
        self._accepter.start()

    def fail(self) -> None:
        self._cut("refuse")

    def hang(self) -> None:
        self._cut("hang")

    def restore(self) -> None:
        self.mode = "open"

    def close(self) -> None:
        self._stop.set()
        self.fail()
        self._accepter.join(2)
        self._listener.close()
        deadline = time.monotonic() + 2
        for thread in list(self._threads):
            thread.join(max(0.0, deadline - time.monotonic()))

    def _cut(self, mode: str) -> None:
        self.mode = mode
        with self._lock:
            pairs, held = list(self._pairs), self._held
            self._held = []
        for pair in pairs:
            for sock in pair:
                _shutdown(sock)
        for sock in held:
            _reset(sock)

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            if self.mode == "hang":
                with self._lock:
                    self._held.append(conn)
                continue
            if self.mode != "open":
                self.refused += 1
                _reset(conn)
                continue
            try:
                backend = socket.create_connection(self.target, timeout=2)
            except OSError:
                _reset(conn)
                continue
            pair = (conn, backend)
            with self._lock:
                self._pairs.add(pair)
            thread = threading.Thread(target=self._pipe, args=(pair,), daemon=True)
            self._threads = [t for t in self._threads if t.is_alive()] + [thread]
            thread.start()

    def _pipe(self, pair) -> None:
        a, b = pair
        for sock in pair:
            sock.settimeout(5)
        try:
            while not self._stop.is_set() and self.mode == "open":
                readable, _, _ = select.select([a, b], [], [], 0.1)
                for sock in readable:
                    data = sock.recv(65536)
                    if not data:
                        return
                    (b if sock is a else a).sendall(data)
        except (OSError, ValueError):
            pass
        finally:
            with self._lock:
                self._pairs.discard(pair)
            for sock in pair:
                _reset(sock)


def _shutdown(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def _reset(sock: socket.socket) -> None:
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    sock.close()


def proxied_url(database_url: str, port: int) -> str:
    parts = urlsplit(database_url)
    userinfo = parts.netloc.rsplit("@", 1)[0] + "@" if "@" in parts.netloc else ""
    return urlunsplit((parts.scheme, f"{userinfo}127.0.0.1:{port}", parts.path, parts.query, parts.fragment))


def pg_target(database_url: str) -> tuple[str, int]:
    parts = urlsplit(database_url)
    return parts.hostname or "127.0.0.1", parts.port or 5432


def socket_owner(server_port: int, client_port: int, pids: list[int]) -> int | None:
    """Which of `pids` holds the accepted socket 127.0.0.1:server_port <- 127.0.0.1:client_port."""
    inode = None
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            local, remote, state, node = fields[1], fields[2], fields[3], fields[9]
            if (state == "01" and node != "0"  # ESTABLISHED, not an old TIME_WAIT with the same ports
                    and int(local.split(":")[1], 16) == server_port
                    and int(remote.split(":")[1], 16) == client_port):
                inode = node
    if inode is None:
        return None
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") == f"socket:[{inode}]":
                    return pid
            except OSError:
                continue
    return None


def start_gunicorn(procs, env: dict, *, workers: int, name: str = "gunicorn", **extra):
    """gunicorn -c gunicorn.conf.py bound to 127.0.0.1 only; returns (proc, port)."""
    served = serve_gunicorn(procs, env, workers=workers, threads=32, bind_loopback=True, upgrade=False,
                            name=name, **extra)
    return served.proc, served.port


def fresh_post(port: int, key: str, body: dict = BODY, timeout: float = 10.0) -> requests.Response:
    """One request on its own connection, so that every worker gets its share."""
    with requests.Session() as session:
        return session.post(url(port, "/v1/messages"), json=body, timeout=timeout,
                            headers={"x-api-key": key, "Connection": "close"})


def fresh_get(port: int, path: str, timeout: float = 10.0, **headers) -> requests.Response:
    with requests.Session() as session:
        return session.get(url(port, path), timeout=timeout, headers={"Connection": "close", **headers})


def is_error(resp: requests.Response, status: int, error_type: str) -> bool:
    if resp.status_code != status:
        return False
    body = resp.json()
    return (body["type"] == "error" and body["error"]["type"] == error_type
            and body["request_id"] == resp.headers.get("request-id"))


class RawStream:
    """A streamed POST /v1/messages on a raw socket, read until the first event arrived."""

    def __init__(self, port: int, key: str, timeout: float = 10.0):
        body = json.dumps(STREAM_BODY).encode()
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.client_port = self.sock.getsockname()[1]
        self.sock.sendall(b"POST /v1/messages HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\n"
                          + f"x-api-key: {key}\r\ncontent-length: {len(body)}\r\n\r\n".encode() + body)
        self.received = b""
        deadline = time.monotonic() + timeout
        try:
            while b"\r\n\r\n" not in self.received:
                self._read(deadline)
            self.status = int(self.received.split(b" ", 2)[1])
            while self.status == 200 and b"event: message_start" not in self.received:
                self._read(deadline)
        except BaseException:
            self.sock.close()
            raise

    def _read(self, deadline: float) -> None:
        assert time.monotonic() < deadline, self.received
        data = self.sock.recv(65536)
        assert data, f"connection closed: {self.received!r}"
        self.received += data

    def close(self) -> None:
        self.sock.close()


# --------------------------------------------------------------------------- 1. malformed upstream answers


MALFORMED_STREAMS = {
    # a valid message_start, then garbage of every kind, then text, then a broken message_delta
    "bad-delta": [
        encode_event(*message_start_event(usage={"input_tokens": 40, "cache_read_input_tokens": 300})),
        b"this line has no colon and no event\n\n",
        b": a comment line\n\n",
        b"event: ping\n\n",  # an event with no data
        b"\x00\xff\xfe\x80\x81binary junk\xc3\x28\n\n",
        b"data: {\"type\": \"content_block_start\", \"index\": 0\n\n",  # truncated JSON, no event line
        encode_event("content_block_delta", {"type": "content_block_delta", "index": 0,
                                             "delta": {"type": "text_delta", "text": "x" * 40}}),
        b"event: message_delta\ndata: {\"type\": \"message_delta\", \"usage\": {\"output_tokens\": 9\n\n",
        b"event: message_delta\ndata: [1, 2, 3]\n\n",
        b"event: content_block_delta\ndata: \"just a string\"\n\n",
        encode_event("message_stop", {"type": "message_stop"}),
    ],
    # nothing readable at all: message_start itself is not JSON
    "bad-start": [
        b"event: message_start\ndata: {\"type\": \"message_start\", \"message\": {\"usage\": \n\n",
        b"event: message_delta\ndata: not json at all\n\n",
        b"\xff\xd8\xff\xe0 binary\r\n\r\n",
        b"event:\ndata:\n\n",
        b"retry: 10\nid: 7\n\n",
    ],
}
EXPECTED_USAGE = {  # (input, output, cache_write, cache_read) the relay can read from each
    "bad-delta": (40, 10, 0, 300),  # output: estimated from the 40 text characters (≈4 a token)
    "bad-start": (0, 0, 0, 0),
}


@pytest.mark.parametrize("case", list(MALFORMED_STREAMS))
def test_malformed_sse_passes_through_and_is_logged(client, admin, upstream, key, case):
    anthropic_channel(admin, upstream)
    chunks = MALFORMED_STREAMS[case]
    upstream.script(raw_sse_answer(chunks))
    resp = post(client, key, STREAM_BODY)
    assert resp.status_code == 200
    assert resp.get_data() == b"".join(chunks)  # byte for byte, garbage included
    row = one_row(resp.headers["request-id"])
    usage = (row.input_tokens, row.output_tokens, row.cache_creation_input_tokens, row.cache_read_input_tokens)
    assert usage == EXPECTED_USAGE[case]
    assert row.status == 200 and row.stream is True and row.error_type is None
    assert row.cost_nanos == sonnet_cost(*usage)
    shown = admin.get(f"/admin/keys/{key['id']}").get_json()
    assert shown["used_tokens"] == sum(usage)

    upstream.script(json_answer(anthropic_message("still fine")))
    after = post(client, key)  # the relay is unharmed
    assert after.status_code == 200 and after.get_json()["content"][0]["text"] == "still fine"


def test_malformed_sse_through_a_real_server(live, admin, upstream, key):
    """The same garbage on a real socket: the client reads every byte and a clean end of stream."""
    anthropic_channel(admin, upstream)
    chunks = MALFORMED_STREAMS["bad-delta"]
    upstream.script(raw_sse_answer(chunks, delay=0.02))
    with requests.post(f"{live}/v1/messages", json=STREAM_BODY, headers={"x-api-key": key["key"]},
                       stream=True, timeout=10) as resp:
        assert resp.status_code == 200
        data = b"".join(resp.iter_content(chunk_size=None))
    assert data == b"".join(chunks)
    assert one_row(resp.headers["request-id"]).input_tokens == 40


def test_invalid_json_with_200_passes_through_with_a_zero_usage_row(client, admin, upstream, key):
    anthropic_channel(admin, upstream)
    junk = b'{"id": "msg_01", "type": "message", "usage": {"input_tokens": 12'  # cut short
    upstream.script(body_answer(junk, content_type="application/json"))
    resp = post(client, key)
    assert resp.status_code == 200
    assert resp.get_data() == junk
    row = one_row(resp.headers["request-id"])
    assert row.status == 200 and row.stream is False
    assert (row.input_tokens, row.output_tokens, row.cost_nanos) == (0, 0, 0)
    assert ApiKey.get_by_id(key["id"]).used_tokens == 0


def test_invalid_json_from_an_openai_channel_is_a_502(client, admin, upstream, key):
    admin.create_channel(name="oai", type="openai", base_url=upstream.url + "/v1", api_key="sk-oai-test",
                         models=["claude-*"])
    upstream.script(body_answer(b"<html>not json</html>", content_type="application/json"))
    resp = post(client, key)
    body = assert_error(resp, 502, "api_error", contains="not JSON")
    assert upstream.requests[0].path == "/v1/chat/completions"
    row = one_row(body["request_id"])
    assert row.status == 502 and row.error_type == "api_error" and row.attempts == 1
    assert (row.input_tokens, row.output_tokens) == (0, 0)


# --------------------------------------------------------------------------- 2. closed mid-body, not streaming


def test_upstream_closing_mid_body_is_a_502_without_failover(client, admin, upstream, key):
    """The head said 200 and 500 bytes; 40 came, then the connection closed.

    Documented behaviour (docs/api.md, Failover and cooldown; README): failover happens on a connect error, a timeout
    before the response head, or a retryable status -- this answer had a 200 head, so the
    client gets 502 api_error from the first channel and the second is never tried.
    """
    first = anthropic_channel(admin, upstream, name="first", priority=1)
    anthropic_channel(admin, upstream, name="second")
    partial = json.dumps(anthropic_message("a long answer " * 20)).encode()[:40]
    upstream.script(raw_answer(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                               b"Content-Length: 500\r\n\r\n" + partial),
                    json_answer(anthropic_message("the next answer")))
    started = time.monotonic()
    resp = post(client, key)
    assert time.monotonic() - started < 5
    body = assert_error(resp, 502, "api_error", contains="broke")
    assert partial not in resp.get_data()  # none of the half answer leaks to the client
    assert len(upstream.requests) == 1  # no failover
    row = one_row(body["request_id"])
    assert row.status == 502 and row.error_type == "api_error" and row.attempts == 1
    assert row.channel_id == first["id"] and row.output_tokens == 0

    resp = post(client, key)  # the next request is served normally
    assert resp.status_code == 200
    assert resp.get_json()["content"][0]["text"] == "the next answer"


# --------------------------------------------------------------------------- 3. database away for a moment

needs_pg = pytest.mark.skipif(not PG_URL, reason="a database outage is only meaningful on PostgreSQL: "
                                                 "set OCTORELAY_TEST_DATABASE_URL")


@pytest.fixture
def db_proxy():
    proxy = TcpProxy(pg_target(PG_URL))
    yield proxy
    proxy.close()


@pytest.fixture
def proxied(env, db_proxy, upstream):
    """An in-process app whose database connections all go through `db_proxy`."""
    app = create_app({**env, "DATABASE_URL": proxied_url(env["DATABASE_URL"], db_proxy.port)})
    upgrade(db.obj)
    client = app.test_client()
    from tests.support.admin import AdminClient

    admin = AdminClient(client)
    anthropic_channel(admin, upstream)
    yield app, client, admin, admin.create_key(name="outage")
    app.extensions["octorelay.relay"].ledger.close()
    db.obj.close_all()


CACHE_TTL = 1.0  # OCTORELAY_KEY_CACHE_TTL default: key and channel lookups may be this old


@needs_pg
def test_database_outage_gives_503_and_recovers_in_process(proxied, db_proxy, upstream):
    app, client, admin, key = proxied
    assert post(client, key).status_code == 200

    db_proxy.fail()
    time.sleep(CACHE_TTL + 0.2)  # past the per-process key and channel caches
    for _ in range(3):
        started = time.monotonic()
        assert_error(post(client, key), 503, "overloaded_error")
        assert_error(admin.get("/admin/keys"), 503, "overloaded_error")
        assert_error(admin.post("/admin/keys", json={"name": "during"}), 503, "overloaded_error")
        assert time.monotonic() - started < 5
    assert client.get("/healthz").status_code == 200
    ready = client.get("/readyz")
    assert ready.status_code == 503 and ready.get_json()["checks"]["database"].startswith("error")
    assert db_proxy.refused > 0  # the app did try, and was turned away
    assert len(upstream.requests) == 1  # nothing was relayed while the key could not be checked

    db_proxy.restore()
    statuses = [post(client, key).status_code for _ in range(5)]
    assert statuses == [200] * 5, statuses
    assert admin.get("/admin/keys").status_code == 200
    assert client.get("/readyz").status_code == 200


HANG_LIMIT = 8.0  # "no hang beyond a few seconds" (with some room for a loaded machine)


@needs_pg
def test_unresponsive_database_gives_503_within_seconds(proxied, db_proxy):
    """A database host that takes the connection but never answers (a stuck server, a dead host
    behind a load balancer): requests must still end with 503 overloaded_error in seconds."""
    app, client, admin, key = proxied
    assert post(client, key).status_code == 200
    db_proxy.hang()
    time.sleep(CACHE_TTL + 0.2)  # past the key and channel caches: the key must be looked up
    answers: list = []
    thread = threading.Thread(target=lambda: answers.append(post(client, key)), daemon=True)
    thread.start()
    try:
        thread.join(HANG_LIMIT)
        assert not thread.is_alive(), f"still waiting for the database after {HANG_LIMIT} s"
        assert_error(answers[0], 503, "overloaded_error")
    finally:
        db_proxy.fail()  # let a stuck request go before teardown
        thread.join(5)


SETTLEMENT_CASES = {
    "stream": "a stream that started before the outage ends during it",
    "non-stream": "admitted from the warm key and channel caches just after the database went",
    "stream-price-reload": "as `stream`, and the price cache must be reloaded at settlement",
}


@needs_pg
@pytest.mark.parametrize("case", list(SETTLEMENT_CASES))
def test_settlement_during_an_outage_keeps_its_row(proxied, db_proxy, upstream, case):
    """docs/api.md, Accounting: every routed request writes one log row and charges the key, however it ends.
    Here a request was admitted and served, and its settlement falls in the outage: the client
    still gets a clean answer, its concurrency slot is given back, and once the database is back
    (and the next request settles) its row and charge are there -- exactly once."""
    app, client, admin, key = proxied
    admin.patch(f"/admin/keys/{key['id']}", json={"max_concurrency": 1})
    assert post(client, key).status_code == 200  # warms the key, channel and price caches (25 + 15)
    if case == "stream-price-reload":
        relay = app.extensions["octorelay.relay"]
        getattr(relay, "ledger", relay).prices.ttl = 0  # as if the 5 s price cache ran out meanwhile
    usage = {"input_tokens": 50, "output_tokens": 1}
    if case == "non-stream":
        upstream.script(json_answer(anthropic_message(usage={"input_tokens": 50, "output_tokens": 20})))
        db_proxy.fail()
        resp = post(client, key)
        assert resp.status_code == 200 and resp.get_json()["usage"]["output_tokens"] == 20
    else:
        upstream.script(sse_answer(anthropic_stream_events(["a"] * 6, usage_start=usage,
                                                           usage_delta={"output_tokens": 20}), delay=0.1))
        resp = post(client, key, STREAM_BODY)  # returns once the first event is in
        db_proxy.fail()  # the rest of the stream, and its settlement, fall in the outage
        data = resp.get_data()  # raises if the settlement's failure escapes into the stream
        assert data.rstrip().endswith(b'data: {"type": "message_stop"}'), data[-200:]
    time.sleep(0.3)
    db_proxy.restore()

    # the next request: admitted (the slot came back), and its settlement finds the database again
    assert post(client, key).status_code == 200  # 25 + 15
    assert app.extensions["octorelay.relay"].ledger.flush(10)  # this client does not wait for settlements
    request_id = resp.headers["request-id"]
    row = one_row(request_id, timeout=3)
    assert (row.input_tokens, row.output_tokens, row.status) == (50, 20, 200)
    assert row.cost_nanos == sonnet_cost(50, 20)
    shown = ApiKey.get_by_id(key["id"])
    assert shown.used_tokens == 40 + 70 + 40
    assert shown.used_nanos == sum(r.cost_nanos for r in RequestLog.select())
    assert RequestLog.select().count() == 3


@pytest.mark.slow
@needs_pg
def test_database_outage_under_gunicorn_keeps_the_worker(env, procs, db_proxy, upstream):
    """503s while the database is away, the same worker before and after, and a stream that
    settled during the outage has its row and charge once the database is back."""
    migrate(env)
    gunicorn_env = {**env, "DATABASE_URL": proxied_url(env["DATABASE_URL"], db_proxy.port)}
    server, port = start_gunicorn(procs, gunicorn_env, workers=1)
    admin = AdminClient(port)
    admin.create_channel(name="up", type="anthropic", base_url=upstream.url, api_key=UPSTREAM_KEY,
                         models=["claude-*"])
    key = admin.create_key(name="outage")
    # several requests at once, so the worker's pool holds several connections when the DB goes
    with ThreadPoolExecutor(6) as pool:
        assert list(pool.map(lambda _: fresh_post(port, key["key"]).status_code, range(12))) == [200] * 12
    workers = worker_pids(server.popen.pid)
    assert len(workers) == 1

    # a stream that starts now and ends (settles) in the middle of the outage
    upstream.script(sse_answer(anthropic_stream_events(["a"] * 6, usage_start={"input_tokens": 50,
                               "output_tokens": 1}, usage_delta={"output_tokens": 20}), delay=0.15))
    streamed: list = []

    def read_stream():
        with requests.post(url(port, "/v1/messages"), json=STREAM_BODY, stream=True, timeout=15,
                           headers={"x-api-key": key["key"], "Connection": "close"}) as resp:
            streamed.append((resp.headers.get("request-id"), resp.content))

    reader = threading.Thread(target=read_stream, daemon=True)
    reader.start()
    assert upstream.wait_for_requests(13, 5)

    db_proxy.fail()
    time.sleep(CACHE_TTL + 0.2)
    for _ in range(3):
        started = time.monotonic()
        assert is_error(fresh_post(port, key["key"]), 503, "overloaded_error")
        assert is_error(admin("GET", "/admin/keys"), 503, "overloaded_error")
        assert time.monotonic() - started < 5
    assert fresh_get(port, "/healthz").status_code == 200
    ready = fresh_get(port, "/readyz")
    assert ready.status_code == 503 and ready.json()["checks"]["database"].startswith("error")
    reader.join(10)
    assert streamed and streamed[0][1].rstrip().endswith(b'{"type": "message_stop"}'), streamed

    db_proxy.restore()
    statuses = [fresh_post(port, key["key"]).status_code for _ in range(10)]
    assert statuses == [200] * 10, statuses
    assert admin("GET", "/admin/keys").status_code == 200
    assert fresh_get(port, "/readyz").status_code == 200
    assert worker_pids(server.popen.pid) == workers  # the same worker served throughout
    assert server.popen.poll() is None

    def logs_now():
        return admin("GET", f"/admin/logs?key_id={key['id']}&limit=100").json()["data"]

    wait_until(lambda: len(logs_now()) >= 23, timeout=5)  # rows are written just after each answer
    logs = logs_now()
    assert len(logs) == 12 + 1 + 10  # the 503s never reached routing: no rows, no charge
    stream_rows = [row for row in logs if row["request_id"] == streamed[0][0]]
    assert len(stream_rows) == 1, "the stream settled during the outage has no log row"
    assert (stream_rows[0]["input_tokens"], stream_rows[0]["output_tokens"]) == (50, 20)
    shown = admin("GET", f"/admin/keys/{key['id']}").json()
    assert shown["used_tokens"] == 22 * 40 + 70
    assert server.stop() == 0, server.stderr


# --------------------------------------------------------------------------- 4. Redis away at run time


def start_redis(procs, port: int, tmp_path: Path, name: str):
    import shutil

    import redis

    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("needs redis-server")
    proc = procs([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                  "--dir", str(tmp_path)], cwd=tmp_path, env=base_env(), name=name)
    url_ = f"redis://127.0.0.1:{port}/0"

    def up():
        try:
            return redis.Redis.from_url(url_, socket_timeout=0.5).ping()
        except redis.RedisError:
            return False

    assert wait_until(up, 10), "private redis-server did not start"
    return proc, url_


@pytest.mark.slow
def test_redis_outage_fails_closed_or_open_as_configured(env, procs, upstream, tmp_path):
    """A private redis-server is killed and restarted on the same port under two gunicorns that
    share it: one default (fail closed), one with OCTORELAY_LIMITS_FAIL_OPEN=1."""
    redis_port = free_port()
    redis_proc, redis_url = start_redis(procs, redis_port, tmp_path, "redis1")
    shared = {**env, "REDIS_URL": redis_url}
    migrate(shared)
    closed_server, closed = start_gunicorn(procs, shared, workers=2, name="fail-closed")
    open_server, opened = start_gunicorn(procs, shared, workers=1, name="fail-open",
                                         OCTORELAY_LIMITS_FAIL_OPEN="1")
    admin = AdminClient(closed)
    admin.create_channel(name="up", type="anthropic", base_url=upstream.url, api_key=UPSTREAM_KEY,
                         models=["claude-*"])
    limited = admin.create_key(name="limited", rpm=3)["key"]
    free = admin.create_key(name="free")["key"]
    assert fresh_post(closed, limited).status_code == 200
    assert fresh_post(closed, free).status_code == 200

    redis_proc.kill()
    for _ in range(4):  # fresh connections: both workers
        started = time.monotonic()
        assert is_error(fresh_post(closed, limited), 503, "overloaded_error")
        assert time.monotonic() - started < 5
        assert fresh_post(closed, free).status_code == 200
    for server_port in (closed, opened):
        assert fresh_get(server_port, "/healthz").status_code == 200
        ready = fresh_get(server_port, "/readyz")
        assert ready.status_code == 503 and ready.json()["checks"]["redis"].startswith("error"), ready.text
    # failing open: the rpm key is admitted (the limit cannot be counted), with the error metric
    assert [fresh_post(opened, limited).status_code for _ in range(5)] == [200] * 5
    metrics = fresh_get(opened, "/metrics").text
    errors = sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
                 if line.startswith("octorelay_limit_store_errors_total{"))
    assert errors >= 5

    start_redis(procs, redis_port, tmp_path, "redis2")  # same port, empty state
    assert wait_until(lambda: fresh_post(closed, limited).status_code == 200, 10), "limits did not come back"
    statuses = [fresh_post(closed, limited).status_code for _ in range(3)]
    assert statuses == [200, 200, 429], statuses  # rpm=3 counts again, shared by both workers
    for server_port in (closed, opened):
        assert fresh_get(server_port, "/readyz").status_code == 200
    assert is_error(fresh_post(opened, limited), 429, "rate_limit_error")  # fail-open enforces again too
    assert closed_server.stop() == 0 and open_server.stop() == 0


# --------------------------------------------------------------------------- 5. SIGTERM with 20 open streams

STREAMS = 20
STREAM_START = {"input_tokens": 100, "cache_creation_input_tokens": 3, "cache_read_input_tokens": 10,
                "output_tokens": 1}
STREAM_TOKENS = 100 + 3 + 10 + 20


def graceful_timeout() -> float:
    """gunicorn's graceful_timeout is OCTORELAY_SHUTDOWN_GRACE_S (unset here: its default)."""
    from app.config import load_settings

    return float(load_settings({}, read_dotenv=False).shutdown_grace_s)


@pytest.mark.slow
def test_sigterm_lets_open_streams_finish_and_settle(env, procs, upstream, redis_url):
    grace = graceful_timeout()
    shared = {**env, "REDIS_URL": redis_url}
    migrate(shared)
    server, port = start_gunicorn(procs, shared, workers=2)
    admin = AdminClient(port)
    admin.create_channel(name="up", type="anthropic", base_url=upstream.url, api_key=UPSTREAM_KEY,
                         models=["claude-*"])
    key = admin.create_key(name="draining")
    # 21 events 0.2 s apart: about 4 s per stream
    upstream.set_default(lambda _: sse_answer(anthropic_stream_events(
        ["word "] * 15, usage_start=STREAM_START, usage_delta={"output_tokens": 20}), delay=0.2))

    first_event = threading.Barrier(STREAMS + 1, timeout=15)
    results: list = [None] * STREAMS

    def stream(i):
        try:
            with requests.post(url(port, "/v1/messages"), json=STREAM_BODY, stream=True, timeout=30,
                               headers={"x-api-key": key["key"], "Connection": "close"}) as resp:
                chunks = resp.iter_content(chunk_size=None)
                data = next(chunks)
                first_event.wait()
                for chunk in chunks:
                    data += chunk
                results[i] = (resp.status_code, resp.headers.get("request-id"), data)
        except Exception as exc:  # recorded, asserted below
            results[i] = exc
            first_event.abort()

    threads = [threading.Thread(target=stream, args=(i,), daemon=True) for i in range(STREAMS)]
    for thread in threads:
        thread.start()
    try:
        first_event.wait()  # every stream has its first event
    except threading.BrokenBarrierError:
        pytest.fail(f"not every stream got its first event: {results}")
    assert upstream.wait_for_requests(STREAMS, 1)
    server.popen.send_signal(signal.SIGTERM)
    signalled = time.monotonic()
    for thread in threads:
        thread.join(30)
    code = server.popen.wait(timeout=min(grace, 30))
    exited_after = time.monotonic() - signalled
    assert code == 0, server.stderr
    assert exited_after < grace

    for result in results:
        assert not isinstance(result, BaseException) and result is not None, result
        status, _, data = result
        assert status == 200
        assert b"event: message_stop" in data and b"event: error" not in data, data[-300:]
    request_ids = sorted(r[1] for r in results)

    database_url = env["DATABASE_URL"]
    rows = query(database_url, "SELECT request_id, status, input_tokens + output_tokens + "
                 "cache_creation_input_tokens + cache_read_input_tokens, cost_nanos, client_disconnected "
                 "FROM request_log WHERE key_id = %s", (key["id"],))
    assert sorted(r[0] for r in rows) == request_ids
    assert all(r[1] == 200 and r[2] == STREAM_TOKENS and not r[4] for r in rows), rows
    used_tokens, used_nanos = query(database_url, "SELECT used_tokens, used_nanos FROM api_key WHERE id = %s",
                                    (key["id"],))[0]
    assert used_tokens == sum(r[2] for r in rows) == STREAMS * STREAM_TOKENS
    assert used_nanos == sum(r[3] for r in rows) == STREAMS * sonnet_cost(100, 20, 3, 10)


# --------------------------------------------------------------------------- 6. SIGKILL of a worker holding slots

LEASE_TTL = 3


@pytest.mark.slow
def test_sigkill_of_a_worker_frees_its_slots_and_others_keep_serving(env, procs, upstream, redis_url):
    shared = {**env, "REDIS_URL": redis_url}
    migrate(shared)
    server, port = start_gunicorn(procs, shared, workers=2, OCTORELAY_LEASE_TTL=str(LEASE_TTL))
    admin = AdminClient(port)
    admin.create_channel(name="up", type="anthropic", base_url=upstream.url, api_key=UPSTREAM_KEY,
                         models=["claude-*"])
    narrow = admin.create_key(name="narrow", max_concurrency=2)["key"]
    other = admin.create_key(name="other")["key"]

    def answer(request):
        if request.json().get("stream"):  # 20 s unless the client goes first
            return sse_answer(anthropic_stream_events(["tick "] * 100), delay=0.2)
        return json_answer(anthropic_message())

    upstream.set_default(answer)
    master = server.popen.pid
    workers = wait_until(lambda: (w := worker_pids(master)) and len(w) == 2 and w, 10)
    assert workers, worker_pids(master)

    streams: list[RawStream] = []
    new_streams: list[RawStream] = []
    try:
        streams += [RawStream(port, narrow), RawStream(port, narrow)]
        assert [s.status for s in streams] == [200, 200]
        owners = [wait_until(lambda s=s: socket_owner(port, s.client_port, workers), 3) for s in streams]
        assert all(owners), owners
        victim = owners[0]
        os.kill(victim, signal.SIGKILL)
        killed_at = time.monotonic()

        # the dead worker's slot is still leased (and the other stream still runs): refused for now
        assert is_error(fresh_post(port, narrow), 429, "rate_limit_error")
        # other keys are served all along, by the surviving and then the replacement worker
        assert [fresh_post(port, other).status_code for _ in range(10)] == [200] * 10
        streams[1].close()  # whichever worker it was on, the second slot is freed normally

        def two_streams_open():
            opened = [RawStream(port, narrow)]
            if opened[0].status == 200:
                opened.append(RawStream(port, narrow))
            new_streams.extend(opened)
            if [s.status for s in opened] == [200, 200]:
                return True
            for s in opened:
                s.close()
            time.sleep(0.2)
            return False

        assert wait_until(two_streams_open, LEASE_TTL + 5), "the dead worker's slot never came back"
        recovered_after = time.monotonic() - killed_at
        assert recovered_after < LEASE_TTL + 5
        replacement = wait_until(lambda: (w := worker_pids(master)) and len(w) == 2 and victim not in w and w, 10)
        assert replacement, worker_pids(master)
        assert fresh_post(port, other).status_code == 200
    finally:
        for s in streams + new_streams:
            s.close()
    assert server.stop() == 0, server.stderr

