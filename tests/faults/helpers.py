"""Shared by the fault tests: request bodies and their sonnet price, the rows of a request, a TCP
proxy that can stall or cut a connection (the database's, in front of PostgreSQL or nothing), which
worker holds a socket, requests on fresh connections, and a raw streaming client."""
from __future__ import annotations

import json
import os
import socket
import struct
import threading
import time
from urllib.parse import urlsplit, urlunsplit

import requests

from app.models import RequestLog
from tests.support.bodies import messages_body
from tests.support.net import readable, url
from tests.support.processes import serve_gunicorn
from tests.support.waiting import wait_until

BODY = messages_body(content="Hello")
STREAM_BODY = {**BODY, "stream": True}
SONNET_NANOS = (3000, 15000, 3750, 300)  # claude-sonnet-4-6 list price, nano-dollars a token: in, out, cache w/r


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
                for sock in readable([a, b], 0.1):
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
