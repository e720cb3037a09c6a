"""5. SIGTERM with 20 open streams: they finish and settle; 6. SIGKILL of a worker holding
concurrency slots: its leases expire and the other worker keeps serving."""
from __future__ import annotations

import os
import signal
import threading
import time

import pytest
import requests

from tests.faults.helpers import (STREAM_BODY, RawStream, fresh_post, is_error, socket_owner, sonnet_cost,
                                  start_gunicorn)
from tests.support.admin import AdminClient
from tests.support.constants import UPSTREAM_KEY
from tests.support.database import query
from tests.support.net import url
from tests.support.processes import migrate, worker_pids
from tests.support.upstream import anthropic_message, anthropic_stream_events, json_answer, sse_answer
from tests.support.waiting import wait_until

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
