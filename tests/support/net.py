"""Loopback addresses for servers under test."""
from __future__ import annotations

import socket

HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def url(port: int, path: str) -> str:
    return f"http://{HOST}:{port}{path}"
