"""The README's walk-through runs as written (issue 20, item 8).

Every shell block of README.md (and the Python SDK example) runs in order, in one shell, against a
real `octorelay up` on a fresh database on loopback: the first start's mock channel answers, nothing
leaves the machine. A command that fails fails the test (`set -e -o pipefail`, curl with
--fail-with-body). Blocks that need the reader's own things (cloud credential files, Claude Code, a
PostgreSQL host) are listed in SKIPPED with the reason and the test that covers them instead; a
SKIPPED entry that no longer matches a block fails too, so the list cannot go stale.
"""
from __future__ import annotations

import json
import re
import subprocess
from dataclasses import dataclass

import pytest
import requests

from tests.support.constants import ADMIN_TOKEN, SECRETS_USED
from tests.support.net import free_port
from tests.support.processes import BIN, OCTORELAY, REPO, base_env, wait_for_key_line, wait_until_serving

FENCE = re.compile(r"^```(?P<lang>[a-z]*)\n(?P<text>.*?)^```\s*$", re.M | re.S)
RUNNABLE = {"sh", "python"}
KNOWN = RUNNABLE | {"", "json"}  # text (a formula) and JSON answers are not commands

# a distinctive piece of the block -> why the walk-through does not run it
SKIPPED = {
    "pip install -e . && octorelay up": "the test runs this `octorelay up` itself (installed already) and reads its key",
    "pip install -e '.[dev]' && pytest": "the test suite itself",
    'python -m pytest -q -m "not slow"': "the test suite itself (its inner loop)",
    "ANTHROPIC_API_KEY=sk-octo-... claude": "Claude Code (tests/test_claude_code.py drives it)",
    "--type bedrock --region us-east-1 --credentials-file credentials.json":
        "the reader's AWS credentials file (tests/test_relay_bedrock.py)",
    "--type vertex --project-id my-project": "the reader's service-account file (tests/test_relay_vertex.py)",
    "export DATABASE_URL=postgresql://octorelay:secret@db.internal":
        "the reader's own PostgreSQL and Redis hosts (tests/test_scale_out.py)",
    "bash bench/run.sh": "the benchmark: minutes of load, never in the suite",
}


@dataclass
class Block:
    line: int
    lang: str
    text: str


def readme_blocks() -> list[Block]:
    text = (REPO / "README.md").read_text()
    return [Block(text.count("\n", 0, m.start()) + 1, m["lang"], m["text"]) for m in FENCE.finditer(text)]


def walk_through(blocks: list[Block], port: int, key: str) -> str:
    """One bash script: the runnable blocks in order, pointed at this server and its printed key."""
    parts = ["set -e -o pipefail", "set -x"]
    for block in blocks:
        text = block.text.replace("localhost:8000", f"127.0.0.1:{port}").replace("sk-octo-...", key)
        if block.lang == "python":
            parts.append(f": README.md line {block.line}\npython - <<'PYTHON'\n{text}PYTHON")
        else:
            # curl -s hides HTTP errors behind exit status 0; the walk-through must see them
            text = re.sub(r"\bcurl -s(N?) ", r"curl -sS\1 --fail-with-body ", text)
            parts.append(f": README.md line {block.line}\n{text}")
    return "\n".join(parts) + "\n"


def runnable_blocks() -> list[Block]:
    blocks = readme_blocks()
    assert {b.lang for b in blocks} <= KNOWN, {b.lang for b in blocks} - KNOWN
    for piece in SKIPPED:
        matching = [b.line for b in blocks if piece in b.text]
        assert len(matching) == 1, f"SKIPPED entry {piece!r} matches blocks at lines {matching}: update SKIPPED"
    return [b for b in blocks if b.lang in RUNNABLE and not any(piece in b.text for piece in SKIPPED)]


def test_the_walk_through_covers_using_and_administering():
    commands = "".join(b.text for b in runnable_blocks())
    for expected in ("curl -s localhost:8000/v1/messages", "curl -s localhost:8000/ ", "anthropic.Anthropic(",
                     "/admin/keys", "/admin/channels", "/admin/channels/1/test", "/admin/logs",
                     "octorelay keys create", "octorelay channels update", "octorelay prices remove"):
        assert expected in commands, expected


@pytest.mark.slow
def test_the_readme_blocks_run_in_order_on_a_fresh_install(env, tmp_path, procs):  # noqa: F811
    blocks = runnable_blocks()
    cwd = tmp_path / "run"
    cwd.mkdir()
    port = free_port()
    server_env = base_env(**env, PORT=str(port), WEB_CONCURRENCY="1",
                          PYTHONPATH=str(REPO), PATH=f"{BIN}:{base_env()['PATH']}")
    server = procs([OCTORELAY, "up"], cwd=cwd, env=server_env, name="up")
    key = wait_for_key_line(server)
    SECRETS_USED.add(key)
    wait_until_serving(server, port)
    assert "MOCK" in server.stdout  # no ANTHROPIC_API_KEY: the demo channel, nothing leaves the machine

    script = walk_through(blocks, port, key)
    (tmp_path / "walk-through.sh").write_text(script)
    done = subprocess.run(["bash", str(tmp_path / "walk-through.sh")], cwd=cwd, env=server_env,
                          capture_output=True, text=True, timeout=240, stdin=subprocess.DEVNULL)
    trace = done.stderr[-6000:]
    assert done.returncode == 0, f"a README command failed (exit {done.returncode}):\n{trace}\n{done.stdout[-3000:]}"
    assert "Traceback" not in done.stdout + done.stderr, trace

    # what the blocks left is what the README says they do
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    api = lambda path: requests.get(f"http://127.0.0.1:{port}{path}", headers=admin, timeout=10).json()  # noqa: E731
    keys = {k["name"]: k for k in api("/admin/keys")["data"]}
    assert keys["team-a"]["id"] == 2 and keys["team-a"]["status"] == "revoked" and keys["team-a"]["rpm"] == 120
    assert keys["team-b"]["status"] == "revoked" and keys["team-b"]["rpm"] == 120
    assert keys["team-b"]["budget_usd"] is None
    channels = {c["name"]: c for c in api("/admin/channels")["data"]}
    assert set(channels) == {"mock", "anthropic-fallback", "ollama", "aws", "anthropic-backup"}
    assert channels["mock"]["id"] == 1  # the channel the test block tried
    claude = [c for c in channels.values() if c["models"] == ["claude-*"]]
    assert max(claude, key=lambda c: c["priority"])["name"] == "mock"  # the demo still answers first
    assert all(c["priority"] < 0 for c in claude if c["name"] != "mock")
    assert "my-model" not in {p["model"] for p in api("/admin/prices")["data"]}
    assert "claude-sonnet-9*" in {p["model"] for p in api("/admin/prices")["data"]}
    # every relayed request (curl, streaming curl, the SDK twice) was answered by the mock, first try
    logs = api("/admin/logs?limit=100")["data"]
    relayed = [row for row in logs if row["channel_id"] is not None]
    assert len(relayed) >= 4 and all((r["channel_id"], r["status"], r["attempts"]) == (1, 200, 1) for r in relayed)
    # and the blocks' answers are the ones shown: the root's signpost, a message
    assert re.search(r'"dashboard":\s*"/dashboard"', done.stdout)
    assert '"type":"message"' in done.stdout.replace(" ", "")


def test_the_root_points_to_the_dashboard_and_the_docs(client):
    resp = client.get("/")
    assert resp.status_code == 200 and resp.content_type.startswith("application/json")
    body = resp.get_json()
    assert body["dashboard"] == "/dashboard" and "docs/api.md" in body["docs"]
    assert body["api"]["messages"] == "/v1/messages" and body["health"] == {"live": "/healthz", "ready": "/readyz"}
    assert resp.headers["request-id"].startswith("req_")
    assert json.dumps(body).count("sk-") == 0
