"""Settlements survive a database that is away for a moment: spooled, then written once."""
import json

import pytest

from app.db import db
from app.models import ApiKey, RequestLog
from app.services.spool import Spool
from app.state import services
from tests.support.app import anthropic_channel
from tests.support.bodies import messages_body
from tests.support.upstream import anthropic_message, json_answer

BODY = messages_body(max_tokens=10)
USAGE = {"input_tokens": 100, "output_tokens": 10}


def spooled_row(n: int, **fields) -> dict:
    return {"request_id": f"req_{n}", "key_id": 1, "channel_id": 1, "model": "claude-sonnet-4-6",
            "stream": False, "status": 200, "error_type": None, "ttft_ms": 5, "attempts": 1,
            "client_disconnected": False, "latency_ms": 9, "upstream_model": None,
            "created_at": "2026-12-06T00:00:00", "input_tokens": n, "output_tokens": 1,
            "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0, **fields}


def test_spool_keeps_what_the_writer_refuses(tmp_path):
    spool = Spool(str(tmp_path / "s.jsonl"))
    assert not spool.pending()
    for i in range(3):
        spool.add(spooled_row(i))
    assert spool.pending()
    seen = []

    def flaky(row):
        if row["input_tokens"] == 1:
            raise RuntimeError("still down")
        seen.append(row["input_tokens"])

    assert spool.drain(flaky) == 1  # stops at the first refusal, keeps order
    assert seen == [0]
    assert [json.loads(line)["input_tokens"] for line in open(spool.path)] == [1, 2]
    assert spool.drain(lambda row: seen.append(row["input_tokens"])) == 2
    assert seen == [0, 1, 2] and not spool.pending()


def test_forged_spool_rows_are_set_aside_never_written(tmp_path):
    """Whoever can write the spool must not refund a key with a negative usage, or slip in junk."""
    spool = Spool(str(tmp_path / "s.jsonl"))
    spool.add(spooled_row(1, input_tokens=-1_000_000))
    spool.add(spooled_row(2, key_id="1; DROP TABLE api_key"))
    with open(spool.path, "a") as fh:
        fh.write("not json\n")
    spool.add(spooled_row(3))
    written = []
    assert spool.drain(written.append) == 1
    assert [row["request_id"] for row in written] == ["req_3"]
    assert len(open(spool.path + ".rejected").read().splitlines()) == 3 and not spool.pending()


def test_the_spool_never_follows_a_link(tmp_path):
    target = tmp_path / "victim"
    target.write_text("precious\n")
    (tmp_path / "s.jsonl").symlink_to(target)
    spool = Spool(str(tmp_path / "s.jsonl"))
    with pytest.raises(OSError):
        spool.add(spooled_row(1))
    assert target.read_text() == "precious\n"


def test_the_default_spool_folder_is_private(tmp_path, monkeypatch):
    import os
    import stat
    import tempfile

    from app.config import ConfigError
    from app.services.spool import spool_path

    monkeypatch.setattr(tempfile, "gettempdir", lambda: str(tmp_path))
    path = spool_path("sqlite:///x.db")
    folder = os.path.dirname(path)
    assert stat.S_IMODE(os.stat(folder).st_mode) == 0o700 and folder.startswith(str(tmp_path))
    os.chmod(folder, 0o777)  # someone loosened it (or made it first): refuse
    with pytest.raises(ConfigError):
        spool_path("sqlite:///x.db")


def test_a_settlement_during_an_outage_is_written_later_exactly_once(client, admin, upstream):
    anthropic_channel(admin, upstream)
    upstream.set_default(json_answer(anthropic_message(usage=USAGE)))
    key = admin.create_key(name="k")
    headers = {"x-api-key": key["key"]}
    assert client.post("/v1/messages", json=BODY, headers=headers).status_code == 200  # warms the key cache

    db.execute_sql("ALTER TABLE request_log RENAME TO request_log_away")  # the table is unreachable
    try:
        resp = client.post("/v1/messages", json=BODY, headers=headers)
        assert resp.status_code == 200  # the client still gets its answer
    finally:
        db.execute_sql("ALTER TABLE request_log_away RENAME TO request_log")
    spool = services(client.application).relay.ledger.spool
    assert spool.pending()
    assert RequestLog.select().count() == 1 and ApiKey.get_by_id(key["id"]).used_tokens == 110

    assert client.post("/v1/messages", json=BODY, headers=headers).status_code == 200
    assert not spool.pending()
    rows = list(RequestLog.select())
    assert len(rows) == 3 and len({r.request_id for r in rows}) == 3
    assert rows[1].request_id == resp.headers["request-id"] or resp.headers["request-id"] in {
        r.request_id for r in rows}
    charged = ApiKey.get_by_id(key["id"])
    assert charged.used_tokens == 3 * 110
    assert charged.used_nanos == sum(r.cost_nanos for r in rows)

    spool.add({**json.loads(json.dumps({"request_id": resp.headers["request-id"]})),
               "key_id": key["id"], "channel_id": None, "model": "claude-sonnet-4-6", "stream": False,
               "status": 200, "error_type": None, "ttft_ms": 1, "attempts": 1,
               "client_disconnected": False, "latency_ms": 1, "upstream_model": None,
               "created_at": "2026-01-01T00:00:00", **USAGE,
               "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0})
    assert client.post("/v1/messages", json=BODY, headers=headers).status_code == 200
    assert RequestLog.select().count() == 4  # the replayed duplicate was skipped, not charged twice
    assert ApiKey.get_by_id(key["id"]).used_tokens == 4 * 110


def test_a_quiet_worker_writes_what_it_spooled_without_waiting_for_a_request(client, admin, upstream):
    """The writer, idle, writes the spool once the database takes it again: the row and charge of
    a request settled during an outage appear although no other request comes."""
    from tests.support.waiting import wait_until

    writer = services(client.application).relay.ledger.writer
    writer.idle_s = 0.2  # IDLE_S is 5 s; the writer reads it before each wait
    anthropic_channel(admin, upstream)
    upstream.set_default(json_answer(anthropic_message(usage=USAGE)))
    key = admin.create_key(name="k")
    headers = {"x-api-key": key["key"]}
    assert client.post("/v1/messages", json=BODY, headers=headers).status_code == 200  # warms the key cache

    spool = services(client.application).relay.ledger.spool
    db.execute_sql("ALTER TABLE request_log RENAME TO request_log_away")
    try:
        resp = client.post("/v1/messages", json=BODY, headers=headers)
        assert resp.status_code == 200 and spool.pending()
        assert not wait_until(lambda: not spool.pending(), 1.0)  # idle retries while it is away keep it
    finally:
        db.execute_sql("ALTER TABLE request_log_away RENAME TO request_log")
    assert wait_until(lambda: not spool.pending(), 5.0)
    row = RequestLog.get(RequestLog.request_id == resp.headers["request-id"])
    assert (row.input_tokens, row.output_tokens, row.status) == (100, 10, 200)
    assert ApiKey.get_by_id(key["id"]).used_tokens == 2 * 110
