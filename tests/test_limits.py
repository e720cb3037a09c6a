"""Per-key limits: budget and token quota (402), rpm / tpm / concurrency (429), a down limit store."""
import json
import threading
import time
from datetime import datetime

import pytest
import requests

from app import create_app
from app.adaptors import estimate_tokens
from app.db import db, upgrade
from app.models import RequestLog
from app.services.leases import MemoryLeases, RedisLeases
from app.state import services
from tests.support.admin import AdminClient
from tests.support.app import anthropic_channel, assert_error, serving
from tests.support.bodies import messages_body
from tests.support.net import free_port
from tests.support.upstream import (anthropic_message, anthropic_stream_events, error_answer, json_answer,
                                    sse_answer)

BODY = messages_body()
# 1000 in + 100 out on sonnet ($3 / $15 per million) = $0.0045
USAGE = {"input_tokens": 1000, "output_tokens": 100}


def post(client, key, body=BODY):
    return client.post("/v1/messages", json=body, headers={"x-api-key": key["key"]})


@pytest.fixture
def channel(admin, upstream):
    upstream.set_default(json_answer(anthropic_message(usage=USAGE)))
    return anthropic_channel(admin, upstream)


def test_budget_used_up_is_402_without_calling_upstream(client, admin, upstream, channel):
    key = admin.create_key(name="b", budget_usd=0.0065)
    assert post(client, key).status_code == 200  # $0.0045 used; $0.002 left
    # the next one could cost up to ~$0.0017 (its input at $6/MTok, the dearest input-side rate of
    # a 1-hour cache write, and 100 output tokens at $15): it fits, finishes over: $0.009
    assert post(client, key).status_code == 200
    resp = post(client, key)
    body = assert_error(resp, 402, "billing_error", contains="budget")
    assert resp.headers["x-should-retry"] == "false" and "retry-after" not in resp.headers
    assert len(upstream.requests) == 2
    shown = admin.get(f"/admin/keys/{key['id']}").get_json()
    assert shown["used_usd"] == pytest.approx(0.009) and shown["used_tokens"] == 2200
    admin.patch(f"/admin/keys/{key['id']}", json={"budget_usd": 1})
    deadline = time.monotonic() + 2
    while post(client, key).status_code != 200:
        assert time.monotonic() < deadline, "raising the budget did not take effect within 2 s"
        time.sleep(0.05)


def test_budget_holds_under_concurrency(live, admin, upstream):
    """20 requests at once against a budget that covers 7 by their real cost: each reserves its
    worst case (input by size at the dearest input rate + all of max_tokens) until it is settled,
    and reservations never add up past what is left: no overshoot when real <= reserved."""
    upstream.set_default(lambda request: json_answer(
        anthropic_message(usage={"input_tokens": 10, "output_tokens": 100}), headers={}))
    anthropic_channel(admin, upstream)
    actual = 10 * 3000 + 100 * 15000  # 1.53 milli-USD a request
    key = admin.create_key(name="b", budget_usd=7 * actual / 1e9)
    body = json.dumps({**BODY, "max_tokens": 100}).encode()
    worst = estimate_tokens(len(body)) * 6000 + 100 * 15000  # the relay's reservation, nano-USD
    results = []

    def one():  # retries 429s as the SDK does; 402 is final
        deadline = time.monotonic() + 20
        while True:
            resp = requests.post(f"{live}/v1/messages", data=body, timeout=30,
                                 headers={"x-api-key": key["key"], "content-type": "application/json"})
            if resp.status_code != 429 or time.monotonic() > deadline:
                break
            time.sleep(float(resp.headers["retry-after"]) / 4)
        results.append(resp.status_code)

    threads = [threading.Thread(target=one) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    admitted = results.count(200)
    assert len(results) == 20 and set(results) == {200, 402}
    fits = 1 + (7 * actual - worst) // actual  # the last one admitted still had its worst case left
    assert admitted == fits, (results, fits)
    used = admin.get(f"/admin/keys/{key['id']}").get_json()["used_usd"]
    assert used <= 7 * actual / 1e9  # every real cost was within its reservation: no overshoot


def test_token_quota_used_up_is_402(client, admin, upstream, channel):
    key = admin.create_key(name="q", token_quota=1500)
    assert post(client, key).status_code == 200  # 1100 tokens
    assert post(client, key).status_code == 200  # 2200 >= 1500 now
    assert_error(post(client, key), 402, "billing_error", contains="quota")


def test_rpm_limit_is_429_with_honest_retry_after_and_headers(client, admin, upstream, channel):
    key = admin.create_key(name="r", rpm=2)
    first = post(client, key)
    assert first.status_code == 200
    assert first.headers["anthropic-ratelimit-requests-limit"] == "2"
    assert first.headers["anthropic-ratelimit-requests-remaining"] == "1"
    reset = datetime.fromisoformat(first.headers["anthropic-ratelimit-requests-reset"].replace("Z", "+00:00"))
    assert reset.tzinfo is not None
    assert post(client, key).status_code == 200
    limited = post(client, key)
    assert_error(limited, 429, "rate_limit_error", contains="2 requests per minute")
    assert 1 <= int(limited.headers["retry-after"]) <= 60
    assert limited.headers["anthropic-ratelimit-requests-remaining"] == "0"
    assert len(upstream.requests) == 2
    refused = RequestLog.select().where(RequestLog.status == 429).get()  # refused before routing: a row,
    assert (refused.channel_id, refused.cost_nanos, refused.error_type) == (None, 0, "rate_limit_error")  # no charge
    assert RequestLog.select().count() == 3
    other = admin.create_key(name="other", rpm=2)
    assert post(client, other).status_code == 200  # limits are per key


def test_rpm_change_takes_effect_within_2s(client, admin, upstream, channel):
    key = admin.create_key(name="r", rpm=1)
    assert post(client, key).status_code == 200
    assert post(client, key).status_code == 429
    admin.patch(f"/admin/keys/{key['id']}", json={"rpm": 100})
    deadline = time.monotonic() + 2
    while post(client, key).status_code != 200:
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_tpm_counts_real_tokens_after_the_request(client, admin, upstream, channel):
    key = admin.create_key(name="t", tpm=1500)
    first = post(client, key)
    assert first.status_code == 200 and first.headers["anthropic-ratelimit-tokens-limit"] == "1500"
    assert "anthropic-ratelimit-requests-limit" not in first.headers  # no rpm on this key
    assert post(client, key).status_code == 200  # 1100 used, window not full yet
    limited = post(client, key)  # 2200 used: full
    assert_error(limited, 429, "rate_limit_error", contains="tokens per minute")
    assert limited.headers["anthropic-ratelimit-tokens-remaining"] == "0"
    assert 1 <= int(limited.headers["retry-after"]) <= 60


def test_concurrency_slot_is_held_by_a_stream_and_released_after(live, admin, upstream, client):
    anthropic_channel(admin, upstream)
    key = admin.create_key(name="c", max_concurrency=1)
    upstream.script(sse_answer(anthropic_stream_events(["a", "b", "c"]), delay=0.4))
    upstream.set_default(json_answer(anthropic_message()))
    with requests.post(f"{live}/v1/messages", json={**BODY, "stream": True}, stream=True, timeout=30,
                       headers={"x-api-key": key["key"]}) as stream:
        chunks = stream.iter_content(chunk_size=None)
        next(chunks)  # the stream is open and holds the slot
        busy = requests.post(f"{live}/v1/messages", json=BODY, headers={"x-api-key": key["key"]}, timeout=10)
        assert busy.status_code == 429 and busy.json()["error"]["type"] == "rate_limit_error"
        assert busy.headers["retry-after"] == "1"
        for _ in chunks:
            pass
    deadline = time.monotonic() + 5
    while True:
        resp = requests.post(f"{live}/v1/messages", json=BODY, headers={"x-api-key": key["key"]}, timeout=10)
        if resp.status_code == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert resp.status_code == 200


def test_concurrency_slot_released_on_disconnect_and_errors(live, admin, upstream, client):
    anthropic_channel(admin, upstream)
    key = admin.create_key(name="c", max_concurrency=1)
    # a client that walks away mid-stream
    upstream.script(sse_answer(anthropic_stream_events(["w "] * 100), delay=0.1))
    stream = requests.post(f"{live}/v1/messages", json={**BODY, "stream": True}, stream=True, timeout=30,
                           headers={"x-api-key": key["key"]})
    next(stream.iter_content(chunk_size=None))
    stream.close()
    assert upstream.wait_for_disconnect(5)
    # upstream errors, and a model nothing serves, must not leak the slot either
    upstream.script(error_answer(400, "invalid_request_error", "no"))
    deadline = time.monotonic() + 5
    while (resp := post(client, key)).status_code == 429 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert resp.status_code == 400
    assert_error(post(client, key, {**BODY, "model": "unknown-model"}), 404, "not_found_error")
    upstream.script(json_answer(anthropic_message()))
    assert post(client, key).status_code == 200


@pytest.mark.parametrize("leases_kind", ["memory", "redis"])
def test_leases_expire_so_a_dead_worker_cannot_hold_a_slot(leases_kind, redis_url):
    import redis

    leases = MemoryLeases() if leases_kind == "memory" else RedisLeases(redis.Redis.from_url(redis_url))
    name = "octorelay:inflight:t"
    assert leases.acquire(name, 1, "dead-worker", 1, ttl=0.3)
    assert not leases.acquire(name, 1, "other", 1, ttl=0.3)
    time.sleep(0.4)  # the holder never released: its lease ran out
    assert leases.acquire(name, 1, "other", 1, ttl=0.3)
    leases.refresh(name, "other", ttl=5)
    time.sleep(0.4)
    assert not leases.acquire(name, 1, "third", 1, ttl=0.3)  # refreshed: still held
    leases.release(name, "other")
    assert leases.acquire(name, 1, "third", 1, ttl=0.3)


@pytest.mark.parametrize("leases_kind", ["memory", "redis"])
def test_weighted_leases_admit_while_capacity_is_left(leases_kind, redis_url):
    import redis

    leases = MemoryLeases() if leases_kind == "memory" else RedisLeases(redis.Redis.from_url(redis_url))
    name = "octorelay:budget:t"
    assert leases.acquire(name, 100, "a", 60, ttl=5)
    assert leases.acquire(name, 100, "b", 60, ttl=5)  # 60 < 100 left: admitted, may overshoot
    assert not leases.acquire(name, 100, "c", 1, ttl=5)  # 120 committed: nothing left
    leases.release(name, "a")
    assert leases.acquire(name, 100, "c", 1, ttl=5)


@pytest.fixture
def dead_redis_app(env, make_app):
    def build(**extra):
        app = make_app({**env, "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0", **extra})
        upgrade(db.obj)
        return app
    return build


@pytest.mark.parametrize("fail_open", [False, True])
def test_limit_store_down(dead_redis_app, upstream, fail_open):
    app = dead_redis_app(OCTORELAY_LIMITS_FAIL_OPEN="1" if fail_open else "0")
    client = app.test_client()
    admin = AdminClient(client)
    upstream.set_default(json_answer(anthropic_message()))
    anthropic_channel(admin, upstream)
    limited = admin.create_key(name="limited", rpm=5)
    unlimited = admin.create_key(name="free")
    assert post(client, unlimited).status_code == 200  # no limits to check: unaffected
    if fail_open:
        assert post(client, limited).status_code == 200
    else:
        assert_error(post(client, limited), 503, "overloaded_error", contains="rate-limit")
    assert client.get("/healthz").status_code == 200
    ready = client.get("/readyz")
    assert ready.status_code == 503 and ready.get_json()["checks"]["redis"].startswith("error")
    metrics = client.get("/metrics").get_data(as_text=True)
    assert 'octorelay_limit_store_errors_total{during="admit"}' in metrics


def test_redis_leases_use_redis_clock_not_the_clients(redis_url, monkeypatch):
    """An instance whose clock is an hour behind must not take or renew leases that the others
    see as already expired (lease expiries are computed from Redis' TIME)."""
    import redis

    import app.services.limiter as limiter_module

    client = redis.Redis.from_url(redis_url)
    name = f"octorelay:test-skew:{time.monotonic_ns()}"
    behind, ahead = RedisLeases(client), RedisLeases(client)
    real = time.time
    monkeypatch.setattr(limiter_module.time, "time", lambda: real() - 3600)  # every client call sees it
    assert behind.acquire(name, 1, "slow-clock", 1, ttl=5)
    behind.refresh(name, "slow-clock", ttl=5)
    monkeypatch.setattr(limiter_module.time, "time", lambda: real() + 3600)
    assert not ahead.acquire(name, 1, "fast-clock", 1, ttl=5)  # the slot is held, whatever the clocks say


def test_a_slow_non_streaming_request_keeps_its_slot_past_the_lease_ttl(env, upstream):
    """The lease TTL bounds what a dead worker can hold, not how long a live request may wait
    for its answer: held leases are renewed in the background."""
    from tests.support.upstream import hang_answer

    app = create_app({**env, "OCTORELAY_LEASE_TTL": "1"})
    upgrade(db.obj)
    try:
        with serving(app) as base:
            admin = AdminClient(app.test_client())
            anthropic_channel(admin, upstream)
            key = admin.create_key(name="one-at-a-time", max_concurrency=1, budget_usd=10)
            upstream.script(hang_answer(3.0, then=json_answer(anthropic_message(usage=USAGE))),
                            json_answer(anthropic_message(usage=USAGE)))
            slow = {}
            first = threading.Thread(target=lambda: slow.setdefault("resp", requests.post(
                f"{base}/v1/messages", json=BODY, headers={"x-api-key": key["key"]}, timeout=30)))
            first.start()
            assert upstream.wait_for_requests(1, timeout=5)
            time.sleep(2.0)  # twice the TTL: without renewal the slot would have run out
            second = requests.post(f"{base}/v1/messages", json=BODY, headers={"x-api-key": key["key"]}, timeout=30)
            assert second.status_code == 429, second.text
            first.join(timeout=30)
            assert slow["resp"].status_code == 200
            third = requests.post(f"{base}/v1/messages", json=BODY, headers={"x-api-key": key["key"]}, timeout=30)
            assert third.status_code == 200, third.text
    finally:
        services(app).close()
        db.obj.close_all()
