"""OCTORELAY_UPSTREAM_HTTPS_ONLY / OCTORELAY_UPSTREAM_HOSTS: where a (leaked) admin token may point channels."""
import pytest

from app.db import db, upgrade
from app.services.channels import UpstreamPolicy
from tests.support.admin import AdminClient
from tests.support.app import assert_error


@pytest.fixture
def strict(env, make_app):
    app = make_app({**env, "OCTORELAY_UPSTREAM_HTTPS_ONLY": "1",
                      "OCTORELAY_UPSTREAM_HOSTS": "api.anthropic.com,*.openai.azure.com"})
    upgrade(db.obj)
    return app.test_client()


@pytest.mark.parametrize("url, allowed", [
    ("https://api.anthropic.com", True),
    ("https://team.openai.azure.com/openai/v1", True),
    ("http://api.anthropic.com", False),            # not https
    ("https://169.254.169.254/latest", False),       # cloud metadata
    ("https://localhost:8443/v1", False),
    ("https://api.anthropic.com.evil.example", False),
])
def test_policy(url, allowed):
    policy = UpstreamPolicy(True, ("api.anthropic.com", "*.openai.azure.com"))
    assert (policy.refusal(url) is None) is allowed


def test_admin_cannot_point_a_channel_outside_the_policy(strict):
    admin = AdminClient(strict)
    body = {"name": "x", "type": "openai", "models": ["m"], "base_url": "http://10.0.0.5:8000/v1"}
    assert_error(admin.post("/admin/channels", json=body), 400, "invalid_request_error", contains="base_url:")
    ok = admin.post("/admin/channels", json={"name": "a", "type": "anthropic", "models": ["claude-*"]})
    assert ok.status_code == 201  # the default https://api.anthropic.com is allowed
    channel_id = ok.get_json()["id"]
    assert_error(admin.patch(f"/admin/channels/{channel_id}", json={"base_url": "https://127.0.0.1"}),
                 400, "invalid_request_error", contains="OCTORELAY_UPSTREAM_HOSTS")
    assert admin.post("/admin/channels", json={"name": "m", "type": "mock", "models": ["x"]}).status_code == 201


def test_channels_made_before_the_policy_are_not_used(env, admin, upstream, make_app):
    from tests.support.app import anthropic_channel

    anthropic_channel(admin, upstream)  # http://127.0.0.1:PORT, made without a policy
    key = admin.create_key(name="k")
    strict = make_app({**env, "OCTORELAY_UPSTREAM_HTTPS_ONLY": "1"}).test_client()
    resp = strict.post("/v1/messages", headers={"x-api-key": key["key"]},
                       json={"model": "claude-sonnet-4-6", "max_tokens": 5,
                             "messages": [{"role": "user", "content": "hi"}]})
    assert_error(resp, 404, "not_found_error")
    assert upstream.requests == []
