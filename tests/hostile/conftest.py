"""Fixtures of the in-process hostile-input tests: the relay with one channel and one key, and
the admin API on raw bytes."""
from __future__ import annotations

import pytest

from tests.hostile.harness import AdminAPI, Relay, _upstream_answer
from tests.support.app import anthropic_channel
from tests.support.upstream import json_answer


@pytest.fixture
def admin_api(admin) -> AdminAPI:
    return AdminAPI(admin)


@pytest.fixture
def relay(app, client, admin, upstream) -> Relay:
    channel = anthropic_channel(admin, upstream, models=["*"])
    api = AdminAPI(admin)
    key = api.create_key(name="hostile")["key"]
    upstream.set_default(_upstream_answer)
    upstream.set_default(json_answer({"input_tokens": 7}), path="/v1/messages/count_tokens")
    return Relay(app, client, api, upstream, key, channel["id"])
