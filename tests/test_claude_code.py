"""Claude Code itself (`claude -p`) through the relay to a scripted upstream.

The binary comes from npm (`.ci/run` installs it into .ci/node); without it
the test skips, unless OCTORELAY_REQUIRE_CLAUDE=1 (as in CI) makes that a failure.
"""
import os
import subprocess
from pathlib import Path

import pytest

from tests.upstream import anthropic_message, anthropic_stream_events, json_answer, sse_answer

from .conftest import UPSTREAM_KEY, anthropic_channel

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
CANDIDATES = [
    os.environ.get("OCTORELAY_CLAUDE_BIN", ""),
    str(REPO / ".ci/node/node_modules/@anthropic-ai/claude-code-linux-x64/claude"),
    str(REPO / "node_modules/@anthropic-ai/claude-code-linux-x64/claude"),
]
REPLY = "pong from the scripted upstream"


@pytest.fixture
def claude_bin():
    for path in CANDIDATES:
        if path and os.access(path, os.X_OK):
            return path
    if os.environ.get("OCTORELAY_REQUIRE_CLAUDE") == "1":
        pytest.fail("Claude Code is required here but not installed (npm install @anthropic-ai/claude-code)")
    pytest.skip("Claude Code not installed (npm install --ignore-scripts @anthropic-ai/claude-code)")


def answer(request):
    body = request.json()
    if body.get("stream"):
        return sse_answer(anthropic_stream_events([REPLY[:10], REPLY[10:]], model=body["model"]))
    return json_answer(anthropic_message(REPLY, model=body["model"]))


@pytest.mark.parametrize("auth_var", ["ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN"])
def test_claude_print_mode_through_the_relay(claude_bin, live, admin, upstream, tmp_path, auth_var):
    anthropic_channel(admin, upstream)
    key = admin.create_key(name="claude-code")["key"]
    upstream.set_default(answer)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "CLAUDE"))}
    env.update({"HOME": str(tmp_path), "ANTHROPIC_BASE_URL": live, auth_var: key,
                "DISABLE_TELEMETRY": "1", "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
                "DISABLE_AUTOUPDATER": "1"})
    done = subprocess.run([claude_bin, "-p", "say hi"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stdout + done.stderr
    assert REPLY in done.stdout

    turns = [r for r in upstream.requests if r.path == "/v1/messages"]
    assert turns, [r.path for r in upstream.requests]
    seen = turns[-1]
    assert seen.headers["x-api-key"] == UPSTREAM_KEY
    assert key not in repr(dict(seen.headers)) and key.encode() not in seen.body
    assert seen.headers["anthropic-version"] == "2023-06-01"
    assert seen.headers.get("anthropic-beta")  # Claude Code's betas pass through
    body = seen.json()
    assert body["stream"] is True and body["messages"] and body.get("tools") and body.get("system")

    logs = admin.get(f"/admin/logs?limit=10").get_json()["data"]
    assert any(row["status"] == 200 and row["stream"] for row in logs)
