"""Which headers cross the relay (app/adaptors/anthropic.py upstream_headers; app/services/replies.py):
only anthropic-* from the client, the channel's key, and the upstream's request id on the way back."""
from __future__ import annotations

from app.adaptors.anthropic import DEFAULT_VERSION, upstream_headers
from app.services.replies import header, json_headers, stream_headers
from app.upstream.transport import UpstreamResponse

CLIENT = {
    "Authorization": "Bearer sk-octo-client", "X-Api-Key": "sk-octo-client", "Cookie": "s=1", "Host": "relay",
    "Connection": "keep-alive", "Transfer-Encoding": "chunked", "X-Forwarded-For": "203.0.113.1",
    "User-Agent": "claude-cli", "Anthropic-Beta": "tools-2024", "anthropic-version": "2023-01-01",
    "anthropic-admin-key": "sk-ant-admin", "anthropic-dangerous-direct-browser-access": "true",
}


def test_only_anthropic_headers_and_the_channel_key_go_upstream():
    out = upstream_headers(CLIENT, "sk-ant-channel")
    assert out == {
        "content-type": "application/json", "accept": "application/json", "accept-encoding": "identity",
        "anthropic-version": "2023-01-01", "anthropic-beta": "tools-2024",
        "anthropic-dangerous-direct-browser-access": "true", "x-api-key": "sk-ant-channel",
    }


def test_version_is_defaulted_and_no_key_means_no_x_api_key():
    out = upstream_headers({}, None)
    assert out["anthropic-version"] == DEFAULT_VERSION
    assert "x-api-key" not in out and "authorization" not in out


def test_the_client_key_never_reaches_the_upstream_even_without_a_channel_key():
    out = upstream_headers(CLIENT, None)
    assert "sk-octo-client" not in out.values() and "sk-ant-admin" not in out.values()


def response(headers: dict) -> UpstreamResponse:
    return UpstreamResponse(status=200, headers=headers, _chunks=iter(()))


def test_back_to_the_client_only_the_content_type_and_the_upstream_request_id():
    upstream = response({"Content-Type": "application/json", "Request-Id": "req_up_1", "Set-Cookie": "x=1",
                          "anthropic-organization-id": "org-1", "Server": "envoy"})
    assert json_headers(upstream) == {"content-type": "application/json", "upstream-request-id": "req_up_1"}
    assert stream_headers(upstream) == {"content-type": "text/event-stream; charset=utf-8",
                                        "cache-control": "no-cache", "x-accel-buffering": "no",
                                        "upstream-request-id": "req_up_1"}


def test_bedrocks_request_id_header_is_used_when_anthropics_is_absent():
    assert json_headers(response({"x-amzn-RequestId": "amzn-1"}))["upstream-request-id"] == "amzn-1"
    assert header({"X-Amzn-Requestid": "amzn-2"}, "x-amzn-requestid") == "amzn-2"
