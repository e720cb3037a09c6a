"""Deployed as a platform runs it: nothing lost at a restart, and a PostgreSQL connection budget
that holds under slow requests.

1. The Procfile as a platform runs it (release, then web with PORT), streams longer than the
   grace, SIGTERM to every process, SIGKILL when the grace is over: each open stream ends with
   an SSE `overloaded_error` event, a request still waiting gets a 503, and every request has
   its log row and its charge.
2. 300 slow requests through two instances against a database that allows 50 connections:
   another key's requests are served all along, and the connections held stay within
   instances x workers x (pool + 1).
"""
from __future__ import annotations

import json
import os
import re
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit, urlunsplit

import pytest
import requests

from tests.support.admin import AdminClient
from tests.support.constants import PG_URL, UPSTREAM_KEY
from tests.support.database import query
from tests.support.net import free_port, url
from tests.support.processes import BIN, REPO, base_env, migrate, run, serve_gunicorn, wait_until_serving
from tests.support.upstream import (anthropic_message, anthropic_stream_events, hang_answer, json_answer,
                                    sse_answer)

pytestmark = pytest.mark.slow

GRACE = 4  # OCTORELAY_SHUTDOWN_GRACE_S in the test: streams are cut 1.5 s before it ends
LONG, SHORT, WAITING, QUICK = 101, 102, 103, 104  # max_tokens marks what the upstream answers
START = {"input_tokens": 200, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 50,
         "output_tokens": 1}


def procfile() -> dict[str, str]:
    lines = (REPO / "Procfile").read_text().splitlines()
    return dict((name.strip(), command.strip()) for name, _, command in
                (line.partition(":") for line in lines if line.strip() and not line.startswith("#")))


def platform_env(env: dict, port: int, **extra) -> dict:
    out = base_env(**env, PORT=str(port), **extra)
    out["PATH"] = f"{BIN}{os.pathsep}{out.get('PATH', '')}"  # the Procfile names bare commands
    return out


def scripted(request):
    body = request.json()
    events = anthropic_stream_events(["word "] * 30, usage_start=START, usage_delta={"output_tokens": 31})
    if body["max_tokens"] == LONG:  # ~11 s: far longer than the grace
        return sse_answer(events, delay=0.3)
    if body["max_tokens"] == SHORT:  # ~0.6 s
        return sse_answer(events, delay=0.015)
    if body["max_tokens"] == WAITING:
        return hang_answer(15, then=json_answer(anthropic_message(usage=START)))
    return hang_answer(0.5, then=json_answer(anthropic_message(usage=START)))


def body(max_tokens: int, stream: bool) -> dict:
    return {"model": "claude-sonnet-4-5", "max_tokens": max_tokens, "stream": stream,
            "messages": [{"role": "user", "content": "hello"}]}


@pytest.mark.parametrize("worker_class", ["gevent", "gthread"])
def test_platform_restart_ends_open_streams_with_an_error_event_and_settles_everything(
        env, procs, upstream, redis_url, worker_class):
    commands = procfile()
    assert set(commands) >= {"web", "release"}, commands
    port = free_port()
    web_env = platform_env({**env, "REDIS_URL": redis_url}, port, WEB_CONCURRENCY="2",
                           OCTORELAY_SHUTDOWN_GRACE_S=str(GRACE), OCTORELAY_WORKER_CLASS=worker_class)
    release = run(["/bin/sh", "-c", commands["release"]], cwd=REPO, env=web_env)
    assert release.returncode == 0, release.stderr
    web = procs(["/bin/sh", "-c", commands["web"]], cwd=REPO, env=web_env, name="web")
    wait_until_serving(web, port)

    admin = AdminClient(port)
    admin.create_channel(name="up", type="anthropic", base_url=upstream.url, api_key=UPSTREAM_KEY,
                         models=["claude-*"])
    key = admin.create_key(name="deploy")
    upstream.set_default(scripted)

    results: dict[str, object] = {}
    first_event = threading.Barrier(1 + 6 + 1, timeout=20)  # the test, 6 long streams, 1 short

    def call(name: str, max_tokens: int, stream: bool, barrier: bool = False):
        try:
            with requests.post(url(port, "/v1/messages"), json=body(max_tokens, stream), stream=stream,
                               timeout=30, headers={"x-api-key": key["key"], "Connection": "close"}) as resp:
                if stream:
                    chunks = resp.iter_content(chunk_size=None)
                    data = next(chunks)
                    if barrier:
                        first_event.wait()
                    for chunk in chunks:
                        data += chunk
                else:
                    data = resp.content
                results[name] = (resp.status_code, resp.headers.get("request-id"), data)
        except Exception as exc:  # recorded, asserted below
            results[name] = exc
            if barrier:
                first_event.abort()

    plan = [(f"long{i}", LONG, True, True) for i in range(6)] + [("short", SHORT, True, True)]
    threads = [threading.Thread(target=call, args=args, daemon=True) for args in plan]
    for thread in threads:
        thread.start()
        time.sleep(0.02)
    try:
        first_event.wait()
    except threading.BrokenBarrierError:
        pytest.fail(f"not every stream got its first event: {results}")
    for args in [("waiting0", WAITING, False), ("waiting1", WAITING, False), ("quick", QUICK, False)]:
        thread = threading.Thread(target=call, args=args, daemon=True)
        thread.start()
        threads.append(thread)
    assert upstream.wait_for_requests(10, 5), upstream.requests

    os.killpg(web.popen.pid, signal.SIGTERM)  # a platform signals every process of the dyno
    signalled = time.monotonic()
    time.sleep(max(0.0, GRACE - (time.monotonic() - signalled)))
    exited_by_itself = web.popen.poll() is not None
    try:
        os.killpg(web.popen.pid, signal.SIGKILL)  # the platform's SIGKILL when its window is over
    except ProcessLookupError:
        pass
    web.popen.wait(timeout=10)
    for thread in threads:
        thread.join(10)

    for name in results:
        assert not isinstance(results[name], BaseException), (name, results[name])
    assert len(results) == 10, results
    for i in range(6):  # cut at the deadline: the error Anthropic sends when it sheds load
        status, _, data = results[f"long{i}"]
        assert status == 200
        events = [e for e in data.decode().split("\n\n") if e.strip()]
        assert events[-1].startswith("event: error"), events[-3:]
        error = json.loads(events[-1].split("data: ", 1)[1])
        assert error["error"]["type"] == "overloaded_error", error
        assert b"event: message_stop" not in data
    status, _, data = results["short"]  # finished inside the grace: untouched
    assert status == 200 and b"event: message_stop" in data and b"event: error" not in data, data[-300:]
    for name in ("waiting0", "waiting1"):
        status, request_id, data = results[name]
        assert status == 503, data
        assert json.loads(data)["error"]["type"] == "overloaded_error"
        assert json.loads(data)["request_id"] == request_id
    assert results["quick"][0] == 200

    rows = {r[0]: r[1:] for r in query(env["DATABASE_URL"], (
        "SELECT request_id, status, error_type, input_tokens + output_tokens + cache_creation_input_tokens"
        " + cache_read_input_tokens, output_tokens, cost_nanos FROM request_log"))}
    assert sorted(rows) == sorted(r[1] for r in results.values())  # rows == requests
    for i in range(6):
        status, error_type, tokens, output, _ = rows[results[f"long{i}"][1]]
        assert (status, error_type) == (200, "overloaded_error")
        assert tokens > 250 and output >= 1  # message_start's input and cache, output seen so far
    for name in ("waiting0", "waiting1"):
        assert rows[results[name][1]][:2] == (503, "overloaded_error")
    used = query(env["DATABASE_URL"], "SELECT used_tokens, used_nanos FROM api_key WHERE id = %s",
                 (key["id"],))[0]
    assert used == (sum(r[2] for r in rows.values()), sum(r[4] for r in rows.values()))  # charges == rows
    deadline = [json.loads(line) for line in web.stderr.splitlines()
                if line.startswith("{") and "shutdown deadline" in line]
    assert deadline, web.stderr[-3000:]
    print(f"\n{worker_class}: exited before SIGKILL: {exited_by_itself}; deadline reports: "
          f"{[{k: d[k] for k in ('in_flight', 'settle_ms', 'flush_ms', 'left_of_grace_s') if k in d} for d in deadline]}")


# --------------------------------------------------------------------------- the connection budget

SLOW_REQUESTS = 300
CONNECTION_LIMIT = 50
WORKERS, INSTANCES = 2, 2
BUDGET = INSTANCES * WORKERS * (8 + 1)  # default OCTORELAY_DB_POOL, plus the change feed


@pytest.fixture
def limited_pg(env):
    """The test database with `CONNECTION LIMIT 50`, and a role it applies to (superusers are
    exempt): yields that role's URL; the limit and the role are removed afterwards."""
    import psycopg2

    admin = psycopg2.connect(PG_URL)
    admin.autocommit = True
    cur = admin.cursor()
    cur.execute("SELECT current_database(), rolsuper FROM pg_roles WHERE rolname = current_user")
    database, superuser = cur.fetchone()
    role = re.sub(r"[^a-z0-9_]", "_", f"octorelay_limited_{database}".lower())[:63]
    parts = urlsplit(PG_URL)
    limited = PG_URL
    if superuser:
        cur.execute(f'DROP ROLE IF EXISTS "{role}"')
        cur.execute(f"CREATE ROLE \"{role}\" LOGIN PASSWORD 'limited'")
        cur.execute(f'GRANT ALL ON SCHEMA public TO "{role}"')
        host = parts.hostname + (f":{parts.port}" if parts.port else "")
        limited = urlunsplit((parts.scheme, f"{role}:limited@{host}", parts.path, parts.query, ""))
    cur.execute(f'ALTER DATABASE "{database}" CONNECTION LIMIT {CONNECTION_LIMIT}')
    try:
        yield limited, role if superuser else parts.username
    finally:
        cur.execute(f'ALTER DATABASE "{database}" CONNECTION LIMIT -1')
        if superuser:
            cur.execute(f'DROP OWNED BY "{role}"')
            cur.execute(f'DROP ROLE IF EXISTS "{role}"')
        admin.close()


@pytest.mark.skipif(not PG_URL, reason="needs PostgreSQL: set OCTORELAY_TEST_DATABASE_URL")
def test_slow_requests_through_two_instances_keep_other_keys_served(env, limited_pg, procs, upstream,
                                                                      redis_url):
    import psycopg2

    database_url, role = limited_pg
    shared = {**env, "DATABASE_URL": database_url, "REDIS_URL": redis_url}
    migrate(shared)
    servers = []
    for i in range(INSTANCES):  # default worker class and connections per worker, as deployed
        served = serve_gunicorn(procs, shared, workers=WORKERS, bind_loopback=True, upgrade=False, wait=False,
                                name=f"instance{i}")
        servers.append((served.proc, served.port))
    for proc, port in servers:
        wait_until_serving(proc, port)
    ports = [port for _, port in servers]
    budget_lines = [line for proc, _ in servers for line in proc.stderr.splitlines()
                    if "connection budget" in line]
    assert len(budget_lines) == INSTANCES and all(f"= {WORKERS * 9} connections" in line and
                                                  f"database limit {CONNECTION_LIMIT}" in line
                                                  for line in budget_lines), budget_lines

    admin = AdminClient(ports[0])
    admin.create_channel(name="up", type="anthropic", base_url=upstream.url, api_key=UPSTREAM_KEY,
                         models=["claude-*"])
    slow_key = admin.create_key(name="slow", budget_usd=1000)
    other_key = admin.create_key(name="other")
    upstream.set_default(lambda request: hang_answer(3.0, then=json_answer(anthropic_message(usage=START)))
                         if request.json()["max_tokens"] == LONG else json_answer(anthropic_message()))

    refused: list[str] = []  # what the non-200 answers said, for the failure message

    def post(port: int, key: str, max_tokens: int) -> int:
        with requests.Session() as session:
            resp = session.post(url(port, "/v1/messages"), json=body(max_tokens, False), timeout=60,
                                headers={"x-api-key": key, "Connection": "close"})
        if resp.status_code != 200:
            refused.append(f"{resp.status_code} {resp.text[:300]}")
        return resp.status_code

    stop = threading.Event()
    held: list[int] = []

    def sample():  # connections the limited role holds, as the server counts them
        conn = psycopg2.connect(PG_URL)
        conn.autocommit = True
        with conn.cursor() as cur:
            while not stop.is_set():
                cur.execute("SELECT count(*) FROM pg_stat_activity WHERE usename = %s", (role,))
                held.append(cur.fetchone()[0])
                time.sleep(0.05)
        conn.close()

    other: list[int] = []

    def serve_other():
        n = 0
        while not stop.is_set() and n < 400:
            other.append(post(ports[n % INSTANCES], other_key["key"], 50))
            n += 1
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    background = threading.Thread(target=serve_other, daemon=True)
    background.start()
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=SLOW_REQUESTS) as pool:
        slow = list(pool.map(lambda i: post(ports[i % INSTANCES], slow_key["key"], LONG), range(SLOW_REQUESTS)))
    took = time.monotonic() - started
    stop.set()
    background.join(70)
    sampler.join(10)

    assert slow.count(200) == SLOW_REQUESTS, ({s: slow.count(s) for s in set(slow)}, refused[:5])
    assert other and other.count(200) == len(other), ({s: other.count(s) for s in set(other)}, refused[:5])
    assert max(held) <= BUDGET, max(held)
    total = SLOW_REQUESTS + len(other)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and query(PG_URL, "SELECT count(*) FROM request_log")[0][0] < total:
        time.sleep(0.2)
    assert query(PG_URL, "SELECT count(*) FROM request_log")[0][0] == total
    print(f"\n{SLOW_REQUESTS} slow requests in {took:.1f} s, {len(other)} of another key's served; "
          f"connections held by the role: max {max(held)} (budget {BUDGET}, limit {CONNECTION_LIMIT})")
