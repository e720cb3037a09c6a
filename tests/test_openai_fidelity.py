"""openai channels as a real Anthropic client sees them: structured output, usage when the upstream
sends none, the input count at the start of a stream, mid-stream error codes, deep nesting.

Every test goes through the loopback upstream (tests/upstream.py) and, where the client sees the
difference, through the official `anthropic` SDK.
"""
import json

import pytest

from tests.upstream import json_answer, sse_answer

from .conftest import UPSTREAM_KEY, wait_for_row
from .test_relay_openai import MODEL, chunk, completion, done, text_stream

anthropic = pytest.importorskip("anthropic")


@pytest.fixture
def openai_channel(admin, upstream):
    return admin.create_channel(name="llama", type="openai", base_url=upstream.url + "/v1",
                                api_key=UPSTREAM_KEY, models=["llama-*"])


@pytest.fixture
def key(admin):
    return admin.create_key(name="k")


@pytest.fixture
def sdk(live, key):
    return anthropic.Anthropic(api_key=key["key"], base_url=live, max_retries=0)


# --------------------------------------------------------------------------- mid-stream errors


@pytest.mark.parametrize("error, expected", [
    ({"message": "Rate limit reached", "type": "tokens", "code": "429"}, "rate_limit_error"),
    ({"message": "Rate limit reached", "code": 429}, "rate_limit_error"),
    ({"message": "slow down", "status": "RESOURCE_EXHAUSTED", "code": "8"}, "rate_limit_error"),
    ({"message": "busy", "type": "server_error", "code": "503"}, "overloaded_error"),
    ({"message": "bad key", "type": "invalid_request_error", "code": "invalid_api_key"}, "authentication_error"),
    ({"message": "boom", "type": "server_error", "code": None}, "api_error"),
])
def test_mid_stream_error_codes_as_strings_or_numbers(sdk, upstream, openai_channel, error, expected):
    events = text_stream(["partial "], usage=False)[:2]
    events.append((None, {"error": error}))
    upstream.script(sse_answer(events))
    with pytest.raises(anthropic.APIStatusError) as err:
        with sdk.messages.stream(model=MODEL, max_tokens=64,
                                 messages=[{"role": "user", "content": "Hi"}]) as stream:
            for _ in stream.text_stream:
                pass
    assert err.value.body["error"]["type"] == expected
    assert wait_for_row().error_type == expected
