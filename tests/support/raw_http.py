"""Raw HTTP/1.1 on one loopback TCP connection, for what a client library would not send
(header injection, bad framing, bodies that never finish) and for reading exactly what came back."""
from __future__ import annotations

import socket
import time
from dataclasses import dataclass

from tests.support.net import readable

HOST = "127.0.0.1"
SOCKET_TIMEOUT = 5.0


@dataclass
class RawResponse:
    status: int
    headers: dict
    body: bytes


def parse_responses(data: bytes) -> tuple[list[RawResponse], bytes]:
    """Complete HTTP/1.1 responses at the start of `data`, and what is left over."""
    out = []
    while True:
        head, sep, rest = data.partition(b"\r\n\r\n")
        if not sep:
            return out, data
        lines = head.split(b"\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower().decode("latin-1")] = value.strip().decode("latin-1")
        if "content-length" in headers:
            size = int(headers["content-length"])
            if len(rest) < size:
                return out, data
            body, data = rest[:size], rest[size:]
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            body, remaining, complete = b"", rest, False
            while True:
                size_line, sep, after = remaining.partition(b"\r\n")
                if not sep:
                    break
                size = int(size_line.split(b";")[0], 16)
                if len(after) < size + 2:
                    break
                body, remaining = body + after[:size], after[size + 2:]
                if size == 0:
                    complete = True
                    break
            if not complete:
                return out, data
            data = remaining
        else:  # delimited by the close
            body, data = rest, b""
        out.append(RawResponse(status, headers, body))


class RawConn:
    """One loopback TCP connection; every operation has a timeout."""

    def __init__(self, port: int, timeout: float = SOCKET_TIMEOUT):
        self.sock = socket.create_connection((HOST, port), timeout=timeout)
        self.buffer = b""
        self.closed_by_peer = False

    def send(self, data: bytes) -> bool:
        try:
            self.sock.sendall(data)
            return True
        except OSError:
            return False

    def readable(self, timeout: float) -> bool:
        return bool(readable([self.sock], timeout))

    def pump(self, timeout: float) -> None:
        if self.closed_by_peer or not self.readable(timeout):
            return
        try:
            chunk = self.sock.recv(65536)
        except (socket.timeout, ConnectionResetError, OSError):
            chunk = b""
        if not chunk:
            self.closed_by_peer = True
        self.buffer += chunk

    def responses(self, timeout: float = SOCKET_TIMEOUT, linger: float = 0.0) -> list[RawResponse]:
        """Read until a complete response arrived (or the peer closed, or `timeout`), then keep
        reading `linger` seconds more (or until the close) to catch a response that should not be there."""
        deadline = time.monotonic() + timeout
        while not self.closed_by_peer and time.monotonic() < deadline and not parse_responses(self.buffer)[0]:
            self.pump(min(0.1, max(0.0, deadline - time.monotonic())))
        until = time.monotonic() + linger
        while not self.closed_by_peer and time.monotonic() < until:
            self.pump(min(0.05, max(0.0, until - time.monotonic())))
        return parse_responses(self.buffer)[0]

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


def exchange(port: int, data: bytes, *, linger: float = 0.0) -> list[RawResponse]:
    conn = RawConn(port)
    try:
        conn.send(data)
        return conn.responses(linger=linger)
    finally:
        conn.close()


def healthz_ok(port: int, timeout: float = SOCKET_TIMEOUT) -> bool:
    conn = RawConn(port, timeout=timeout)
    try:
        conn.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        got = conn.responses(timeout=timeout, linger=0)
        return bool(got) and got[0].status == 200 and got[0].headers.get("request-id", "").startswith("req_")
    finally:
        conn.close()
