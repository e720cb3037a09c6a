"""The channel-type registry: what each type takes (admin API, CLI), what is shown, what is kept secret."""
import json
import pathlib

import pytest

from app.channel_types import CHANNEL_TYPES
from app.models import Channel
from app.state import services
from tests.support.app import assert_error
from tests.support.clouds import AWS_KEY_ID, AWS_SECRET, FakeVertex
from tests.support.constants import SECRETS_USED

SECRETS_USED.add(AWS_SECRET)
AWS = {"aws_access_key_id": AWS_KEY_ID, "aws_secret_access_key": AWS_SECRET}
APP = pathlib.Path(__file__).resolve().parent.parent / "app"


@pytest.fixture(scope="module")
def service_account():
    return FakeVertex("http://127.0.0.1:9").service_account


def bedrock(**fields):
    return {"name": "aws", "type": "bedrock", "options": {"region": "eu-west-1"}, "credentials": AWS,
            "models": ["claude-*"], **fields}


def test_credentials_are_write_only_and_encrypted_options_are_shown(admin):
    created = admin.create_channel(**bedrock())
    assert created["options"] == {"region": "eu-west-1"} and created["credentials"] == "set"
    assert created["base_url"] == "https://bedrock-runtime.eu-west-1.amazonaws.com"  # the region's default
    listed = admin.get("/admin/channels").get_json()["data"][0]
    for shown in (created, listed, admin.get(f"/admin/channels/{created['id']}").get_json()):
        assert AWS_SECRET not in json.dumps(shown)
    row = Channel.get()
    assert row.credentials_enc and AWS_SECRET not in row.credentials_enc and AWS_KEY_ID not in row.credentials_enc
    assert row.base_url is None  # the default stays out of the row


def test_a_patch_without_credentials_keeps_them_and_null_clears_them(admin):
    channel = admin.create_channel(**bedrock(api_key="ABSK-bedrock-api-key-000000000000"))
    resp = admin.patch(f"/admin/channels/{channel['id']}", json={"options": {"region": "us-west-2"}})
    assert resp.status_code == 200 and resp.get_json()["credentials"] == "set"
    assert resp.get_json()["base_url"] == "https://bedrock-runtime.us-west-2.amazonaws.com"
    resp = admin.patch(f"/admin/channels/{channel['id']}", json={"credentials": None})
    assert resp.status_code == 200 and resp.get_json()["credentials"] is None  # the API key still authenticates
    assert_error(admin.patch(f"/admin/channels/{channel['id']}", json={"api_key": None}), 400,
                 "invalid_request_error", contains="credentials: required for bedrock")


@pytest.mark.parametrize("fields, field", [
    ({"options": {}}, "options.region: required"),
    ({"options": {"region": "Mars 1"}}, "options.region"),
    ({"options": {"region": "us-east-1", "zone": "a"}}, "options.zone"),
    ({"credentials": None}, "credentials: required"),
    ({"credentials": {"aws_access_key_id": AWS_KEY_ID}}, "credentials.aws_secret_access_key"),
    ({"credentials": {**AWS, "password": "x"}}, "credentials.password"),
])
def test_bedrock_fields_are_checked(admin, fields, field):
    assert_error(admin.post("/admin/channels", json=bedrock(**fields)), 400, "invalid_request_error", contains=field)
    assert Channel.select().count() == 0


def test_vertex_needs_project_region_and_a_service_account(admin, service_account):
    body = {"name": "gcp", "type": "vertex", "models": ["claude-*"], "credentials": service_account,
            "options": {"project_id": "octo-test-project", "region": "global"}}
    assert_error(admin.post("/admin/channels", json={**body, "options": {"region": "us-east5"}}), 400,
                 "invalid_request_error", contains="options.project_id")
    assert_error(admin.post("/admin/channels", json={**body, "credentials": {**service_account, "type": "user"}}),
                 400, "invalid_request_error", contains="credentials.type")
    assert_error(admin.post("/admin/channels", json={**body, "api_key": "sk-not-for-vertex-000000"}), 400,
                 "invalid_request_error", contains="api_key")
    created = admin.create_channel(**body)
    assert created["base_url"] == "https://aiplatform.googleapis.com" and created["credentials"] == "set"
    assert service_account["private_key"].splitlines()[1] not in json.dumps(created)


def test_other_types_take_no_options_or_credentials(admin):
    assert_error(admin.post("/admin/channels", json={"name": "a", "type": "anthropic", "models": ["claude-*"],
                                                     "credentials": AWS}), 400, "invalid_request_error",
                 contains="credentials: anthropic channels take no credentials")
    assert_error(admin.post("/admin/channels", json={"name": "a", "type": "mock", "models": ["claude-*"],
                                                     "options": {"region": "x"}}), 400, "invalid_request_error",
                 contains="options.region")


def test_the_token_uri_is_under_the_upstream_policy(env, service_account):
    from app import create_app
    from app.db import db, upgrade

    app = create_app({**env, "OCTORELAY_UPSTREAM_HOSTS": "*.googleapis.com"})
    upgrade(db.obj)
    from tests.support.admin import AdminClient

    admin = AdminClient(app.test_client())
    resp = admin.post("/admin/channels", json={
        "name": "gcp", "type": "vertex", "models": ["claude-*"], "credentials": service_account,
        "options": {"project_id": "octo-test-project", "region": "us-east5"}})
    assert_error(resp, 400, "invalid_request_error", contains="credentials.token_uri")
    services(app).close()


def test_the_schema_the_dashboard_and_the_cli_list_the_registry(admin, client, runner):  # noqa: F811
    assert_error(admin.post("/admin/channels", json={"name": "x", "type": "azure", "models": ["m"]}), 400,
                 "invalid_request_error", contains="type")
    page = client.get("/dashboard/channels").get_data(as_text=True)
    for name in CHANNEL_TYPES:
        assert f'<option value="{name}"' in page
    help_text = runner("channels", "add", "--help").output
    for name in CHANNEL_TYPES:
        assert name in help_text


def test_only_the_mock_modules_name_the_mock_type():
    """Issue 15: a type is defined in one place (its registration, app/channel_types/mock.py, and its
    transport, app/upstream/mock.py); no `== "mock"` branches elsewhere. bootstrap.py creates the demo
    channel on a first start without an Anthropic key."""
    offenders = [str(p.relative_to(APP)) for p in APP.rglob("*.py")
                 if '"mock"' in p.read_text() and p.name not in ("mock.py", "bootstrap.py")]
    assert offenders == []


def test_cli_adds_a_bedrock_channel_from_a_credentials_file(runner, tmp_path):  # noqa: F811
    runner.ok("db", "upgrade")
    path = tmp_path / "aws.json"
    path.write_text(json.dumps(AWS))
    made = runner.json("channels", "add", "--name", "aws", "--type", "bedrock", "--region", "us-east-1",
                       "--credentials-file", str(path), "--model", "claude-*",
                       "--map", "claude-sonnet-4-5=us.anthropic.claude-sonnet-4-5-20250929-v1:0", "--json")
    assert made["options"] == {"region": "us-east-1"} and made["credentials"] == "set"
    assert AWS_SECRET not in json.dumps(made)
    updated = runner.json("channels", "update", str(made["id"]), "--region", "eu-central-1", "--json")
    assert updated["base_url"] == "https://bedrock-runtime.eu-central-1.amazonaws.com"
    assert "credentials" in runner.fail("channels", "add", "--name", "b", "--type", "bedrock", "--region",
                                        "us-east-1", "--model", "claude-*")


def test_cli_adds_a_vertex_channel(runner, tmp_path, service_account):  # noqa: F811
    runner.ok("db", "upgrade")
    path = tmp_path / "sa.json"
    path.write_text(json.dumps(service_account))
    made = runner.json("channels", "add", "--name", "gcp", "--type", "vertex", "--project-id", "octo-test-project",
                       "--region", "us-east5", "--credentials-file", str(path), "--model", "claude-*", "--json")
    assert made["base_url"] == "https://us-east5-aiplatform.googleapis.com"
    assert made["options"] == {"project_id": "octo-test-project", "region": "us-east5"}
