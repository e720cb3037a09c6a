"""The relay under the real server: two gunicorn workers, concurrency, streaming, disconnects, limits."""
from __future__ import annotations

import json
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.support.bodies import messages_body
from tests.support.constants import UPSTREAM_KEY
from tests.support.net import url
from tests.support.processes import serve_gunicorn
from tests.support.upstream import anthropic_message, anthropic_stream_events, json_answer, sse_answer

pytestmark = pytest.mark.slow

USAGE = {"input_tokens": 120, "output_tokens": 30, "cache_creation_input_tokens": 7,
         "cache_read_input_tokens": 1000}
PER_REQUEST_TOKENS = 120 + 30 + 7 + 1000
BODY = messages_body(max_tokens=50)


@pytest.fixture
def server(env, procs, upstream, redis_url):
    """gunicorn with two workers (sharing limits in Redis), one channel pointed at the scripted upstream."""
    served = serve_gunicorn(procs, {**env, "REDIS_URL": redis_url}, workers=2, threads=16,
                            OCTORELAY_MAX_BODY_MB="0.05")
    port, admin = served.port, served.admin
    admin.create_channel(name="up", type="anthropic", base_url=upstream.url, api_key=UPSTREAM_KEY,
                         models=["claude-*"])
    return port, admin, admin.create_key(name="load")


def test_concurrent_requests_are_charged_exactly(server, upstream):
    port, admin, key = server
    start_usage = {**USAGE, "output_tokens": 1}

    def answer(request):
        if request.json().get("stream"):
            return sse_answer(anthropic_stream_events(["a", "b"], usage_start=start_usage,
                                                      usage_delta={"output_tokens": 30}))
        return json_answer(anthropic_message(usage=USAGE))

    upstream.set_default(answer)
    n = 48

    def one(i):
        body = {**BODY, "stream": i % 2 == 0}
        with requests.Session() as session:
            resp = session.post(url(port, "/v1/messages"), json=body, headers={"x-api-key": key["key"]},
                                timeout=30)
            return resp.status_code, resp.content

    with ThreadPoolExecutor(12) as pool:
        results = list(pool.map(one, range(n)))
    assert [status for status, _ in results] == [200] * n
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        shown = admin("GET", f"/admin/keys/{key['id']}").json()
        if shown["used_tokens"] >= n * PER_REQUEST_TOKENS:
            break
        time.sleep(0.1)
    assert shown["used_tokens"] == n * PER_REQUEST_TOKENS
    per_request_usd = (120 * 3 + 30 * 15 + 7 * 3.75 + 1000 * 0.3) / 1e6
    assert shown["used_usd"] == pytest.approx(n * per_request_usd, abs=1e-9)
    totals = admin("GET", f"/admin/usage?key_id={key['id']}").json()["data"][0]
    assert totals["requests"] == n and totals["cost_usd"] == shown["used_usd"]
    logs = admin("GET", f"/admin/logs?key_id={key['id']}&limit=1000").json()["data"]
    assert len(logs) == n and len({row["request_id"] for row in logs}) == n
    assert sum(row["stream"] for row in logs) == n // 2

    metrics = requests.get(url(port, "/metrics"), timeout=5).text
    served = sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
                 if line.startswith("octorelay_requests_total{") and 'status="200"' in line)
    assert served == n  # summed over both workers


def test_stream_is_not_buffered_by_gunicorn(server, upstream):
    port, _, key = server
    answer = sse_answer(anthropic_stream_events(["a", "b", "c", "d"]), delay=0.3)
    upstream.script(answer)
    arrivals = []
    with requests.post(url(port, "/v1/messages"), json={**BODY, "stream": True},
                       headers={"x-api-key": key["key"]}, stream=True, timeout=30) as resp:
        for _ in resp.iter_content(chunk_size=None):
            arrivals.append(time.monotonic())
    assert arrivals[0] < answer.sent_at[-1] - 1.5
    assert len(arrivals) >= 5


def test_client_disconnect_closes_the_upstream_under_gunicorn(server, upstream):
    port, admin, key = server
    upstream.script(sse_answer(anthropic_stream_events(["word "] * 300), delay=0.1))
    body = json.dumps({**BODY, "stream": True}).encode()
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(b"POST /v1/messages HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\n"
                 + f"x-api-key: {key['key']}\r\ncontent-length: {len(body)}\r\n\r\n".encode() + body)
    received = b""
    deadline = time.monotonic() + 10
    while received.count(b"content_block_delta") < 3 and time.monotonic() < deadline:
        received += sock.recv(65536)
    sock.close()
    assert upstream.wait_for_disconnect(5)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        logs = admin("GET", "/admin/logs").json()["data"]
        if logs:
            break
        time.sleep(0.1)
    assert logs[0]["client_disconnected"] is True and logs[0]["input_tokens"] == 25


def test_body_limit_with_content_length_and_chunked(server, upstream):
    port, _, key = server
    big = json.dumps({**BODY, "messages": [{"role": "user", "content": "x" * 80_000}]}).encode()
    headers = {"x-api-key": key["key"], "content-type": "application/json"}
    resp = requests.post(url(port, "/v1/messages"), data=big, headers=headers, timeout=10)
    assert resp.status_code == 413 and resp.json()["error"]["type"] == "request_too_large"

    def chunks():
        for i in range(0, len(big), 8192):
            yield big[i:i + 8192]

    resp = requests.post(url(port, "/v1/messages"), data=chunks(), headers=headers, timeout=10)
    assert resp.status_code == 413 and resp.json()["error"]["type"] == "request_too_large"
    small = json.dumps(BODY).encode()
    resp = requests.post(url(port, "/v1/messages"), data=iter([small[:10], small[10:]]), headers=headers,
                         timeout=10)
    assert resp.status_code == 200  # chunked and under the limit
    assert upstream.requests[-1].body == small
    assert len(upstream.requests) == 1  # nothing over the limit was forwarded


def test_encoded_bodies_under_gunicorn(server, upstream):
    """gzip decoded and forwarded plain; a bomb refused at the 50 KB limit; a refused encoding's
    unread body does not break the next request on the same connection."""
    import gzip

    port, _, key = server
    headers = {"x-api-key": key["key"], "content-type": "application/json", "content-encoding": "gzip"}
    small = json.dumps(BODY).encode()
    with requests.Session() as session:
        resp = session.post(url(port, "/v1/messages"), data=gzip.compress(small), headers=headers, timeout=10)
        assert resp.status_code == 200, resp.text
        assert upstream.requests[-1].body == small and "content-encoding" not in upstream.requests[-1].headers
        bomb = gzip.compress(json.dumps({**BODY, "messages": [{"role": "user", "content": "x" * 5_000_000}]}).encode())
        assert len(bomb) < 50_000
        resp = session.post(url(port, "/v1/messages"), data=bomb, headers=headers, timeout=10)
        assert resp.status_code == 413 and resp.json()["error"]["type"] == "request_too_large", resp.text
        resp = session.post(url(port, "/v1/messages"), data=b"b" * 40_000, timeout=10,
                            headers={**headers, "content-encoding": "br"})
        assert resp.status_code == 415 and "'br'" in resp.json()["error"]["message"], resp.text
        resp = session.post(url(port, "/v1/messages"), data=gzip.compress(small), headers=headers, timeout=10)
        assert resp.status_code == 200, resp.text
    assert len(upstream.requests) == 2


def test_long_header_values_are_accepted(server, upstream):
    port, _, key = server
    resp = requests.post(url(port, "/v1/messages"), json=BODY, timeout=10,
                         headers={"x-api-key": key["key"], "anthropic-beta": "b" * 16000})
    assert resp.status_code == 200
    assert upstream.requests[-1].headers["anthropic-beta"] == "b" * 16000


def test_rpm_is_shared_by_both_workers(server, upstream):
    port, admin, _ = server
    upstream.set_default(json_answer(anthropic_message()))
    key = admin.create_key(name="rpm", rpm=10)
    statuses = []
    for _ in range(20):  # a fresh connection each time, so both workers take requests
        with requests.Session() as session:
            statuses.append(session.post(url(port, "/v1/messages"), json=BODY, timeout=10,
                                         headers={"x-api-key": key["key"], "Connection": "close"}).status_code)
    assert statuses.count(200) == 10 and statuses.count(429) == 10


def test_concurrency_is_shared_by_both_workers(server, upstream):
    port, admin, _ = server
    key = admin.create_key(name="conc", max_concurrency=2)
    upstream.set_default(sse_answer(anthropic_stream_events(["x"] * 10), delay=0.3))
    streams = []
    try:
        for _ in range(2):
            resp = requests.post(url(port, "/v1/messages"), json={**BODY, "stream": True}, stream=True,
                                 timeout=30, headers={"x-api-key": key["key"], "Connection": "close"})
            assert resp.status_code == 200
            next(resp.iter_content(chunk_size=None))
            streams.append(resp)
        refused = [requests.post(url(port, "/v1/messages"), json=BODY, timeout=10,
                                 headers={"x-api-key": key["key"], "Connection": "close"}).status_code
                   for _ in range(4)]
        assert refused == [429] * 4
    finally:
        for resp in streams:
            resp.close()
