#!/usr/bin/env python
"""Capture one real Claude Code turn for the benchmark: `claude -p` against a loopback server.

    python -m bench.capture_claude_code [--claude PATH]   # writes bench/data/claude_code_turn{,.headers}.json

Runs Claude Code (default: the one .ci/run installs) in an empty home with ANTHROPIC_BASE_URL
pointing at a scripted upstream on 127.0.0.1 (tests/support/upstream.py), and keeps the body and the
anthropic-* / x-* / user-agent headers of its streamed POST /v1/messages. The upstream key is a
placeholder; nothing leaves the machine.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.support.upstream import Upstream, anthropic_message, anthropic_stream_events, json_answer, sse_answer

REPO = Path(__file__).resolve().parent.parent

CLAUDE = REPO / ".ci/node/node_modules/@anthropic-ai/claude-code-linux-x64/claude"
KEPT_HEADERS = ("anthropic-version", "anthropic-beta", "x-claude-code-session-id", "x-app", "x-stainless-",
                "user-agent")


def answer(request):
    body = request.json()
    if body.get("stream"):
        return sse_answer(anthropic_stream_events(["Here ", "they are."], model=body["model"]))
    return json_answer(anthropic_message("Here they are.", model=body["model"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--claude", default=str(CLAUDE))
    parser.add_argument("--prompt", default="list the files here")
    args = parser.parse_args()
    with Upstream(answer) as upstream, tempfile.TemporaryDirectory() as home:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "CLAUDE"))}
        env.update({"HOME": home, "ANTHROPIC_BASE_URL": upstream.url, "ANTHROPIC_API_KEY": "sk-ant-capture",
                    "DISABLE_TELEMETRY": "1", "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
                    "DISABLE_AUTOUPDATER": "1"})
        done = subprocess.run([args.claude, "-p", args.prompt], cwd=home, env=env, capture_output=True,
                              text=True, timeout=120, stdin=subprocess.DEVNULL)
        turns = [r for r in upstream.requests if r.path.split("?")[0] == "/v1/messages"]
        if done.returncode != 0 or not turns:
            sys.exit(f"claude -p failed ({done.returncode}): {done.stderr[-500:]}")
        turn = turns[0]
        out = REPO / "bench" / "data"
        out.mkdir(exist_ok=True)
        (out / "claude_code_turn.json").write_bytes(turn.body)
        headers = {k: v for k, v in turn.headers.items() if k.lower().startswith(KEPT_HEADERS)}
        (out / "claude_code_turn.headers.json").write_text(json.dumps(headers, indent=1))
        print(f"{len(turn.body)} bytes, {len(turn.json()['tools'])} tools, version {turn.headers.get('user-agent')}")


if __name__ == "__main__":
    main()
