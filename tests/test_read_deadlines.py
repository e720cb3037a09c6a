"""The read-deadline rules of app/read_deadlines.py, on a socket pair with a fake clock."""
from __future__ import annotations

import socket

import pytest

from app.read_deadlines import MIN_RATE, ClientSocket, SlowClient


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def pair():
    ours, theirs = socket.socketpair()
    yield ours, theirs
    ours.close()
    theirs.close()


def wrap(sock, clock) -> ClientSocket:
    return ClientSocket(sock, header_s=2.0, body_s=5.0, keepalive_s=75.0, clock=clock)


def test_a_new_connection_must_start_its_request_within_the_header_deadline(pair):
    ours, theirs = pair
    clock = Clock()
    conn = wrap(ours, clock)
    clock.now += 2.01
    assert conn.recv(10) == b""  # reads as closed: the worker drops it, no answer


def test_headers_get_the_header_deadline_from_their_first_byte(pair):
    ours, theirs = pair
    clock = Clock()
    conn = wrap(ours, clock)
    clock.now += 1.5
    theirs.sendall(b"P")
    assert conn.recv(10) == b"P"
    clock.now += 1.9  # 3.4 s since connect, 1.9 s since the first byte
    theirs.sendall(b"O")
    assert conn.recv(10) == b"O"
    clock.now += 0.2
    assert conn.recv(10) == b""


def test_a_body_earns_one_second_per_min_rate_bytes(pair):
    ours, theirs = pair
    clock = Clock()
    conn = wrap(ours, clock)
    slow = []
    conn.body_started(on_slow=lambda: slow.append(True))
    clock.now += 4.0
    theirs.sendall(b"x" * (2 * MIN_RATE))
    received = 0
    while received < 2 * MIN_RATE:
        received += len(conn.recv(65536))
    clock.now += 2.9  # 6.9 s in: 5 s + 2 s earned
    theirs.sendall(b"y")
    assert conn.recv(10) == b"y"
    clock.now += 0.2  # 7.1 s: past 5 + (2 * MIN_RATE + 1) / MIN_RATE
    with pytest.raises(SlowClient):
        conn.recv(10)
    assert conn.body_timed_out and slow == [True]


def test_a_real_wait_past_the_deadline_times_out(pair):
    ours, _ = pair
    conn = ClientSocket(ours, header_s=0.2, body_s=0.2, keepalive_s=75.0)
    conn.body_started()
    with pytest.raises(SlowClient):
        conn.recv(10)  # nothing sent: the socket's own timeout ends the wait
    assert ours.gettimeout() is None  # the socket's timeout is put back


def test_between_requests_the_wait_is_the_keep_alive(pair):
    ours, theirs = pair
    clock = Clock()
    conn = wrap(ours, clock)
    conn.body_started()
    conn.body_done()
    clock.now += 60.0
    theirs.sendall(b"G")
    assert conn.recv(10) == b"G"
