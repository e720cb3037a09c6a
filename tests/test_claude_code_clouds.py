"""Claude Code (`claude -p`) through bedrock and vertex channels, each against its loopback fake."""
import pytest

from tests.support.app import wait_for_row
from tests.support.claude_code import REPLY, claude_says_the_reply
from tests.support.clouds import (FakeBedrock, FakeVertex, anthropic_events, bedrock_frames,
                                  event_stream_answer)
from tests.support.constants import SECRETS_USED
from tests.support.upstream import anthropic_message, anthropic_stream_events, json_answer, sse_answer

pytestmark = pytest.mark.slow


def test_claude_code_through_a_bedrock_channel(claude_bin, live, admin, upstream, tmp_path):  # noqa: F811
    fake = FakeBedrock()
    SECRETS_USED.add(fake.secret)

    def respond(call):
        if call.stream:
            return event_stream_answer(bedrock_frames(anthropic_events([REPLY[:10], REPLY[10:]], model=call.model)))
        return json_answer(anthropic_message(REPLY, model=call.model))

    fake.respond = respond
    upstream.set_default(fake)
    admin.create_channel(name="aws", type="bedrock", base_url=upstream.url, options={"region": fake.region},
                         credentials={"aws_access_key_id": fake.key_id, "aws_secret_access_key": fake.secret,
                                      "aws_session_token": fake.session_token}, models=["claude-*"])
    claude_says_the_reply(claude_bin, live, "ANTHROPIC_API_KEY", admin.create_key(name="cc")["key"], tmp_path)
    turns = [c for c in fake.calls if c.stream]
    assert turns and not fake.refusals
    body = turns[-1].body
    assert body["anthropic_version"] == "bedrock-2023-05-31" and body["anthropic_beta"]  # Claude Code's betas
    assert "model" not in body and "stream" not in body and body.get("tools") and body.get("system")
    wait_for_row()


def test_claude_code_through_a_vertex_channel(claude_bin, live, admin, upstream, tmp_path):  # noqa: F811
    fake = FakeVertex(upstream.url)

    def respond(call):
        if call.count_tokens:
            return json_answer({"input_tokens": 100})
        if call.method == "streamRawPredict":
            return sse_answer(anthropic_stream_events([REPLY[:10], REPLY[10:]], model=call.model))
        return json_answer(anthropic_message(REPLY, model=call.model))

    fake.respond = respond
    upstream.set_default(fake)
    admin.create_channel(name="gcp", type="vertex", base_url=upstream.url,
                         options={"project_id": fake.project, "region": "global"},
                         credentials=fake.service_account, models=["claude-*"])
    claude_says_the_reply(claude_bin, live, "ANTHROPIC_AUTH_TOKEN", admin.create_key(name="cc")["key"], tmp_path)
    turns = [c for c in fake.calls if c.method == "streamRawPredict"]
    assert turns and not fake.refusals and fake.token_requests == 1
    assert turns[-1].body["anthropic_version"] == "vertex-2023-10-16" and turns[-1].request.headers["anthropic-beta"]
    wait_for_row()
