#!/usr/bin/env python
"""Claude Code-shaped request bodies of a chosen size, built from one real captured turn.

    python bench/bodies.py OUT_DIR [--sizes 50000,300000,1000000]   # body-<size>.json, headers.txt

`bench/data/claude_code_turn.json` is one real first turn of `claude -p` (Claude Code 2.1.197:
three system blocks with cache_control, 24 tools with long schemas, adaptive thinking,
context_management, output_config, a mid-conversation `role: "system"` turn), captured on a
loopback server by `python -m bench.capture_claude_code`. Deeper into a session Claude Code
sends the same prefix plus the turns so far, so a bigger body here is that turn plus
assistant turns (thinking with a signature, text, a tool_use) each answered by a user turn
with a tool_result holding file text, until the size is reached; the last user turn carries
the cache_control breakpoint, as Claude Code's do, and the `role: "system"` turn stays last. A size below the captured turn keeps its
first tools only. `"stream"` is false, so the benchmark's mock answers one JSON body.
"""
from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
from pathlib import Path

HERE = Path(__file__).resolve().parent
TURN = HERE / "data" / "claude_code_turn.json"
HEADERS = HERE / "data" / "claude_code_turn.headers.json"
DEFAULT_SIZES = (50_000, 300_000, 1_000_000)


def captured() -> dict:
    return json.loads(TURN.read_text(encoding="utf-8"))


def claude_code_headers() -> dict:
    return json.loads(HEADERS.read_text(encoding="utf-8"))


def _file_text(n: int, size: int) -> str:
    """Source-like text with the characters JSON must escape (quotes, backslashes, newlines, tabs)
    and, on one line in 16, some non-ASCII, as real tool results have."""
    lines, total, i = [], 0, 0
    while total < size:
        line = f'{i + 1:>6}\t    def step_{n}_{i}(self, path: str = "src\\\\mod_{i}.py") -> dict:  # {{"k": {i}}}'
        if i % 16 == 0:
            line += "  # résumé → “quoted”"
        lines.append(line)
        total += len(line) + 1
        i += 1
    return "\n".join(lines)


def _signature(n: int) -> str:
    return base64.b64encode(hashlib.sha512(str(n).encode()).digest() * 5).decode()


def _exchange(n: int) -> list[dict]:
    """One assistant turn calling Read, and the user turn with its result."""
    tool_id = f"toolu_01{hashlib.sha1(str(n).encode()).hexdigest()[:22]}"
    return [
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": f"I should look at module {n} before changing it.",
             "signature": _signature(n)},
            {"type": "text", "text": f"Reading module {n}."},
            {"type": "tool_use", "id": tool_id, "name": "Read",
             "input": {"file_path": f"/work/project/src/mod_{n}.py"}},
        ]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": tool_id, "content": _file_text(n, 6000)},
        ]},
    ]


def _size(body: dict) -> int:
    return len(json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode())


def body_of_size(target: int) -> dict:
    body = captured()
    body["stream"] = False
    if _size(body) > target:  # a smaller first turn: fewer tools
        while len(body["tools"]) > 1 and _size(body) > target:
            body["tools"] = body["tools"][:-1]
        return body
    first, rest = body["messages"][:1], body["messages"][1:]  # rest: the closing role "system" turn
    for block in first[0]["content"]:
        block.pop("cache_control", None)
    messages, n = list(first), 0
    closing = {"role": "user", "content": [{"type": "text", "text": "Now fix the failing test.",
                                            "cache_control": {"type": "ephemeral"}}]}
    while _size({**body, "messages": messages + [closing] + rest}) < target:
        messages += _exchange(n)
        n += 1
    body["messages"] = messages + [closing] + rest
    return body


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir")
    parser.add_argument("--sizes", default=",".join(str(s) for s in DEFAULT_SIZES))
    args = parser.parse_args()
    os.makedirs(args.out_dir, exist_ok=True)
    for size in (int(s) for s in args.sizes.split(",")):
        data = json.dumps(body_of_size(size), ensure_ascii=False, separators=(",", ":")).encode()
        path = Path(args.out_dir) / f"body-{size}.json"
        path.write_bytes(data)
        print(f"{path} {len(data)}")
    headers = "".join(f"{k}: {v}\n" for k, v in claude_code_headers().items() if k.lower() != "user-agent")
    (Path(args.out_dir) / "headers.txt").write_text(headers)


if __name__ == "__main__":
    main()
