"""Session affinity: the turns of one conversation stay on one channel while it is usable.

Three equal channels point at one loopback upstream under three paths
(/a, /b, /c), so the upstream's request log tells which channel served each
turn. With OCTORELAY_TEST_REDIS_URL set, homes live in Redis (the same tests).
"""
from __future__ import annotations

import json
import threading
import time

import pytest

from app.db import db
from app.models import RequestLog
from app.services.affinity import Affinity, LocalStore, conversation_id, scoped_key
from app.state import services
from tests.support.admin import AdminClient
from tests.support.affinity import MODEL, affinity_column, app_with, post, served_by, turn_body
from tests.support.constants import UPSTREAM_KEY
from tests.support.upstream import anthropic_message, anthropic_stream_events, error_answer, json_answer, sse_answer


def claude_code_user_id(session: str) -> str:
    return json.dumps({"device_id": "d" * 64, "account_uuid": "", "session_id": session})


# identity sources: (headers, extra body fields) for conversation n
SOURCES = {
    "header": lambda n: ({"x-claude-code-session-id": f"sess-{n}"}, {}),
    "metadata_json": lambda n: ({}, {"metadata": {"user_id": claude_code_user_id(f"sess-{n}")}}),
    "metadata_plain": lambda n: ({}, {"metadata": {"user_id": f"user-{n}"}}),
    "prefix": lambda n: ({}, {}),
}


@pytest.fixture
def three(admin, upstream):
    """Three equal channels on one upstream, told apart by path; -> {channel id: path prefix}."""
    upstream.set_default(json_answer(anthropic_message()))
    out = {}
    for name in "abc":
        channel = admin.create_channel(name=name, type="anthropic", base_url=f"{upstream.url}/{name}",
                                       api_key=UPSTREAM_KEY, models=["claude-*"])
        out[channel["id"]] = name
    return out


def conversation(client, key, source: str, n: int, turns: int, start: int = 1, first: str | None = None):
    headers, extra = SOURCES[source](n)
    for t in range(start, start + turns):
        resp = post(client, key, turn_body(first or f"task {n}", t, **extra), headers)
        assert resp.status_code == 200, resp.get_data(as_text=True)


@pytest.mark.parametrize("source", sorted(SOURCES))
def test_each_identity_source_keeps_eight_turns_on_one_channel(client, key, three, upstream, source):
    conversation(client, key, source, 1, 8)
    assert len(set(served_by(upstream))) == 1, served_by(upstream)
    assert len(upstream.requests) == 8
    assert affinity_column() == ["new"] + ["kept"] * 7


def test_thirty_sessions_spread_over_the_channels(client, key, three, upstream):
    homes = []
    for n in range(30):
        before = len(upstream.requests)
        conversation(client, key, "header", n, 3)
        paths = served_by(upstream, before)
        assert len(set(paths)) == 1, paths
        homes.append(paths[0])
    assert len(set(homes)) >= 2, homes
    assert max(homes.count(p) for p in "abc") <= 20, homes  # equal weights: no channel takes nearly all


def test_streams_follow_the_conversation_too(client, key, three, upstream):
    upstream.set_default(sse_answer(anthropic_stream_events(["ok"])))
    headers = {"x-claude-code-session-id": "streaming"}
    for t in range(1, 5):
        resp = post(client, key, turn_body("stream task", t, stream=True), headers)
        assert resp.status_code == 200 and b"message_stop" in resp.get_data()
    assert len(set(served_by(upstream))) == 1
    deadline = time.monotonic() + 5
    while len(affinity_column()) < 4 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert affinity_column() == ["new", "kept", "kept", "kept"]


def test_the_same_session_id_is_a_different_conversation_per_key_and_model(client, admin, key, three, upstream):
    """Scoped per key and model: the store key differs, so each starts `new`."""
    other = admin.create_key(name="other")
    headers = {"x-claude-code-session-id": "shared"}
    assert post(client, key, turn_body("x", 1), headers).status_code == 200
    assert post(client, other, turn_body("x", 1), headers).status_code == 200
    assert post(client, key, turn_body("x", 1, model="claude-haiku-4-5"), headers).status_code == 200
    assert post(client, key, turn_body("x", 2), headers).status_code == 200
    assert affinity_column() == ["new", "new", "new", "kept"]


def test_a_failing_channel_moves_its_session_once_and_it_stays_moved(client, key, three, upstream):
    headers = {"x-claude-code-session-id": "fails"}
    assert post(client, key, turn_body("t", 1), headers).status_code == 200
    home = served_by(upstream)[0]
    upstream.script(error_answer(529, "overloaded_error", "busy"), path=f"/{home}/v1/messages")
    assert post(client, key, turn_body("t", 2), headers).status_code == 200
    first_try, new_home = served_by(upstream, 1)
    assert first_try == home and new_home != home
    row = RequestLog.select().order_by(RequestLog.id.desc()).get()
    assert (row.affinity, row.attempts) == ("moved", 2)
    # the old channel answers again (one failure does not cool it down): the session stays moved
    for t in range(3, 9):
        assert post(client, key, turn_body("t", t), headers).status_code == 200
    assert served_by(upstream, 3) == [new_home] * 6
    assert affinity_column() == ["new", "moved"] + ["kept"] * 6


def test_a_disabled_channel_loses_its_sessions_at_once(client, admin, key, three, upstream):
    sessions = {f"s{n}": None for n in range(9)}
    for session in sessions:
        before = len(upstream.requests)
        assert post(client, key, turn_body(session, 1), {"x-claude-code-session-id": session}).status_code == 200
        sessions[session] = served_by(upstream, before)[0]
    victim = max("abc", key=lambda p: list(sessions.values()).count(p))
    victim_id = next(cid for cid, path in three.items() if path == victim)
    assert admin.patch(f"/admin/channels/{victim_id}", json={"enabled": False}).status_code == 200
    moved_to = {}
    for session, home in sessions.items():
        before = len(upstream.requests)
        assert post(client, key, turn_body(session, 2), {"x-claude-code-session-id": session}).status_code == 200
        now = served_by(upstream, before)
        assert victim not in now  # not even tried: gone from the candidates at once
        row = RequestLog.select().order_by(RequestLog.id.desc()).get()
        assert row.affinity == ("moved" if home == victim else "kept"), (session, home, now)
        if home != victim:
            assert now == [home]
        moved_to[session] = now[0]
    # enabled again: the moved sessions stay where they went
    assert admin.patch(f"/admin/channels/{victim_id}", json={"enabled": True}).status_code == 200
    for session, home in moved_to.items():
        before = len(upstream.requests)
        assert post(client, key, turn_body(session, 3), {"x-claude-code-session-id": session}).status_code == 200
        assert served_by(upstream, before) == [home]


@pytest.mark.parametrize("change", ["delete", "stop serving the model"])
def test_a_deleted_channel_or_one_no_longer_serving_the_model_loses_its_session(
        client, admin, key, three, upstream, change):
    headers = {"x-claude-code-session-id": "gone"}
    assert post(client, key, turn_body("g", 1), headers).status_code == 200
    home = served_by(upstream)[0]
    home_id = next(cid for cid, path in three.items() if path == home)
    if change == "delete":
        assert admin.delete(f"/admin/channels/{home_id}").status_code in (200, 204)
    else:
        assert admin.patch(f"/admin/channels/{home_id}", json={"models": ["claude-haiku-*"]}).status_code == 200
    assert post(client, key, turn_body("g", 2), headers).status_code == 200
    assert post(client, key, turn_body("g", 3), headers).status_code == 200
    moved = served_by(upstream, 1)
    assert home not in moved and len(set(moved)) == 1
    assert affinity_column() == ["new", "moved", "kept"]


def test_a_cooling_channel_loses_its_sessions(client, admin, key, three, upstream):
    headers = {"x-claude-code-session-id": "cool"}
    assert post(client, key, turn_body("c", 1), headers).status_code == 200
    home = served_by(upstream)[0]
    home_id = next(cid for cid, path in three.items() if path == home)
    from datetime import timedelta

    from app.models import Channel, utcnow
    from app.services.changes import announce

    Channel.update(cooldown_until=utcnow() + timedelta(seconds=60), consecutive_failures=3).where(
        Channel.id == home_id).execute()
    announce()
    assert post(client, key, turn_body("c", 2), headers).status_code == 200
    assert served_by(upstream, 1)[0] != home
    assert affinity_column() == ["new", "moved"]


def test_a_client_error_keeps_the_home(client, key, three, upstream):
    headers = {"x-claude-code-session-id": "bad-turn"}
    assert post(client, key, turn_body("b", 1), headers).status_code == 200
    home = served_by(upstream)[0]
    upstream.script(error_answer(400, "invalid_request_error", "nope"), path=f"/{home}/v1/messages")
    assert post(client, key, turn_body("b", 2), headers).status_code == 400
    assert post(client, key, turn_body("b", 3), headers).status_code == 200
    assert served_by(upstream) == [home] * 3
    assert affinity_column() == ["new", "kept", "kept"]


def test_all_channels_failing_leaves_affinity_null(client, key, three, upstream):
    upstream.set_default(error_answer(529, "overloaded_error", "busy"))
    assert post(client, key, turn_body("f", 1), {"x-claude-code-session-id": "f"}).status_code == 529
    assert affinity_column() == [None]


def test_count_tokens_neither_reads_nor_writes_a_home(client, key, three, upstream):
    upstream.set_default(json_answer({"input_tokens": 12}))
    for _ in range(3):
        assert client.post("/v1/messages/count_tokens", data=json.dumps(turn_body("q", 1)), headers={
            "x-api-key": key["key"], "content-type": "application/json",
            "x-claude-code-session-id": "ct"}).status_code == 200
    upstream.set_default(json_answer(anthropic_message()))
    assert post(client, key, turn_body("q", 1), {"x-claude-code-session-id": "ct"}).status_code == 200
    assert affinity_column() == ["new"]


def test_affinity_off_restores_the_per_request_choice(env, upstream):
    app = app_with(env, OCTORELAY_SESSION_AFFINITY="off")
    try:
        client = app.test_client()
        admin = AdminClient(client)
        upstream.set_default(json_answer(anthropic_message()))
        for name in "abc":
            admin.create_channel(name=name, type="anthropic", base_url=f"{upstream.url}/{name}",
                                 api_key=UPSTREAM_KEY, models=["claude-*"])
        key = admin.create_key(name="k")
        conversation(client, key, "header", 1, 12)
        assert len(set(served_by(upstream))) >= 2  # all 12 on one of 3: p = 3 / 3**12
        assert affinity_column() == [None] * 12
    finally:
        services(app).close()
        db.obj.close_all()


def test_a_home_expires_a_ttl_after_the_last_turn(env, upstream):
    ttl = 1.0
    app = app_with(env, OCTORELAY_SESSION_AFFINITY_TTL=str(ttl))
    try:
        client = app.test_client()
        admin = AdminClient(client)
        upstream.set_default(json_answer(anthropic_message()))
        for name in "abc":
            admin.create_channel(name=name, type="anthropic", base_url=f"{upstream.url}/{name}",
                                 api_key=UPSTREAM_KEY, models=["claude-*"])
        key = admin.create_key(name="k")
        conversation(client, key, "header", 1, 1)
        for t in range(2, 6):  # turns 0.4 s apart: 1.6 s in all, longer than the ttl, each in time
            time.sleep(0.4)
            conversation(client, key, "header", 1, 1, start=t)
        time.sleep(ttl + 0.3)  # silent longer than the ttl: forgotten
        conversation(client, key, "header", 1, 1, start=6)
        assert affinity_column() == ["new", "kept", "kept", "kept", "kept", "new"]
    finally:
        services(app).close()
        db.obj.close_all()


def test_an_unreachable_store_routes_turns_as_new_and_is_left_alone_a_while(
        client, app, key, three, upstream, monkeypatch):
    calls = []

    class Down:
        def known(self, key):
            return None  # nothing heard from a store that is down

        def get(self, key):
            calls.append("get")
            raise ConnectionError("store down")

        def set(self, key, value):
            calls.append("set")
            raise ConnectionError("store down")

    from app.services import affinity as affinity_module

    services(app).relay.affinity = Affinity(Down())
    for t in range(1, 4):
        assert post(client, key, turn_body("d", t), {"x-claude-code-session-id": "d"}).status_code == 200
    assert affinity_column() == ["new"] * 3
    assert calls == ["get"]  # no turn waits on a store that just failed
    monkeypatch.setattr(affinity_module, "RETRY_S", 0.0)
    services(app).relay.affinity = Affinity(Down())
    assert post(client, key, turn_body("d", 4), {"x-claude-code-session-id": "d"}).status_code == 200
    assert calls == ["get", "get", "set"]  # tried again once the pause is over


# a model served by one channel: nothing to choose, so the writer records the turn --------------

class Watched:
    """The relay's store, noting which thread asks it what."""

    def __init__(self, store):
        self.store = store
        self.calls: list[tuple[str, str]] = []

    def _note(self, what):
        self.calls.append((what, threading.current_thread().name))

    def known(self, key):
        self._note("known")
        return self.store.known(key)

    def get(self, key):
        self._note("get")
        return self.store.get(key)

    def set(self, key, value):
        self._note("set")
        self.store.set(key, value)

    def record(self, turns):
        self._note("record")
        return self.store.record(turns)


def channel(admin, upstream, name):
    return admin.create_channel(name=name, type="anthropic", base_url=f"{upstream.url}/{name}",
                                api_key=UPSTREAM_KEY, models=["claude-*"])


def test_the_only_channel_is_used_without_asking_the_store_and_the_writer_records_the_turn(
        client, app, admin, key, upstream):
    upstream.set_default(json_answer(anthropic_message()))
    channel(admin, upstream, "a")
    affinity = services(app).relay.affinity
    watched = Watched(affinity.store)
    affinity.store = watched
    conversation(client, key, "header", 1, 3)
    assert affinity_column() == ["new", "kept", "kept"]
    assert watched.calls and {what for what, _ in watched.calls} == {"record"}
    assert {thread for _, thread in watched.calls} == {"octorelay-settle"}  # after the answer, not before it


def test_a_conversation_begun_on_the_only_channel_stays_there_when_channels_join(client, admin, key, upstream):
    upstream.set_default(json_answer(anthropic_message()))
    channel(admin, upstream, "a")
    conversation(client, key, "header", 1, 2)
    for name in "bc":
        channel(admin, upstream, name)
    conversation(client, key, "header", 1, 6, start=3)
    assert served_by(upstream) == ["a"] * 8
    assert affinity_column() == ["new"] + ["kept"] * 7


def test_a_client_error_on_the_only_usable_channel_keeps_the_home_elsewhere(client, admin, key, upstream):
    upstream.set_default(json_answer(anthropic_message()))
    ids = {channel(admin, upstream, name)["id"]: name for name in "ab"}
    headers = {"x-claude-code-session-id": "e"}
    assert post(client, key, turn_body("e", 1), headers).status_code == 200
    home = served_by(upstream)[0]
    other = "b" if home == "a" else "a"
    home_id = next(i for i, name in ids.items() if name == home)
    admin("PATCH", f"/admin/channels/{home_id}", json={"enabled": False})
    upstream.script(error_answer(400, "invalid_request_error", "nope"), path=f"/{other}/v1/messages")
    assert post(client, key, turn_body("e", 2), headers).status_code == 400  # the only channel now
    admin("PATCH", f"/admin/channels/{home_id}", json={"enabled": True})
    assert post(client, key, turn_body("e", 3), headers).status_code == 200
    assert served_by(upstream) == [home, other, home]
    assert affinity_column() == ["new", "moved", "kept"]


def test_a_failing_store_makes_recorded_turns_new_and_is_left_alone_a_while(monkeypatch):
    from app.services import affinity as affinity_module

    class Down:
        calls = 0

        def record(self, turns):
            Down.calls += 1
            raise ConnectionError("store down")

    affinity = Affinity(Down())
    assert affinity.record([(("k1", True), 1), (("k2", False), 2)]) == ["new", "new"]
    assert affinity.record([(("k1", True), 1)]) == ["new"]
    assert Down.calls == 1  # the writer does not wait on a store that just failed either
    monkeypatch.setattr(affinity_module, "RETRY_S", 0.0)
    affinity = Affinity(Down())
    affinity.record([(("k1", True), 1)])
    affinity.record([(("k1", True), 1)])
    assert Down.calls == 3


# identity and store, without the relay ---------------------------------------------------

def test_identity_precedence():
    body = turn_body("x", 1, metadata={"user_id": claude_code_user_id("from-metadata")})
    assert conversation_id({"x-claude-code-session-id": "from-header"}, body) == "h:from-header"
    assert conversation_id({}, body) == "s:from-metadata"
    assert conversation_id({}, {**body, "metadata": {"user_id": "plain"}}) == "u:plain"
    assert conversation_id({}, {**body, "metadata": {"user_id": '{"no_session": 1}'}}) == \
        'u:{"no_session": 1}'
    assert conversation_id({}, {**body, "metadata": {"user_id": "{not json"}}) == "u:{not json"
    prefix = conversation_id({}, turn_body("x", 1))
    assert prefix.startswith("p:")
    assert conversation_id({}, turn_body("x", 5)) == prefix  # later turns: the same prefix
    assert conversation_id({}, turn_body("y", 1)) != prefix
    assert conversation_id({}, {**turn_body("x", 1), "tools": []}) != prefix
    # the cache breakpoint moves to the newest message each turn: the first message is the same one
    marked = turn_body("x", 1)
    marked["messages"][0] = {"role": "user", "content": [
        {"type": "text", "text": "x", "cache_control": {"type": "ephemeral"}}]}
    unmarked = turn_body("x", 3)
    unmarked["messages"][0] = {"role": "user", "content": [{"type": "text", "text": "x"}]}
    assert conversation_id({}, marked) == conversation_id({}, unmarked)
    assert conversation_id({}, marked) != conversation_id({}, {**marked, "system": "other"})
    assert scoped_key(1, MODEL, "h:a") != scoped_key(2, MODEL, "h:a") != scoped_key(1, "m", "h:a")


def test_local_store_is_bounded_and_keeps_the_recently_used():
    now = [0.0]
    store = LocalStore(ttl=10, max_entries=3, clock=lambda: now[0])
    for i in range(3):
        store.set(f"k{i}", i)
    assert store.get("k0") == 0  # used: now the most recent
    store.set("k3", 3)
    assert len(store) == 3 and store.get("k1") is None and store.get("k0") == 0
    now[0] = 9.0
    assert store.get("k0") == 0  # a use pushes the expiry out
    now[0] = 18.0
    assert store.get("k0") == 0 and store.get("k2") is None


def test_redis_store_keeps_a_home_an_hour_after_the_last_turn(redis_url):
    import redis

    from app.services.affinity_redis import RedisStore

    client = redis.Redis.from_url(redis_url)
    store = RedisStore(client)
    store.set("k", 7)
    assert store.get("k") == 7 and store.get("other") is None
    client.pexpire(RedisStore.PREFIX + "k", 5000)
    assert store.get("k") == 7  # a turn pushes the expiry back to an hour
    assert 3590 <= client.ttl(RedisStore.PREFIX + "k") <= 3600
    assert client.keys(RedisStore.PREFIX + "*") == [(RedisStore.PREFIX + "k").encode()]
    client.close()


def record_turns(store):
    """What `record` answers and leaves behind, the same for both stores."""
    store.set("home", 1)
    assert store.record([("home", 1), ("home", 2), ("fresh", 3), ("read", None), ("home", None)]) == [
        1, 1, None, None, 2]
    assert store.get("home") == 2 and store.get("fresh") == 3 and store.get("read") is None


def test_local_store_records_turns():
    record_turns(LocalStore())


def test_redis_store_records_turns_in_one_pipelined_call_that_keeps_the_hour(redis_url):
    import redis

    from app.services.affinity_redis import RedisStore

    client = redis.Redis.from_url(redis_url)
    record_turns(RedisStore(client))
    client.pexpire(RedisStore.PREFIX + "home", 5000)
    RedisStore(client).record([("home", None)])  # a read pushes the expiry back to an hour too
    assert 3590 <= client.ttl(RedisStore.PREFIX + "home") <= 3600
    client.close()


# two gunicorn workers sharing homes in Redis ----------------------------------------------

@pytest.mark.slow
def test_two_workers_keep_each_conversation_on_one_channel(env, procs, upstream, redis_url, tmp_path):
    """Every turn on a fresh connection, so both workers serve turns of the same conversations."""
    import requests
    from prometheus_client.mmap_dict import MmapedDict

    from tests.support.admin import AdminClient
    from tests.support.net import url
    from tests.support.processes import serve_gunicorn

    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    served = serve_gunicorn(procs, {**env, "REDIS_URL": redis_url}, workers=2, threads=16,
                            PROMETHEUS_MULTIPROC_DIR=str(metrics_dir))
    proc, port = served.proc, served.port
    admin = AdminClient(port)
    upstream.set_default(json_answer(anthropic_message()))
    channels = {}
    for name in "abc":
        channel = admin.create_channel(name=name, type="anthropic", base_url=f"{upstream.url}/{name}",
                                       api_key=UPSTREAM_KEY, models=["claude-*"])
        channels[name] = channel["id"]
    key = admin.create_key(name="k")

    def turn(source, n, t):
        headers, extra = SOURCES[source](n)
        with requests.Session() as session:
            resp = session.post(url(port, "/v1/messages"), json=turn_body(f"task {n}", t, **extra), timeout=30,
                                headers={"x-api-key": key["key"], "Connection": "close", **headers})
        assert resp.status_code == 200, resp.text

    homes = {}
    for source in sorted(SOURCES):
        for n in range(3 if source == "header" else 1):
            before = len(upstream.requests)
            for t in range(1, 9):
                turn(source, n, t)
            paths = served_by(upstream, before)
            assert len(paths) == 8 and len(set(paths)) == 1, (source, n, paths)
            homes[(source, n)] = paths[0]
    for n in range(30):  # 30 more sessions, two turns each
        before = len(upstream.requests)
        turn("header", 100 + n, 1)
        turn("header", 100 + n, 2)
        paths = served_by(upstream, before)
        assert len(set(paths)) == 1, paths
        homes[("spread", n)] = paths[0]
    assert len({home for (source, _), home in homes.items() if source == "spread"}) >= 2

    # a failing channel moves its session once; it stays moved after the channel recovers
    old = homes[("header", 0)]
    upstream.script(error_answer(529, "overloaded_error", "busy"), path=f"/{old}/v1/messages")
    before = len(upstream.requests)
    turn("header", 0, 9)
    tried = served_by(upstream, before)
    assert tried[0] == old and tried[1] != old
    for t in range(10, 16):
        turn("header", 0, t)
    assert served_by(upstream, before + 2) == [tried[1]] * 6

    # a disabled channel loses its sessions at once, in every worker
    victim = homes[("header", 1)]
    assert admin("PATCH", f"/admin/channels/{channels[victim]}", json={"enabled": False}).status_code == 200
    before = len(upstream.requests)
    for t in range(9, 13):
        turn("header", 1, t)
    now = served_by(upstream, before)
    assert victim not in now and len(set(now)) == 1

    # both workers followed conversations (each writes its own metrics file)
    per_worker = {}
    for path in metrics_dir.glob("counter_*.db"):
        per_worker[path.name] = sum(value for name, value, *_ in MmapedDict.read_all_values_from_file(str(path))
                                    if "octorelay_session_affinity" in name)
    assert len([t for t in per_worker.values() if t > 0]) == 2, per_worker


def test_outcomes_are_counted_in_the_metrics(client, key, three, upstream):
    def counted() -> dict:
        out = {}
        for line in client.get("/metrics").get_data(as_text=True).splitlines():
            if line.startswith("octorelay_session_affinity_total{"):
                name, value = line.rsplit(" ", 1)
                out[name.split('outcome="')[1].split('"')[0]] = float(value)
        return out

    before = counted()
    conversation(client, key, "header", 1, 3)
    after = counted()
    assert after.get("new", 0) - before.get("new", 0) == 1
    assert after.get("kept", 0) - before.get("kept", 0) == 2
