"""Session-affinity helpers shared by tests/test_affinity.py and tests/test_affinity_redis.py: a
conversation's turns, which channel path served each, the log rows' affinity column, an app with
extra settings."""
from __future__ import annotations

import json

from app import create_app
from app.db import db, upgrade
from app.models import RequestLog
from tests.support.app import SettlingClient

MODEL = "claude-sonnet-4-5"
TOOLS = [{"name": "Read", "description": "Read a file", "input_schema": {"type": "object"}}]
SYSTEM = [{"type": "text", "text": "You are a coding agent.", "cache_control": {"type": "ephemeral"}}]


def turn_body(first: str, turns: int, **extra) -> dict:
    """Turn `turns` of a conversation that began with `first`: the history grows each turn."""
    messages = [{"role": "user", "content": first}]
    for i in range(1, turns):
        messages += [{"role": "assistant", "content": f"answer {i}"}, {"role": "user", "content": f"next {i}"}]
    return {"model": MODEL, "max_tokens": 64, "system": SYSTEM, "tools": TOOLS, "messages": messages, **extra}


def post(client, key, body, headers=None):
    return client.post("/v1/messages", data=json.dumps(body), headers={
        "x-api-key": key["key"], "content-type": "application/json", **(headers or {})})


def served_by(upstream, since: int = 0) -> list[str]:
    """Which channel path each upstream request went to, in order."""
    return [r.path.split("/")[1] for r in upstream.requests[since:]]


def affinity_column() -> list[str | None]:
    return [row.affinity for row in RequestLog.select().order_by(RequestLog.id)]


def app_with(env, **extra):
    app = create_app({**env, **extra})
    app.test_client_class = SettlingClient
    upgrade(db.obj)
    return app
