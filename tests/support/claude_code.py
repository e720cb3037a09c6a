"""Claude Code itself (`claude -p`): the binary from npm (`.ci/run` installs it into .ci/node);
without it a test skips, unless OCTORELAY_REQUIRE_CLAUDE=1 (as in CI) makes that a failure."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
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


def claude_says_the_reply(claude_bin, base_url, auth_var, key, home) -> None:
    """`claude -p "say hi"` against the relay, in an empty home, prints the upstream's reply."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "CLAUDE"))}
    env.update({"HOME": str(home), "ANTHROPIC_BASE_URL": base_url, auth_var: key,
                "DISABLE_TELEMETRY": "1", "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
                "DISABLE_AUTOUPDATER": "1"})
    done = subprocess.run([claude_bin, "-p", "say hi"], cwd=home, env=env, capture_output=True,
                          text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stdout + done.stderr
    assert REPLY in done.stdout
