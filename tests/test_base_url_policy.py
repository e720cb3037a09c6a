"""A channel's `base_url` cannot be bent (issue 22, item 3).

It used to be stored as given and joined by string concatenation: a `?` or `#` in it made the
relay's own path a query string or a fragment, so the request (with the channel's key) could go
to any path of any host, and link-local or cloud-metadata addresses were allowed by default.
Now it is parsed when written (400 naming the part), stored normalised, joined as a path, and
link-local and metadata addresses are refused unless OCTORELAY_UPSTREAM_ALLOW_LINK_LOCAL=1.
Channels stored before the rule are skipped with a log line. Loopback stays allowed: every
relay test points its channels at a loopback upstream.
"""
from __future__ import annotations

import logging

import pytest

from app.adaptors.base import join_url
from app.db import db, upgrade
from app.models import Channel
from app.services.upstream_policy import UpstreamPolicy
from tests.support.admin import AdminClient
from tests.support.app import anthropic_channel, assert_error
from tests.support.bodies import messages_body
from tests.support.constants import UPSTREAM_KEY
from tests.support.upstream import anthropic_message, json_answer

BODY = messages_body("claude-sonnet-4-5", 5)

REFUSED = {  # base_url -> what the 400 must name
    "http://127.0.0.1:9/elsewhere?": "query",
    "http://127.0.0.1:9/other?to=": "query",
    "http://127.0.0.1:9/other#": "fragment",
    "https://attacker.example/#": "fragment",
    "https://user:secret@api.example.com": "userinfo",
    "https://api.anthropic.com@evil.example": "userinfo",
    "file:///etc/passwd": "scheme file:",
    "ftp://api.example.com": "scheme ftp:",
    "gopher://127.0.0.1:6379/_INFO": "scheme gopher:",
    "//api.example.com": "scheme (none)",
    "http://": "has no host",
    "http:///v1": "has no host",
    "http://api.example.com:99999": "not a valid URL",
    "http://api.example.com\\@evil.example": "backslash",
    "http://api.example.com /v1": "spaces",
    "http://169.254.169.254": "169.254.169.254",
    "http://169.254.169.254/latest/meta-data/": "169.254.169.254",
    "http://169.254.170.2/v2/credentials": "link-local",
    "http://[fd00:ec2::254]/latest": "fd00:ec2::254",
    "http://[fe80::1]/": "link-local",
    "http://[::ffff:169.254.169.254]/": "169.254.169.254",
    "http://[64:ff9b::a9fe:a9fe]/": "169.254.169.254",
    "http://2852039166/": "169.254.169.254",
    "http://0xa9fea9fe/": "169.254.169.254",
    "http://0251.0376.0251.0376/": "169.254.169.254",
    "http://169.254.43518/": "169.254.169.254",
    "http://metadata.google.internal/computeMetadata/v1": "metadata.google.internal",
    "http://METADATA.google.internal./": "metadata.google.internal",
    "http://metadata/": "'metadata'",
    "http://instance-data/latest": "instance-data",
    "http://100.100.100.200/latest/meta-data": "100.100.100.200",
}

ALLOWED = {  # base_url -> as stored
    "http://127.0.0.1:8080/v1/": "http://127.0.0.1:8080/v1",
    "http://localhost:11434/v1": "http://localhost:11434/v1",
    "http://[::1]:8080": "http://[::1]:8080",
    "http://10.0.0.5:8000/v1": "http://10.0.0.5:8000/v1",
    "HTTPS://API.Anthropic.COM/": "https://api.anthropic.com",
    "https://gateway.example.com/anthropic//": "https://gateway.example.com/anthropic",
    "http://ollama_host:11434/v1": "http://ollama_host:11434/v1",
}


@pytest.mark.parametrize("url", sorted(REFUSED))
def test_bent_and_metadata_base_urls_are_refused_when_written(admin, url):
    body = {"name": "x", "type": "openai", "models": ["m"], "base_url": url, "api_key": "k"}
    resp = admin.post("/admin/channels", json=body)
    error = assert_error(resp, 400, "invalid_request_error", contains="base_url: ")
    assert REFUSED[url] in error["error"]["message"], error["error"]["message"]
    assert Channel.select().count() == 0


@pytest.mark.parametrize("url", sorted(REFUSED))
def test_bent_and_metadata_base_urls_are_refused_on_update(admin, url):
    channel = admin.create_channel(name="a", type="anthropic", api_key="k", models=["claude-*"],
                                   base_url="http://127.0.0.1:9")
    resp = admin.patch(f"/admin/channels/{channel['id']}", json={"base_url": url})
    error = assert_error(resp, 400, "invalid_request_error", contains="base_url: ")
    assert REFUSED[url] in error["error"]["message"], error["error"]["message"]
    assert Channel.get_by_id(channel["id"]).base_url == "http://127.0.0.1:9"


@pytest.mark.parametrize("url", sorted(ALLOWED))
def test_loopback_private_and_public_upstreams_are_stored_normalised(admin, url):
    channel = admin.create_channel(name="a", type="openai", api_key="k", models=["m"], base_url=url)
    assert channel["base_url"] == ALLOWED[url]
    assert Channel.get_by_id(channel["id"]).base_url == ALLOWED[url]


def test_the_metadata_refusal_is_lifted_only_by_its_setting(env, make_app):
    app = make_app({**env, "OCTORELAY_UPSTREAM_ALLOW_LINK_LOCAL": "1"})
    upgrade(db.obj)
    admin = AdminClient(app.test_client())
    for url in ("http://169.254.169.254", "http://metadata.google.internal", "http://[fd00:ec2::254]"):
        resp = admin.post("/admin/channels", json={"name": url[7:20], "type": "openai", "models": ["m"],
                                                   "base_url": url, "api_key": "k"})
        assert resp.status_code == 201, resp.get_json()
    # the shape rules stay
    resp = admin.post("/admin/channels", json={"name": "q", "type": "openai", "models": ["m"],
                                               "base_url": "http://169.254.169.254/x?", "api_key": "k"})
    assert_error(resp, 400, "invalid_request_error", contains="query")


def test_vertex_token_uri_cannot_point_at_metadata(admin):
    from tests.support.clouds import FakeVertex

    credentials = {**FakeVertex("http://127.0.0.1:9").service_account,
                   "token_uri": "http://metadata.google.internal/token"}
    resp = admin.post("/admin/channels", json={"name": "v", "type": "vertex", "models": ["claude-*"],
                                               "options": {"project_id": "octo-test-project", "region": "us-east5"},
                                               "credentials": credentials})
    assert_error(resp, 400, "invalid_request_error", contains="credentials.token_uri: host 'metadata.google.internal'")


class Lines(logging.Handler):
    """What the routing logger says (octorelay's loggers do not propagate to pytest's caplog)."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record):
        self.records.append(record)


@pytest.mark.parametrize("stored", ["{up}/elsewhere?", "{up}/other#", "http://169.254.169.254",
                                    "http://user:pw@127.0.0.1:9", "http://metadata.google.internal"])
def test_channels_stored_before_the_rule_are_skipped_with_a_log_line(client, admin, upstream, stored):
    channel = anthropic_channel(admin, upstream)
    Channel.update(base_url=stored.format(up=upstream.url)).where(Channel.id == channel["id"]).execute()
    admin.patch(f"/admin/channels/{channel['id']}", json={"priority": 1})  # an admin write: caches reload
    key = admin.create_key(name="k")
    lines, logger = Lines(), logging.getLogger("octorelay.routing")
    logger.addHandler(lines)
    try:
        resp = client.post("/v1/messages", json=BODY, headers={"x-api-key": key["key"]})
    finally:
        logger.removeHandler(lines)
    assert_error(resp, 404, "not_found_error")
    assert upstream.requests == []
    skipped = [r for r in lines.records if r.getMessage() == "channel skipped by upstream policy"]
    assert skipped and skipped[0].fields["channel_id"] == channel["id"], [r.getMessage() for r in lines.records]


def test_the_relay_joins_paths_under_the_base_url(client, admin, upstream):
    admin.create_channel(name="gw", type="anthropic", base_url=upstream.url + "/gateway/", api_key=UPSTREAM_KEY,
                         models=["claude-*"])
    upstream.script(json_answer(anthropic_message("hello")))
    key = admin.create_key(name="k")
    resp = client.post("/v1/messages", json=BODY, headers={"x-api-key": key["key"], "anthropic-version": "2023-06-01"})
    assert resp.status_code == 200, resp.get_json()
    assert upstream.requests[-1].path == "/gateway/v1/messages"
    assert upstream.requests[-1].headers["x-api-key"] == UPSTREAM_KEY


@pytest.mark.parametrize("base, path, url", [
    ("http://h:1/p", "/v1/messages", "http://h:1/p/v1/messages"),
    ("http://h:1/p/", "v1/messages", "http://h:1/p/v1/messages"),
    ("http://h:1", "/chat/completions", "http://h:1/chat/completions"),
    ("http://h:1/p?x=", "/v1/messages", "http://h:1/p/v1/messages"),       # a stored query never survives
    ("http://h:1/p#", "/v1/messages", "http://h:1/p/v1/messages"),         # nor a fragment
])
def test_join_url(base, path, url):
    assert join_url(base, path) == url


def test_policy_without_dns_and_with_it():
    policy = UpstreamPolicy()
    assert policy.refusal("http://localhost:8080", resolve=True) is None  # resolves to loopback: allowed
    assert policy.refusal("http://169.254.169.254") is not None
    assert UpstreamPolicy(allow_link_local=True).refusal("http://169.254.169.254") is None
