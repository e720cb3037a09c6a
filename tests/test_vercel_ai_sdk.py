"""The Vercel AI SDK (`ai` + `@ai-sdk/anthropic`, from npm) streaming through the relay.

It reads a stream's input count from `message_start` (older versions only there), so a translated
stream must put its best known count there. The packages come from npm (`.ci/run` installs them
into .ci/node); without them these tests skip, unless OCTORELAY_REQUIRE_CLAUDE=1 (as in CI) makes
that a failure.
"""
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from app.adaptors import estimate_input_tokens
from tests.support.app import wait_for_row
from tests.support.constants import UPSTREAM_KEY
from tests.support.openai import MODEL, done, text_stream

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
SCRIPT = Path(__file__).resolve().parent / "support" / "clients" / "vercel_ai_stream.cjs"
CANDIDATES = [os.environ.get("OCTORELAY_NODE_MODULES", ""), str(REPO / ".ci/node/node_modules"),
              str(REPO / "node_modules")]
PROMPT = "Tell me about the sea. " * 30


@pytest.fixture
def ai_sdk():
    """(node binary, node_modules folder holding `ai` and `@ai-sdk/anthropic`)."""
    node = shutil.which("node")
    for folder in CANDIDATES:
        if node and folder and all((Path(folder) / name / "package.json").is_file()
                                   for name in ("ai", "@ai-sdk/anthropic")):
            return node, folder
    message = ("the Vercel AI SDK is not installed (npm install --ignore-scripts --prefix .ci/node "
               "ai @ai-sdk/anthropic)")
    if os.environ.get("OCTORELAY_REQUIRE_CLAUDE") == "1":
        pytest.fail(message)
    pytest.skip(message)


def stream_text(ai_sdk, base_url: str, key: str) -> dict:
    node, modules = ai_sdk
    env = {"PATH": os.environ.get("PATH", ""), "NODE_PATH": modules, "HOME": os.environ.get("HOME", "/tmp")}
    done_ = subprocess.run([node, str(SCRIPT), base_url, key, MODEL, PROMPT], env=env, capture_output=True,
                           text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert done_.returncode == 0, done_.stdout + done_.stderr
    return json.loads(done_.stdout.strip().splitlines()[-1])


@pytest.fixture
def relay(live, admin, upstream):
    admin.create_channel(name="llama", type="openai", base_url=upstream.url + "/v1", api_key=UPSTREAM_KEY,
                         models=["llama-*"])
    return live, admin.create_key(name="ai-sdk")["key"]


def test_input_tokens_are_the_estimate_when_the_upstream_sends_no_usage(ai_sdk, relay, upstream):
    upstream.script(done(text_stream(["Calm ", "and ", "deep."], usage=False)))
    out = stream_text(ai_sdk, *relay)
    assert out["text"] == "Calm and deep."
    sent = upstream.requests[0].json()
    expected = estimate_input_tokens({"messages": [{"role": "user", "content": PROMPT}]})
    assert sent["messages"][-1]["content"] == PROMPT
    assert out["usage"]["inputTokens"] == expected > 100  # was 0: message_start said 0
    row = wait_for_row()
    assert (row.input_tokens, row.usage_estimated) == (expected, True)


def test_input_tokens_are_the_upstreams_when_it_reports_them(ai_sdk, relay, upstream):
    upstream.script(done(text_stream(["Calm."])))  # prompt 40 (30 of them cached), completion 9
    out = stream_text(ai_sdk, *relay)
    usage = out["usage"]
    assert usage["inputTokens"] == 40 and usage["outputTokens"] == 9
    assert usage["inputTokenDetails"]["cacheReadTokens"] == 30
    assert wait_for_row().usage_estimated is False
