#!/usr/bin/env python
"""Does session affinity keep the prompt cache hitting? Claude Code-like conversations over three
equal channels whose upstreams each keep their own prompt cache, affinity off vs on.

    python -m bench.affinity [--conversations 50] [--turns 20]     # ~1-2 minutes, prints a table

The mock upstream (in this process, on loopback) plays three accounts, one per channel (path
/a, /b, /c). Like Anthropic's cache it remembers, per account, every prompt prefix it has seen
at a block boundary (tools + system, then after each message); a request reads from the cache
the longest prefix that account has seen and writes the rest (Claude Code marks its system
blocks and its last message with cache_control, so all of it is written). Token counts are
bytes / 4 of the blocks: the captured Claude Code turn (bench/data, ~18k tokens of tools and
system) grows by one tool call and a ~6 KB tool result per turn, 400 output tokens each. The
cache never expires here (the run takes minutes; Anthropic's lasts 5 minutes after each use).

octorelay runs in this process (create_app on a temporary SQLite database, its test client);
every request goes through its real relay and HTTP transport to the mock. Cost is what
octorelay's own ledger charged (its price table), so the table compares real accounting.

Scenarios, each on a fresh database: one channel (the best any routing can do); three equal
channels with OCTORELAY_SESSION_AFFINITY=off (a weighted-random channel per turn); three
with affinity on, conversations named as Claude Code names them (x-claude-code-session-id and
metadata.user_id); three with affinity on and no session id at all (the prefix hash). Turns
are interleaved: turn 1 of every conversation, then turn 2 of every conversation, and so on.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from bench.bodies import _exchange, captured, claude_code_headers

OUTPUT_TOKENS = 400
CHANNELS = "abc"


def tokens(obj) -> int:
    return max(1, len(json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()) // 4)


class Accounts:
    """Per account (path prefix): the prompt prefixes it has cached, as digests."""

    def __init__(self):
        self.cache: dict[str, set[bytes]] = {}
        self.lock = threading.Lock()
        self.requests = Counter()

    def usage(self, account: str, body: dict) -> dict:
        """Anthropic-style usage for `body` on `account`, caching its prefixes there."""
        digest = hashlib.blake2b(json.dumps([body.get("tools"), body.get("system")],
                                            sort_keys=True).encode(), digest_size=16)
        boundaries = [(digest.digest(), tokens(body.get("tools")) + tokens(body.get("system")))]
        for message in body["messages"]:
            digest.update(json.dumps(message, sort_keys=True).encode())
            boundaries.append((digest.digest(), boundaries[-1][1] + tokens(message)))
        total = boundaries[-1][1]
        with self.lock:
            seen = self.cache.setdefault(account, set())
            self.requests[account] += 1
            read = next((n for d, n in reversed(boundaries) if d in seen), 0)
            seen.update(d for d, _ in boundaries)
        uncached = 3  # what follows the last breakpoint: Anthropic reports a few input tokens
        return {"input_tokens": uncached, "cache_creation_input_tokens": max(0, total - read - uncached),
                "cache_read_input_tokens": read, "output_tokens": OUTPUT_TOKENS}


def start_mock(accounts: Accounts):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["content-length"])))
            account = self.path.split("/")[1]
            message = {"id": "msg_bench", "type": "message", "role": "assistant", "model": body["model"],
                       "content": [{"type": "text", "text": "done"}], "stop_reason": "end_turn",
                       "stop_sequence": None, "usage": accounts.usage(account, body)}
            data = json.dumps(message).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def conversation_turn(n: int, turn: int, named: bool) -> tuple[dict, dict]:
    """Turn `turn` (1-based) of conversation `n`: the captured first turn, its task, and the
    tool calls so far. -> (body, headers)"""
    body = captured()
    body["stream"] = False
    first = body["messages"][0]
    first["content"][-1]["text"] = f"task {n}: make the tests in package {n} pass"
    messages = [first]
    for i in range(turn - 1):
        messages += _exchange(n * 1000 + i)
    for block in messages[-1]["content"]:  # Claude Code's breakpoint: the last message
        block["cache_control"] = {"type": "ephemeral"}
    for message in messages[:-1]:
        for block in message["content"]:
            if isinstance(block, dict):
                block.pop("cache_control", None)
    body["messages"] = messages + body["messages"][1:]  # the closing role "system" turn
    headers = {k: v for k, v in claude_code_headers().items() if k.lower() != "x-claude-code-session-id"}
    session = f"00000000-0000-4000-8000-{n:012d}"
    if named:
        headers["X-Claude-Code-Session-Id"] = session
        body["metadata"] = {"user_id": json.dumps({"device_id": "d" * 64, "account_uuid": "",
                                                   "session_id": session}, separators=(",", ":"))}
    else:
        body.pop("metadata", None)
    return body, headers


def run_scenario(name: str, channels: int, affinity: bool, named: bool, conversations: int,
                 turns: int) -> dict:
    from app import create_app
    from app.db import db, upgrade
    from app.models import RequestLog
    from app.state import services

    accounts = Accounts()
    mock = start_mock(accounts)
    tmp = tempfile.mkdtemp(prefix="octorelay-affinity-bench-")
    admin_token = "bench-admin-token-" + "0" * 32  # 32+ characters: shorter ones refuse to start
    app = create_app({"DATABASE_URL": f"sqlite:///{tmp}/octorelay.db", "OCTORELAY_ADMIN_TOKEN": admin_token,
                      "OCTORELAY_SECRET_KEY": "q2mS6yQ7n5bH0uF8YJwHk0j3QvZr2m1Ck9yXG1p4e6U=",
                      "OCTORELAY_SPOOL_DIR": tmp, "LOG_LEVEL": "warning",
                      "OCTORELAY_SESSION_AFFINITY": "on" if affinity else "off"})
    upgrade(db.obj)
    client = app.test_client()
    auth = {"Authorization": f"Bearer {admin_token}"}
    base = f"http://127.0.0.1:{mock.server_port}"
    for name_ in CHANNELS[:channels]:
        resp = client.post("/admin/channels", headers=auth, json={
            "name": name_, "type": "anthropic", "base_url": f"{base}/{name_}", "api_key": "sk-ant-bench",
            "models": ["claude-*"]})
        assert resp.status_code == 201, resp.get_json()
    key = client.post("/admin/keys", headers=auth, json={"name": "bench"}).get_json()["key"]
    started = time.perf_counter()
    for turn in range(1, turns + 1):
        for n in range(conversations):
            body, headers = conversation_turn(n, turn, named)
            resp = client.post("/v1/messages", data=json.dumps(body, ensure_ascii=False).encode(),
                               headers={**headers, "x-api-key": key, "content-type": "application/json"})
            assert resp.status_code == 200, resp.get_data(as_text=True)[:300]
    elapsed = time.perf_counter() - started
    relay = services(app).relay
    assert relay.flush(timeout=60)
    rows = list(RequestLog.select())
    relay.close()
    db.obj.close_all()
    mock.shutdown()
    read = sum(r.cache_read_input_tokens for r in rows)
    written = sum(r.cache_creation_input_tokens for r in rows)
    fresh = sum(r.input_tokens for r in rows)
    return {"name": name, "requests": len(rows), "read_share": read / (read + written + fresh),
            "cost_usd": sum(r.cost_nanos for r in rows) / 1e9, "written": written, "read": read,
            "affinity": Counter(r.affinity for r in rows), "split": sorted(accounts.requests.values(), reverse=True),
            "seconds": elapsed}


def lookup_cost(batches: int = 20, per_batch: int = 200) -> None:
    """What affinity adds to a turn's CPU: lookup + settle on the real Claude Code turn (24 tools,
    ~65 KB of schemas), named by its header or by the prefix hash. Best batch of this thread's CPU
    time, so a shared machine's stalls are left out."""
    from app.services.affinity import Affinity, LocalStore

    body = {k: v for k, v in captured().items() if k != "metadata"}
    print("| affinity key | lookup + settle, CPU µs (best batch) |\n|---|---|")
    for name, headers in (("x-claude-code-session-id", {"x-claude-code-session-id": "perf"}),
                          ("prefix hash", {})):
        affinity, best = Affinity(LocalStore()), float("inf")
        for _ in range(batches):
            started = time.thread_time()
            for _ in range(per_batch):
                affinity.settle(affinity.lookup(1, body["model"], headers, body), 1)
            best = min(best, (time.thread_time() - started) * 1e6 / per_batch)
        print(f"| {name} | {best:.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conversations", type=int, default=50)
    parser.add_argument("--turns", type=int, default=20)
    parser.add_argument("--lookup-cost", action="store_true",
                        help="only measure one lookup + settle on the captured turn (CPU µs) and exit")
    args = parser.parse_args()
    if args.lookup_cost:
        lookup_cost()
        return
    os.environ.pop("REDIS_URL", None)
    scenarios = [("one channel", 1, True, True),
                 ("3 channels, affinity off", 3, False, True),
                 ("3 channels, affinity on (Claude Code session id)", 3, True, True),
                 ("3 channels, affinity on (no session id: prefix hash)", 3, True, False)]
    results = []
    for name, channels, affinity, named in scenarios:
        print(f"affinity bench: {name} ...", file=sys.stderr, flush=True)
        results.append(run_scenario(name, channels, affinity, named, args.conversations, args.turns))
    single = results[0]
    print(f"{args.conversations} conversations × {args.turns} turns, Claude Code-shaped (captured turn + "
          f"a tool call per turn), {OUTPUT_TOKENS} output tokens per turn; cost from octorelay's ledger\n")
    print("| scenario | requests per channel | affinity kept / new / moved | cache-read share of input "
          "tokens | vs one channel | cost USD | vs one channel |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        a = r["affinity"]
        follow = "–" if not (a["kept"] or a["new"] or a["moved"]) else f"{a['kept']} / {a['new']} / {a['moved']}"
        print(f"| {r['name']} | {' / '.join(str(x) for x in r['split'])} | {follow} | {r['read_share']:.1%} | "
              f"{r['read_share'] / single['read_share']:.1%} | {r['cost_usd']:,.2f} | "
              f"{r['cost_usd'] / single['cost_usd']:.1%} |")
    on = results[2]
    met_share = on["read_share"] >= 0.95 * single["read_share"]
    met_cost = on["cost_usd"] <= 1.05 * single["cost_usd"]
    print(f"\ntargets (affinity on, Claude Code session id): cache-read share ≥ 95 % of one channel's: "
          f"{'met' if met_share else 'missed'}; cost within 5 % of one channel's: {'met' if met_cost else 'missed'}")


if __name__ == "__main__":
    main()
