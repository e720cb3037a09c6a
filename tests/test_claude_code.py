"""Claude Code itself (`claude -p`) through the relay to a scripted upstream.

The binary comes from npm (`.ci/run` installs it into .ci/node); without it
the test skips, unless OCTORELAY_REQUIRE_CLAUDE=1 (as in CI) makes that a failure.
"""

import pytest

from tests.support.app import anthropic_channel, wait_for_row
from tests.support.claude_code import REPLY, claude_says_the_reply
from tests.support.constants import UPSTREAM_KEY
from tests.support.upstream import anthropic_message, anthropic_stream_events, json_answer, sse_answer

pytestmark = pytest.mark.slow

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
    claude_says_the_reply(claude_bin, live, auth_var, key, tmp_path)

    turns = [r for r in upstream.requests if r.path == "/v1/messages"]
    assert turns, [r.path for r in upstream.requests]
    seen = turns[-1]
    assert seen.headers["x-api-key"] == UPSTREAM_KEY
    assert key not in repr(dict(seen.headers)) and key.encode() not in seen.body
    assert seen.headers["anthropic-version"] == "2023-06-01"
    assert seen.headers.get("anthropic-beta")  # Claude Code's betas pass through
    body = seen.json()
    assert body["stream"] is True and body["messages"] and body.get("tools") and body.get("system")

    wait_for_row()  # the stream settles just after its last event
    logs = admin.get("/admin/logs?limit=10").get_json()["data"]
    assert any(row["status"] == 200 and row["stream"] for row in logs)


def openai_answer(request):
    """A Chat Completions upstream: SSE `data:` chunks for streams, one JSON body otherwise."""
    body = request.json()
    base = {"id": "chatcmpl-cc", "created": 1, "model": body["model"]}
    if body.get("stream"):
        chunks = [{**base, "object": "chat.completion.chunk",
                   "choices": [{"index": 0, "delta": {"role": "assistant", "content": part}, "finish_reason": None}]}
                  for part in (REPLY[:10], REPLY[10:])]
        chunks.append({**base, "object": "chat.completion.chunk",
                       "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        chunks.append({**base, "object": "chat.completion.chunk", "choices": [],
                       "usage": {"prompt_tokens": 900, "completion_tokens": 8}})
        return sse_answer([(None, c) for c in chunks] + [(None, "[DONE]")])
    return json_answer({**base, "object": "chat.completion", "usage": {"prompt_tokens": 9, "completion_tokens": 8},
                        "choices": [{"index": 0, "finish_reason": "stop",
                                     "message": {"role": "assistant", "content": REPLY}}]})


def test_claude_code_through_an_openai_channel(claude_bin, live, admin, upstream, tmp_path):
    admin.create_channel(name="vllm", type="openai", base_url=upstream.url + "/v1", api_key=UPSTREAM_KEY,
                         models=["claude-*"], model_map={})
    key = admin.create_key(name="claude-code")["key"]
    upstream.set_default(openai_answer)
    claude_says_the_reply(claude_bin, live, "ANTHROPIC_API_KEY", key, tmp_path)
    turns = [r for r in upstream.requests if r.path == "/v1/chat/completions"]
    assert turns and turns[-1].headers["authorization"] == f"Bearer {UPSTREAM_KEY}"
    sent = turns[-1].json()
    assert sent["stream"] is True and sent["messages"][0]["role"] == "system" and sent.get("tools")


BILLED_USAGE = {"input_tokens": 1200, "cache_read_input_tokens": 30000, "cache_creation_input_tokens": 5000,
                "cache_creation": {"ephemeral_5m_input_tokens": 1000, "ephemeral_1h_input_tokens": 4000}}


def billed_answer(request):
    body = request.json()
    if body.get("stream"):
        return sse_answer(anthropic_stream_events([REPLY[:10], REPLY[10:]], model=body["model"],
                                                  usage_start=BILLED_USAGE, usage_delta={"output_tokens": 42}))
    return json_answer(anthropic_message(REPLY, model=body["model"], usage={**BILLED_USAGE, "output_tokens": 42}))


def test_claude_codes_default_model_is_billed_by_the_formula(claude_bin, live, admin, upstream, tmp_path):
    """No --model: Claude Code asks for its default model, which must be priced (a budgeted key
    would otherwise be refused), and each turn costs what the price list and the usage say."""
    import fnmatch
    from decimal import Decimal

    anthropic_channel(admin, upstream)
    key = admin.create_key(name="claude-code", budget_usd=50)
    upstream.set_default(billed_answer)
    claude_says_the_reply(claude_bin, live, "ANTHROPIC_API_KEY", key["key"], tmp_path)

    wait_for_row()
    rows = [r for r in admin.get("/admin/logs?limit=50").get_json()["data"] if r["status"] == 200]
    assert rows
    models = {r.json()["model"] for r in upstream.requests if r.path.startswith("/v1/messages")
              and not r.path.startswith("/v1/messages/count_tokens")}
    print("Claude Code asked for", sorted(models))
    prices = admin.get("/admin/prices").get_json()["data"]
    for row in rows:
        # an exact name, else the longest matching glob
        matching = [p for p in prices if p["model"] == row["model"]] or sorted(
            (p for p in prices if fnmatch.fnmatchcase(row["model"], p["model"])), key=lambda p: -len(p["model"]))
        assert matching, f"{row['model']} has no seeded price"
        price = matching[0]
        d = {k: Decimal(str(v)) for k, v in price.items() if isinstance(v, (int, float))}
        usd = (1200 * d["input"] + 1000 * d["cache_write"] + 4000 * d["cache_write_1h"]
               + 30000 * d["cache_read"] + 42 * d["output"]) / 10**6
        assert row["cost_usd"] > 0
        assert Decimal(str(row["cost_usd"])) == usd, (row["model"], row["cost_usd"], usd)
