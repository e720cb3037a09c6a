"""The OpenAI adaptor, downward: an upstream's error answer in Anthropic's shape."""
from __future__ import annotations

import json

import anthropic
import pytest

from tests.adaptors.openai.support import ADAPTOR
from tests.support.upstream import BodyAnswer


@pytest.mark.parametrize("status, out_status, error_type", [
    (400, 400, "invalid_request_error"), (401, 401, "authentication_error"), (403, 403, "permission_error"),
    (404, 404, "not_found_error"), (413, 413, "request_too_large"), (422, 400, "invalid_request_error"),
    (429, 429, "rate_limit_error"), (500, 500, "api_error"), (502, 502, "overloaded_error"),
    (503, 503, "overloaded_error"), (504, 504, "timeout_error"), (418, 418, "invalid_request_error"),
    (507, 507, "api_error"),
])
def test_error_statuses(status, out_status, error_type):
    body = json.dumps({"error": {"message": "boom", "type": "x", "param": None, "code": None}}).encode()
    got_status, got_body = ADAPTOR.translate_error(status, body)
    assert got_status == out_status
    assert json.loads(got_body) == {"type": "error", "error": {"type": error_type, "message": "boom"}}


@pytest.mark.parametrize("body, message", [
    (b'{"error": {"message": "This model\'s maximum context length is 8192 tokens", '
     b'"type": "invalid_request_error", "code": "context_length_exceeded"}}',
     "This model's maximum context length is 8192 tokens"),
    (b'{"error": "model \\"llama9\\" not found, try pulling it first"}',
     'model "llama9" not found, try pulling it first'),
    (b'{"detail": [{"loc": ["body", "messages"], "msg": "field required", "type": "missing"}]}',
     "body.messages: field required"),
    (b'{"detail": "Not Found"}', "Not Found"),
    (b'{"message": "quota exceeded"}', "quota exceeded"),
    (b"<html><body>Bad Gateway</body></html>", "the upstream failed"),
    (b"", "the upstream failed"),
    (b"upstream connect error", "upstream connect error"),
    (b'{"error": {"code": 500}}', "the upstream failed"),
])
def test_error_messages(body, message):
    _, out = ADAPTOR.translate_error(500 if b"context" not in body else 400, body)
    assert json.loads(out)["error"]["message"] == message


def test_error_messages_never_carry_keys():
    body = json.dumps({"error": {"message": "Incorrect API key provided: sk-proj-AbCdEfGhIjKlMnOpQrSt. "
                                            "Sent header Authorization: Bearer sk-upstream-secret-123456"}})
    _, out = ADAPTOR.translate_error(401, body.encode())
    assert b"AbCdEfGhIjKlMnOpQrSt" not in out and b"secret-123456" not in out
    assert json.loads(out)["error"]["type"] == "authentication_error"


def test_huge_error_messages_are_cut():
    _, out = ADAPTOR.translate_error(400, json.dumps({"error": {"message": "x" * 50000}}).encode())
    assert len(json.loads(out)["error"]["message"]) <= 1001


def test_the_sdk_reads_a_translated_error(upstream):
    status, body = ADAPTOR.translate_error(429, b'{"error": {"message": "slow down", "type": "requests"}}')
    upstream.script(BodyAnswer(body, status=status, headers={"Content-Type": "application/json"}))
    client = anthropic.Anthropic(base_url=upstream.url, api_key="k", max_retries=0)
    with pytest.raises(anthropic.RateLimitError) as info:
        client.messages.create(model="claude-x", max_tokens=10, messages=[{"role": "user", "content": "hi"}])
    assert info.value.body["error"]["type"] == "rate_limit_error"
