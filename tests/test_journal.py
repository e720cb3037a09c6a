"""No request unrecorded even after SIGKILL (issue 21): admitted requests are journaled until
settled; a live worker settles a dead worker's entries at their reservation, marked `orphaned`;
a dead worker's concurrency slots come back within seconds."""
from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from datetime import timedelta

import pytest
import requests

from app.db import db
from app.models import ApiKey, RequestJournal, RequestLog, WorkerBeat, utcnow
from app.state import services
from tests.support.app import anthropic_channel, settled
from tests.support.bodies import messages_body
from tests.support.processes import serve_gunicorn
from tests.support.upstream import anthropic_message, anthropic_stream_events, json_answer, sse_answer

BODY = messages_body()


@pytest.fixture
def env(env, request):
    """The suite's environment, plus what a test parametrizes it with (indirect=True)."""
    return {**env, **getattr(request, "param", {})}


def test_settled_requests_leave_no_journal_entry(client, admin, upstream, app):
    anthropic_channel(admin, upstream)
    key = admin.create_key(name="k", budget_usd=5)
    upstream.set_default(json_answer(anthropic_message()))
    for _ in range(5):
        assert client.post("/v1/messages", json=BODY, headers={"x-api-key": key["key"]}).status_code == 200
    settled(app)
    assert RequestJournal.select().count() == 0 and RequestLog.select().count() == 5


def test_a_long_request_is_journaled_while_it_runs(live, admin, upstream, app):
    anthropic_channel(admin, upstream)
    key = admin.create_key(name="k", budget_usd=5)
    upstream.script(sse_answer(anthropic_stream_events(["a", "b", "c"]), delay=0.5))
    with requests.post(f"{live}/v1/messages", json={**BODY, "stream": True}, stream=True, timeout=30,
                       headers={"x-api-key": key["key"]}) as resp:
        chunks = resp.iter_content(chunk_size=None)
        next(chunks)
        settled(app)  # the journal entry went out with the writer's next batch
        [entry] = list(RequestJournal.select())
        assert entry.key_id == key["id"] and entry.reservation_nanos > 0 and entry.stream == 1
        for _ in chunks:
            pass
    deadline = time.monotonic() + 5
    while RequestJournal.select().count() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert RequestJournal.select().count() == 0


def test_the_journal_is_on_unless_turned_off(env):
    from app.config import load_settings

    assert load_settings(env).journal is True
    assert load_settings({**env, "OCTORELAY_JOURNAL": "0"}).journal is False


@pytest.mark.parametrize("env", [{"OCTORELAY_JOURNAL": "0"}], indirect=True)
def test_off_a_long_request_is_not_journaled(live, admin, upstream, app):
    anthropic_channel(admin, upstream)
    key = admin.create_key(name="k", budget_usd=5)
    upstream.script(sse_answer(anthropic_stream_events(["a", "b"]), delay=0.3))
    with requests.post(f"{live}/v1/messages", json={**BODY, "stream": True}, stream=True, timeout=30,
                       headers={"x-api-key": key["key"]}) as resp:
        chunks = resp.iter_content(chunk_size=None)
        next(chunks)
        settled(app)
        assert RequestJournal.select().count() == 0
        for _ in chunks:
            pass
    settled(app)
    assert RequestLog.select().count() == 1


def test_a_burst_is_journaled_and_forgotten_in_chunks(app, admin):
    """More entries than one statement carries (JOURNAL_CHUNK): every one written, then every one
    deleted when its request settles in a later batch."""
    from app.services.accounting import JOURNAL_CHUNK, RequestRecord

    key = admin.create_key(name="k", budget_usd=5)
    ledger = services(app).relay.ledger
    n = JOURNAL_CHUNK * 2 + 7
    records = [RequestRecord(f"req_burst_{i}", key["id"], "claude-sonnet-4-6", bool(i % 2)) for i in range(n)]
    entries = [{"journal": True, "request_id": r.request_id, "key_id": r.key_id, "model": r.model,
                "stream": int(r.stream), "worker": "here:1:aa", "reservation_nanos": i, "started_at": utcnow()}
               for i, r in enumerate(records)]
    assert ledger.write_batch(entries) == [0] * n
    assert RequestJournal.select().count() == n
    assert sum(e.reservation_nanos for e in RequestJournal.select()) == sum(range(n))
    for record in records:
        record.status = 200
        ledger.settle(record)
    settled(app)
    assert RequestJournal.select().count() == 0 and RequestLog.select().count() == n


def test_a_dead_workers_entries_are_settled_once_at_their_reservation(app, admin):
    key = admin.create_key(name="k", budget_usd=5)
    old = utcnow() - timedelta(minutes=5)
    WorkerBeat.create(worker="gone:1:aa", seen_at=old)
    for n in range(3):
        RequestJournal.create(request_id=f"req_dead_{n}", key_id=key["id"], model="claude-sonnet-4-6",
                              stream=1, worker="gone:1:aa", reservation_nanos=1_000_000, started_at=old)
    RequestJournal.create(request_id="req_young", key_id=key["id"], model="claude-sonnet-4-6", stream=0,
                          worker="gone:1:aa", reservation_nanos=1, started_at=utcnow())  # may still be starting
    sweeper = services(app).relay.ledger.sweeper
    sweeper._database = db.obj  # as ensure_started() binds it
    assert sweeper.tick() == 3
    assert sweeper.tick() == 0  # settled once
    rows = list(RequestLog.select().order_by(RequestLog.request_id))
    assert [(r.request_id, r.status, r.error_type, r.cost_nanos, r.stream) for r in rows] == [
        (f"req_dead_{n}", 500, "orphaned", 1_000_000, True) for n in range(3)]
    assert ApiKey.get_by_id(key["id"]).used_nanos == 3_000_000
    assert [e.request_id for e in RequestJournal.select()] == ["req_young"]


@pytest.mark.slow
def test_sigkill_leaves_orphaned_rows_and_frees_the_slots(env, procs, upstream, redis_url, tmp_path):
    served = serve_gunicorn(procs, {**env, "REDIS_URL": redis_url}, workers=2, OCTORELAY_LEASE_TTL="3")
    server, port = served.proc, served.port
    base = f"http://127.0.0.1:{port}"
    admin = {"Authorization": f"Bearer {env['OCTORELAY_ADMIN_TOKEN']}"}
    requests.post(f"{base}/admin/channels", headers=admin, timeout=10, json={
        "name": "up", "type": "anthropic", "base_url": upstream.url, "api_key": "sk-ant-test", "models": ["claude-*"]})
    key = requests.post(f"{base}/admin/keys", headers=admin, timeout=10,
                        json={"name": "k", "budget_usd": 5, "max_concurrency": 8}).json()
    upstream.set_default(lambda request: sse_answer(anthropic_stream_events(["x"] * 60), delay=1.0)
                         if request.json().get("stream") else json_answer(anthropic_message()))

    def stream():
        try:
            with requests.post(f"{base}/v1/messages", json={**BODY, "stream": True}, stream=True, timeout=90,
                               headers={"x-api-key": key["key"], "Connection": "close"}) as resp:
                for _ in resp.iter_content(chunk_size=None):
                    pass
        except requests.RequestException:
            pass  # cut by the kill

    threads = [threading.Thread(target=stream, daemon=True) for _ in range(8)]
    for t in threads:
        t.start()
    assert upstream.wait_for_requests(8, timeout=20)
    time.sleep(1.0)  # the journal entries are written with the next batch
    busy = requests.post(f"{base}/v1/messages", json=BODY, timeout=10, headers={"x-api-key": key["key"]})
    assert busy.status_code == 429  # all 8 slots held
    workers = subprocess.run(["pgrep", "-P", str(server.popen.pid)], capture_output=True, text=True).stdout.split()
    killed_at = time.monotonic()
    for pid in workers:
        os.kill(int(pid), signal.SIGKILL)

    freed = None
    while time.monotonic() - killed_at < 15:
        try:
            resp = requests.post(f"{base}/v1/messages", json=BODY, timeout=10, headers={"x-api-key": key["key"]})
            if resp.status_code == 200:
                freed = time.monotonic() - killed_at
                break
        except requests.RequestException:
            pass  # the master is forking new workers
        time.sleep(0.2)
    assert freed is not None and freed <= 5.0, freed

    from app.db import db, open_database

    database = open_database(env["DATABASE_URL"], pooled=False)
    db.initialize(database)
    deadline = time.monotonic() + 45
    while time.monotonic() < deadline:
        with database.connection_context():
            orphans = list(RequestLog.select().where(RequestLog.error_type == "orphaned"))
        if len(orphans) >= 8:
            break
        time.sleep(0.5)
    with database.connection_context():
        rows = list(RequestLog.select())
        used = ApiKey.get_by_id(key["id"]).used_nanos
        left = RequestJournal.select().count()
    orphans = [r for r in rows if r.error_type == "orphaned"]
    assert len(orphans) == 8 and all(r.status == 500 and r.cost_nanos > 0 for r in orphans), rows
    assert left == 0
    assert used == sum(r.cost_nanos for r in rows)  # charges follow the rows
    database.close()
