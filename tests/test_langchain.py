"""LangChain (`langchain-anthropic`, from PyPI) through the relay: the client that found the mock
channel's final event carrying only `output_tokens` (issue 18, item 7) sees what is billed."""
import pytest

from tests.support.app import wait_for_row
from tests.support.constants import UPSTREAM_KEY
from tests.support.upstream import sse_answer

langchain_anthropic = pytest.importorskip("langchain_anthropic")

OPENAI_MODEL = "llama-3.3-70b"


def openai_stream_without_usage(parts):
    """Chat Completions chunks from a server that ignores stream_options.include_usage."""
    def chunk(delta, finish=None):
        return (None, {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": OPENAI_MODEL,
                       "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})

    events = [chunk({"role": "assistant", "content": ""}), *(chunk({"content": p}) for p in parts),
              chunk({}, finish="stop"), (None, "[DONE]")]
    return sse_answer(events)


def chat(live, key, model):
    return langchain_anthropic.ChatAnthropic(model=model, base_url=live, api_key=key, max_tokens=64,
                                             max_retries=0, timeout=30)


def streamed(llm, prompt):
    total = None
    for chunk in llm.stream(prompt):
        total = chunk if total is None else total + chunk
    return total


def test_a_mock_stream_reports_the_billed_input(live, admin):
    admin.create_channel(name="mock", type="mock", models=["claude-*"])
    key = admin.create_key(name="lc")["key"]
    message = streamed(chat(live, key, "claude-sonnet-4-5"), "Tell me about the sea. " * 20)
    row = wait_for_row()
    assert message.content and row.status == 200
    assert row.input_tokens > 0 and row.output_tokens > 0
    assert message.usage_metadata["input_tokens"] == row.input_tokens
    assert message.usage_metadata["output_tokens"] == row.output_tokens


def test_a_translated_stream_reports_the_billed_input(live, admin, upstream):
    """An OpenAI-compatible upstream that reports no usage: the relay's estimate is what LangChain
    shows and what the row bills (marked estimated)."""
    admin.create_channel(name="llama", type="openai", base_url=upstream.url + "/v1", api_key=UPSTREAM_KEY,
                         models=["llama-*"])
    key = admin.create_key(name="lc")["key"]
    upstream.script(openai_stream_without_usage(["The sea ", "is wide."]))
    message = streamed(chat(live, key, OPENAI_MODEL), "Tell me about the sea. " * 20)
    row = wait_for_row()
    assert message.content == "The sea is wide."
    assert row.input_tokens > 0 and row.usage_estimated
    assert message.usage_metadata["input_tokens"] == row.input_tokens
