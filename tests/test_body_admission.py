"""A key's limits are checked before its body is read and parsed (issue 22, item 2).

A key over its budget, its rpm or its concurrency used to have its whole body read and parsed
before the refusal: a 28.6 MB body grew a worker to 865 MB and stalled every other tenant. Now
what needs no body (the key, its used-up budget, rpm, tpm, concurrency) is refused first, and
what is parsed is bounded: at most one JSON value per 16 bytes (plus a floor), so a parse costs
a small multiple of the body's size.

In process, memory is measured with tracemalloc around one request (the test client hands the
body over in memory: reading it would allocate its size again). The slow test runs a real
gunicorn and reads the worker's peak RSS from /proc while another key is served.
"""
from __future__ import annotations

import json
import socket
import threading
import time
import tracemalloc

import pytest

from app.errors import InvalidRequest
from app.models import ApiKey
from app.schemas.json_body import VALUE_BYTES, check_density, parse_json_body
from app.services.auth import KeySnapshot
from app.state import services
from tests.support.admin import AdminClient
from tests.support.app import assert_error
from tests.support.constants import SECRETS_USED
from tests.support.processes import serve_gunicorn, worker_pids

MODEL = "claude-sonnet-4-5"
MB = 1024 * 1024


def body_of(size: int, *, model: str = MODEL) -> bytes:
    """A valid Messages body of about `size` bytes (one long text)."""
    head = json.dumps({"model": model, "max_tokens": 5, "messages": [
        {"role": "user", "content": "PAD"}]}).encode()
    return head.replace(b"PAD", b"x" * max(0, size - len(head)))


SMALL = body_of(200)


def dense(size: int) -> bytes:
    """A body of tiny values (`{}` three bytes each): what grew a worker ~25x its size."""
    head = b'{"model":"' + MODEL.encode() + b'","max_tokens":5,"messages":[{"role":"user","content":"hi"}],"x":['
    return head + b"{}," * ((size - len(head)) // 3) + b"{}]}"


def post(client, key: str, body: bytes, path: str = "/v1/messages"):
    return client.post(path, data=body, headers={"x-api-key": key, "content-type": "application/json"})


def peak_during(fn) -> tuple[object, int]:
    """Run `fn`; return its result and the most memory Python held above the start meanwhile."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        result = fn()
        return result, tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()


@pytest.fixture
def mock(admin):
    admin.create_channel(name="mock", type="mock", models=["claude-*"])


def new_key(admin, **fields) -> dict:
    key = admin.create_key(name=f"k{time.monotonic_ns()}", **fields)
    SECRETS_USED.add(key["key"])
    return key


BIG = 20 * MB


def test_used_up_budget_refuses_a_20_mb_body_without_reading_it(client, admin, mock):
    key = new_key(admin, budget_usd=1.0)
    ApiKey.update(used_nanos=10 ** 9).where(ApiKey.id == key["id"]).execute()  # before its first use: no cache
    body = body_of(BIG)
    resp, peak = peak_during(lambda: post(client, key["key"], body))
    assert_error(resp, 402, "billing_error", contains="used its budget")
    assert peak < 2 * MB, f"{peak / MB:.1f} MB held while refusing a used-up key"


def test_rpm_refuses_a_20_mb_body_without_reading_it(client, admin, mock):
    key = new_key(admin, rpm=1)
    assert post(client, key["key"], SMALL).status_code == 200
    body = body_of(BIG)
    resp, peak = peak_during(lambda: post(client, key["key"], body))
    assert_error(resp, 429, "rate_limit_error", contains="requests per minute")
    assert resp.headers["retry-after"]
    assert peak < 2 * MB, f"{peak / MB:.1f} MB held while refusing a key over its rpm"


def test_a_full_concurrency_refuses_a_20_mb_body_without_reading_it(app, client, admin, mock):
    key = new_key(admin, max_concurrency=1)
    limiter = services(app).relay.limiter
    held = limiter.admit_before_body(KeySnapshot.of(ApiKey.get_by_id(key["id"])))  # its one slot, taken
    try:
        body = body_of(BIG)
        resp, peak = peak_during(lambda: post(client, key["key"], body))
        assert_error(resp, 429, "rate_limit_error", contains="requests in flight")
        assert peak < 2 * MB, f"{peak / MB:.1f} MB held while refusing a key at its concurrency"
    finally:
        limiter.abandon(held)
    assert post(client, key["key"], SMALL).status_code == 200  # the slot came back


def test_count_tokens_over_its_rpm_refuses_a_20_mb_body_without_reading_it(client, admin, mock):
    key = new_key(admin)
    relay = services(client.application).relay
    relay.count_tokens_rpm = 1
    assert post(client, key["key"], SMALL, "/v1/messages/count_tokens").status_code == 200
    body = body_of(BIG)
    resp, peak = peak_during(lambda: post(client, key["key"], body, "/v1/messages/count_tokens"))
    assert_error(resp, 429, "rate_limit_error", contains="count_tokens")
    assert peak < 2 * MB, f"{peak / MB:.1f} MB held while refusing count_tokens over its rpm"


@pytest.mark.parametrize("bad", [b"{not json", dense(2 * MB), body_of(300, model="claude-not-allowed")])
def test_a_refused_body_gives_its_concurrency_slot_back(client, admin, mock, bad):
    """The slot is taken before the body is read: a 400 (bad JSON, too dense) or a 403 (a model
    the key may not use) must give it back, or the key would be locked out until the lease TTL."""
    key = new_key(admin, max_concurrency=1, models=["claude-sonnet-*"])
    for _ in range(3):
        resp = post(client, key["key"], bad)
        assert resp.status_code in (400, 403), resp.get_data(as_text=True)
    assert post(client, key["key"], SMALL).status_code == 200


def test_a_budget_too_small_for_the_request_gives_its_slot_back(client, admin, mock):
    """Refused at the reservation (after parsing): the concurrency slot is returned as well."""
    key = new_key(admin, max_concurrency=1, budget_usd=0.000001)
    admin.put(f"/admin/prices/{MODEL}", json={"input_usd_per_mtok": 3.0, "output_usd_per_mtok": 15.0})
    big_max = json.loads(SMALL)
    big_max["max_tokens"] = 64000
    for _ in range(2):
        assert_error(post(client, key["key"], json.dumps(big_max).encode()), 402, "billing_error")
    ApiKey.update(budget_nanos=10 ** 12).where(ApiKey.id == key["id"]).execute()
    admin.patch(f"/admin/keys/{key['id']}", json={"name": "bigger"})  # an admin write: caches drop the key
    assert post(client, key["key"], SMALL).status_code == 200


def test_a_dense_body_is_refused_before_it_is_parsed(client, admin, mock):
    key = new_key(admin)
    body = dense(8 * MB)
    resp, peak = peak_during(lambda: post(client, key["key"], body))
    assert_error(resp, 400, "invalid_request_error", contains="too many JSON values for its size")
    assert peak < 3 * len(body), f"{peak / MB:.1f} MB held for an {len(body) / MB:.0f} MB body"


# the parse's memory, by shape: every body that passes costs a small multiple of its size
SHAPES = {
    "text": lambda n: body_of(n),
    "short strings": lambda n: b'{"x":[' + b'"abcdefghijklm",' * (n // 16) + b'""]}',
    "numbers": lambda n: b'{"x":[' + b'1234567890.1234,' * (n // 16) + b'0]}',
    "astral text": lambda n: b'{"x":"' + ("a" * 12 + "\U0001F600").encode() * (n // 16) + b'"}',
    "csv in a string": lambda n: b'{"x":"' + b"1,2," * (n // 4) + b'"}',
    "one-key objects": lambda n: b'{"x":[' + b'{"k":"abcdefghijklmnopqrstuvwxyzabcdefghi"},' * (n // 44) + b'{}]}',
}
PARSE_MULTIPLE = 8  # measured: at most 7.3x (one-key objects), 6.7x (text with an emoji: UCS-4 strings)


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_a_parse_costs_a_small_multiple_of_the_body(shape):
    raw = SHAPES[shape](4 * MB)
    body, peak = peak_during(lambda: parse_json_body(raw))
    assert isinstance(body, dict)
    assert peak < PARSE_MULTIPLE * len(raw), f"{shape}: {peak / len(raw):.1f}x"


@pytest.mark.parametrize("unit", [b"{},", b"[],", b"0,", b'{"a":{}},', b'{"abcdefghi":1},', b"[[[[[]]]]],"])
def test_bodies_denser_than_the_limit_are_refused_quickly(unit):
    raw = b'{"x":[' + unit * (8 * MB // len(unit)) + b"0]}"
    started = time.perf_counter()
    with pytest.raises(InvalidRequest):
        check_density(raw)
    assert time.perf_counter() - started < 2.0  # measured 0.01-0.12 s (parsing them took 1-3 s)
    _, peak = peak_during(lambda: pytest.raises(InvalidRequest, check_density, raw))
    assert peak < len(raw)  # the check walks the body in pieces


def test_commas_and_brackets_inside_strings_do_not_count():
    raw = b'{"x":"' + b'[{,\\",' * (2 * MB // 6) + b'"}'
    check_density(raw)  # passes: only structure counts
    assert parse_json_body(raw)["x"].startswith('[{,",')
    assert VALUE_BYTES == 16


# --- a real gunicorn: the worker's peak memory and another key's latency ----------------------

@pytest.mark.slow
def test_gunicorn_worker_stays_flat_for_an_over_limit_key_and_serves_others(env, procs):
    served = serve_gunicorn(procs, env, workers=1, OCTORELAY_MAX_BODY_MB="32")
    proc, port = served.proc, served.port
    admin = AdminClient(port)
    admin.create_channel(name="mock", type="mock", models=["claude-*"])
    limited, other = admin.create_key(rpm=1)["key"], admin.create_key()["key"]
    SECRETS_USED.update((limited, other))
    (worker,) = worker_pids(proc.popen.pid)

    def exchange(key: str, body: bytes, timeout: float = 30.0) -> tuple[int, float]:
        started = time.perf_counter()
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            head = (f"POST /v1/messages HTTP/1.1\r\nHost: x\r\nx-api-key: {key}\r\nConnection: close\r\n"
                    f"content-type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode()
            try:
                sock.sendall(head + body)
            except OSError:  # answered (and closed) before the whole body was sent
                pass
            data = b""
            while b"\r\n" not in data:
                try:
                    chunk = sock.recv(65536)
                except OSError:
                    break
                if not chunk:
                    break
                data += chunk
        return int(data.split(b" ", 2)[1]) if data else 0, time.perf_counter() - started

    def vm(field: str) -> int:
        with open(f"/proc/{worker}/status") as status:
            line = next(line for line in status if line.startswith(field + ":"))
        return int(line.split()[1]) * 1024

    for _ in range(3):  # warm: imports, the first request's caches
        assert exchange(other, SMALL)[0] == 200
    assert exchange(limited, SMALL)[0] == 200  # its one request this minute
    hwm_before = vm("VmHWM")

    latencies, stop = [], threading.Event()

    def other_tenant():
        deadline = time.monotonic() + 60
        while not stop.is_set() and time.monotonic() < deadline and len(latencies) < 2000:
            status, took = exchange(other, SMALL)
            assert status == 200
            latencies.append(took)

    thread = threading.Thread(target=other_tenant, daemon=True)
    thread.start()
    time.sleep(0.3)
    body = dense(28 * MB)  # 28 MB of `{}`: the shape that grew a worker ~25x when parsed
    results = [exchange(limited, body) for _ in range(3)]
    time.sleep(0.3)
    stop.set()
    thread.join(timeout=70)
    growth = vm("VmHWM") - hwm_before
    print(f"over-limit 28 MB bodies: {[(s, round(t, 3)) for s, t in results]}; worker peak RSS growth "
          f"{growth / MB:.1f} MB; other key: {len(latencies)} requests, max {max(latencies) * 1000:.0f} ms, "
          f"median {sorted(latencies)[len(latencies) // 2] * 1000:.0f} ms")
    assert [s for s, _ in results] == [429, 429, 429]
    assert growth < 20 * MB, f"the worker's peak RSS grew {growth / MB:.0f} MB"
    assert latencies and max(latencies) < 1.0, f"another key waited {max(latencies):.2f} s"
