"""The mock channel's event stream as Anthropic's API sends it, read through the official SDK."""
import pytest

from tests.support.app import wait_for_row

anthropic = pytest.importorskip("anthropic")

USAGE_COUNTS = ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens", "output_tokens")


def test_mock_stream_closing_usage_carries_input_and_cache_counts(live, admin):
    admin.create_channel(name="mock", type="mock", models=["claude-*"])
    key = admin.create_key(name="k")["key"]
    sdk = anthropic.Anthropic(api_key=key, base_url=live, max_retries=0)
    events = list(sdk.messages.create(model="claude-sonnet-4-5", max_tokens=64, stream=True,
                                      messages=[{"role": "user", "content": "Hi"}]))
    start = next(e for e in events if e.type == "message_start").message.usage
    delta = next(e for e in events if e.type == "message_delta").usage
    # what Anthropic sends: every count, cumulative, in the closing message_delta
    assert start.input_tokens > 0
    assert (delta.input_tokens, delta.cache_creation_input_tokens, delta.cache_read_input_tokens) == (
        start.input_tokens, 0, 0)
    assert delta.output_tokens > 0
    row = wait_for_row()
    assert (row.input_tokens, row.output_tokens) == (delta.input_tokens, delta.output_tokens)
