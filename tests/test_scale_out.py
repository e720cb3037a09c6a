"""Two octorelay instances (two gunicorn workers each) sharing the database and Redis:
every per-key limit holds across all four processes."""
from __future__ import annotations

import json
import threading
import time

import pytest
import requests

from app.adaptors import estimate_tokens
from tests.support.admin import AdminClient
from tests.support.bodies import messages_body
from tests.support.constants import UPSTREAM_KEY
from tests.support.net import url
from tests.support.processes import migrate, serve_gunicorn
from tests.support.upstream import anthropic_message, anthropic_stream_events, json_answer, sse_answer

pytestmark = pytest.mark.slow

# ~4 KB of prompt: about the 1000 input tokens the scripted upstream reports using
BODY = messages_body(content="Tell me about rate limits. " * 148)
USAGE = {"input_tokens": 1000, "output_tokens": 100}  # 1100 tokens, $0.0045 on sonnet
ACTUAL_NANOS = 1000 * 3000 + 100 * 15000


@pytest.fixture
def instances(env, procs, upstream, redis_url):
    """Ports of two instances on one DB and one Redis, and an admin client for the first."""
    shared = {**env, "REDIS_URL": redis_url}
    migrate(shared)
    ports = [serve_gunicorn(procs, shared, workers=2, threads=16, upgrade=False, name=f"instance-{name}").port
             for name in ("a", "b")]
    admin = AdminClient(ports[0])
    admin.create_channel(name="up", type="anthropic", base_url=upstream.url, api_key=UPSTREAM_KEY,
                         models=["claude-*"])
    upstream.set_default(json_answer(anthropic_message(usage=USAGE)))
    return ports, admin


def post(port, key, body=BODY, **kwargs):
    """A fresh connection each time, so every worker of every instance takes requests."""
    with requests.Session() as session:
        return session.post(url(port, "/v1/messages"), json=body, timeout=30,
                            headers={"x-api-key": key["key"], "Connection": "close"}, **kwargs)


def test_rpm_admits_exactly_its_limit_across_instances(instances):
    ports, admin = instances
    key = admin.create_key(name="rpm", rpm=10)
    statuses = [post(ports[i % 2], key).status_code for i in range(30)]
    assert statuses.count(200) == 10 and statuses.count(429) == 20


def test_budget_for_seven_admits_what_fits_of_twenty_concurrent(instances):
    """Reservations (input at the dearest input rate + all of max_tokens) never add up past what
    is left, on both instances together: the key overspends at most, per request in flight at
    once, its real cost beyond its reservation (none here: each reserves more than it costs)."""
    ports, admin = instances
    key = admin.create_key(name="budget", budget_usd=7 * ACTUAL_NANOS / 1e9)
    results = []

    def one(port):  # retries 429s as the SDK does; 402 is final
        deadline = time.monotonic() + 30
        while (resp := post(port, key)).status_code == 429 and time.monotonic() < deadline:
            time.sleep(float(resp.headers["retry-after"]) / 4)
        results.append(resp.status_code)

    threads = [threading.Thread(target=one, args=(ports[i % 2],)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    worst = estimate_tokens(len(json.dumps(BODY))) * 6000 + BODY["max_tokens"] * 15000  # the reservation
    budget = 7 * ACTUAL_NANOS
    assert len(results) == 20 and set(results) == {200, 402}
    admitted = results.count(200)
    used = round(admin("GET", f"/admin/keys/{key['id']}").json()["used_usd"] * 1e9)
    assert admitted >= 1 and used == admitted * ACTUAL_NANOS, results
    assert used <= budget + (budget // worst) * max(0, ACTUAL_NANOS - worst)  # the stated bound
    assert budget - used < worst  # it stopped only when what was left could not hold one more
    assert post(ports[1], key).status_code == 402


def test_concurrency_two_of_five_slow_streams(instances, upstream):
    ports, admin = instances
    key = admin.create_key(name="conc", max_concurrency=2)
    upstream.set_default(sse_answer(anthropic_stream_events(["x"] * 20), delay=0.25))
    open_streams, statuses = [], []
    try:
        for i in range(5):
            resp = requests.post(url(ports[i % 2], "/v1/messages"), json={**BODY, "stream": True},
                                 stream=True, timeout=30, headers={"x-api-key": key["key"], "Connection": "close"})
            statuses.append(resp.status_code)
            if resp.status_code == 200:
                next(resp.iter_content(chunk_size=None))
                open_streams.append(resp)
            else:
                resp.close()
        assert statuses.count(200) == 2 and statuses.count(429) == 3
        open_streams[0].close()  # a client disconnects: its slot comes back
        deadline = time.monotonic() + 5
        while True:
            again = requests.post(url(ports[1], "/v1/messages"), json={**BODY, "stream": True}, stream=True,
                                  timeout=30, headers={"x-api-key": key["key"], "Connection": "close"})
            if again.status_code == 200 or time.monotonic() > deadline:
                break
            again.close()
            time.sleep(0.1)
        assert again.status_code == 200
        open_streams.append(again)
        for resp in open_streams[1:]:  # the others run to their end
            for _ in resp.iter_content(chunk_size=None):
                pass
    finally:
        for resp in open_streams:
            resp.close()
    upstream.set_default(json_answer(anthropic_message(usage=USAGE)))
    assert [post(ports[i % 2], key).status_code for i in range(2)] == [200, 200]


def test_tpm_refuses_once_the_window_is_used(instances):
    ports, admin = instances
    key = admin.create_key(name="tpm", tpm=2000)
    assert post(ports[0], key).status_code == 200  # 1100 tokens
    assert post(ports[1], key).status_code == 200  # 2200: over the window
    refused = post(ports[0], key)
    assert refused.status_code == 429 and refused.json()["error"]["type"] == "rate_limit_error"
    assert post(ports[1], key).status_code == 429
