"""What a request may cost, decided before it is sent: the channels a budgeted key may not use
(their model has no price), and the worst case reserved against its budget and quota.

Kept out of relay.py: these are pricing decisions about one request, the relay only applies them.
"""
from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from ..errors import PermissionDenied
from ..wire.usage import estimate_tokens
from .auth import KeySnapshot
from .limiter import Estimate
from .pricing import PriceBook, worst_case_nanos
from .routing import ChannelConfig

SERVER_TOOLS = re.compile(r"^(web_search|web_fetch|code_execution|bash_code_execution|"
                          r"text_editor_code_execution|tool_search)")


def unpriced_channels(key: KeySnapshot, model: str, candidates: Sequence[ChannelConfig],
                      prices: PriceBook) -> frozenset:
    """A key with a budget is never served for free: the ids of the candidates whose upstream model
    has no price, which it must skip; if that leaves none, a 403 before anything is sent. (Keys
    without a budget are relayed at cost 0; billing warns and counts it.)"""
    if key.budget_nanos is None:
        return frozenset()
    unpriced = {c.id: c.upstream_model(model) for c in candidates if prices.lookup(c.upstream_model(model)) is None}
    if unpriced and len(unpriced) == len(candidates):
        name = next(iter(unpriced.values()))
        raise PermissionDenied(
            f"model {name!r} has no price, and this API key has a budget: an operator must price it "
            f"(PUT /admin/prices/{name} or `octorelay prices set {name} ...`; a glob such as "
            f"'claude-opus-5*' prices a whole family)")
    return frozenset(unpriced)


def worst_case(key: KeySnapshot, model: str, body_size: int, body: Mapping, candidates: Sequence[ChannelConfig],
               prices: PriceBook, server_tool_reserve_nanos: int) -> Estimate:
    """What a request may be reserved against its key's budget and quota while it runs: its input
    by size and all of max_tokens, at the model's dearest rates, plus an allowance when it
    enables server tools (search results enter the context upstream). Only keys with a budget
    or quota need it; reservations never add up past what is left."""
    if key.budget_nanos is None and key.token_quota is None:
        return Estimate()
    upstream_model = next((c.upstream_model(model) for c in candidates), model)
    input_tokens, output_tokens = estimate_tokens(body_size), body["max_tokens"]
    price = prices.lookup(upstream_model)
    nanos = worst_case_nanos(price, input_tokens, output_tokens) if price is not None else 0
    if uses_server_tools(body):
        nanos += server_tool_reserve_nanos
    return Estimate(nanos, input_tokens + output_tokens)


def uses_server_tools(body: Mapping) -> bool:
    """Tools Anthropic runs itself (and bills beyond the body: searches, fetched pages)."""
    tools = body.get("tools")
    return isinstance(tools, list) and any(
        isinstance(t, dict) and isinstance(t.get("type"), str) and SERVER_TOOLS.match(t["type"]) for t in tools)
