"""Loopback addresses for servers under test."""
from __future__ import annotations

import select
import socket

HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def url(port: int, path: str) -> str:
    return f"http://{HOST}:{port}{path}"


def readable(socks, timeout: float) -> list:
    """Those of `socks` with bytes, an EOF or an error to read within `timeout` seconds. poll(), not
    select(): select() refuses descriptors past 1023, and a long test run holds that many."""
    poller = select.poll()
    by_fd = {}
    for sock in socks:
        poller.register(sock, select.POLLIN)
        by_fd[sock.fileno()] = sock
    return [by_fd[fd] for fd, _ in poller.poll(max(timeout, 0.0) * 1000)]
