"""Settlements survive a database that is away for a moment: spooled, then written once."""
import json

from app.db import db
from app.models import ApiKey, RequestLog
from app.services.accounting import Spool
from tests.upstream import anthropic_message, json_answer

from .conftest import anthropic_channel

BODY = {"model": "claude-sonnet-4-6", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}
USAGE = {"input_tokens": 100, "output_tokens": 10}


def test_spool_keeps_what_the_writer_refuses(tmp_path):
    spool = Spool(str(tmp_path / "s.jsonl"))
    assert not spool.pending()
    for i in range(3):
        spool.add({"n": i})
    assert spool.pending()
    seen = []

    def flaky(row):
        if row["n"] == 1:
            raise RuntimeError("still down")
        seen.append(row["n"])

    assert spool.drain(flaky) == 1  # stops at the first refusal, keeps order
    assert seen == [0]
    assert [json.loads(line)["n"] for line in open(spool.path)] == [1, 2]
    assert spool.drain(lambda row: seen.append(row["n"])) == 2
    assert seen == [0, 1, 2] and not spool.pending()


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
    spool = client.application.extensions["octorelay.relay"].ledger.spool
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
