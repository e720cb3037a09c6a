"""What a request costs: the price that applies to a model and the cost formula, in integers.

docs/api.md, Accounting: cost = (input x input + 5-minute writes x cache_write + 1-hour
writes x cache_write_1h + cache reads x cache_read + output x output) / 10^6
+ web searches x web_search_per_1k / 1000; when the prompt (input + cache
writes + cache reads) is over a price's long-context threshold, the whole
request uses the tier's rates. Rates are whole micro-dollars per million
tokens, so tokens x rate is pico-dollars, rounded once to the nano-dollars
the database stores: sums of log rows equal key totals exactly.

A price's model may be a glob (`claude-opus-5*`): an exact name wins, else
the longest matching pattern (ties: the first in name order).
"""
from __future__ import annotations

import fnmatch
import logging
import re
import threading
import time
from dataclasses import dataclass
from typing import Iterable

from ..db import connection_then
from ..metrics import UNPRICED_REQUESTS
from ..models import ModelPrice
from ..wire.usage import Usage
from .changes import ChangeFeed, change_feed

log = logging.getLogger("octorelay.pricing")

GLOB_CHARS = re.compile(r"[*?\[]")
RATE_FIELDS = ("input", "output", "cache_write", "cache_write_1h", "cache_read")
MAX_MEMO = 4096
MAX_METRIC_MODELS = 20  # distinct `model` label values before the rest count as "other"


@dataclass(frozen=True)
class Rates:
    """Micro-dollars per million tokens."""
    input: int
    output: int
    cache_write: int
    cache_write_1h: int
    cache_read: int

    @classmethod
    def of(cls, values: dict) -> "Rates":
        """From stored values; a missing 1-hour write rate is 2 x input, as Anthropic bills it."""
        one_hour = values.get("cache_write_1h")
        return cls(values["input"], values["output"], values["cache_write"],
                   2 * values["input"] if one_hour is None else one_hour, values["cache_read"])


@dataclass(frozen=True)
class Price:
    model: str
    rates: Rates
    web_search_per_1k: int = 0                 # micro-dollars per 1,000 web searches
    long_context: tuple[int, Rates] | None = None  # (threshold_tokens, rates above it)

    @classmethod
    def of(cls, row: ModelPrice) -> "Price":
        tier = None
        if row.long_context:
            tier = (int(row.long_context["threshold_tokens"]), Rates.of(row.long_context))
        base = {name: getattr(row, name) for name in RATE_FIELDS}
        return cls(row.model, Rates.of(base), row.web_search_per_1k or 0, tier)

    def rates_for(self, usage: Usage) -> Rates:
        if self.long_context is not None and usage.prompt_tokens > self.long_context[0]:
            return self.long_context[1]
        return self.rates


def cost_nanos(price: Price, usage: Usage) -> int:
    rates = price.rates_for(usage)
    one_hour = min(usage.cache_creation_1h_input_tokens, usage.cache_creation_input_tokens)
    pico = (usage.input_tokens * rates.input
            + (usage.cache_creation_input_tokens - one_hour) * rates.cache_write
            + one_hour * rates.cache_write_1h
            + usage.cache_read_input_tokens * rates.cache_read
            + usage.output_tokens * rates.output
            + usage.web_search_requests * price.web_search_per_1k * 1000)
    return (pico + 500) // 1000


def worst_case_nanos(price: Price, input_tokens: int, output_tokens: int) -> int:
    """The most `input_tokens` in and `output_tokens` out can cost on this price: every input
    token at the dearest input-side rate (a 1-hour cache write, or a long-context tier's), every
    output token at the dearest output rate. What budgets reserve while a request runs."""
    tiers = [price.rates] + ([price.long_context[1]] if price.long_context else [])
    dear_in = max(max(r.input, r.cache_write, r.cache_write_1h, r.cache_read) for r in tiers)
    dear_out = max(r.output for r in tiers)
    pico = input_tokens * dear_in + output_tokens * dear_out
    return -(-pico // 1000)  # rounded up


class PriceTable:
    """Exact names and globs; lookups are memoised (the table is rebuilt on every change)."""

    def __init__(self, prices: Iterable[Price]):
        self.exact: dict[str, Price] = {}
        globs: list[Price] = []
        for price in prices:
            if GLOB_CHARS.search(price.model):
                globs.append(price)
            else:
                self.exact[price.model] = price
        self.globs = sorted(globs, key=lambda p: (-len(p.model), p.model))
        self._memo: dict[str, Price | None] = {}

    def lookup(self, model: str) -> Price | None:
        try:
            return self._memo[model]
        except KeyError:
            pass
        price = self.exact.get(model)
        if price is None:
            price = next((p for p in self.globs if fnmatch.fnmatchcase(model, p.model)), None)
        if len(self._memo) >= MAX_MEMO:
            self._memo.clear()
        self._memo[model] = price
        return price


class PriceBook:
    """The price table of this process: reloaded when an admin write moves the change feed
    (a new price bills the next request), and at least every `ttl` seconds."""

    def __init__(self, feed: ChangeFeed | None = None, ttl: float = 60.0):
        self.feed = feed or change_feed()
        self.ttl = ttl
        self._table = PriceTable(())
        self._version = -1
        self._loaded_at = float("-inf")
        self._lock = threading.Lock()
        self._warned: set[str] = set()

    def table(self) -> PriceTable:
        version = self.feed.version()
        if version != self._version or time.monotonic() - self._loaded_at >= self.ttl:
            with connection_then(self._lock):  # never wait on the pool while holding the lock
                version = self.feed.version()
                if version != self._version or time.monotonic() - self._loaded_at >= self.ttl:
                    self._table = PriceTable([Price.of(row) for row in ModelPrice.select()])
                    self._version, self._loaded_at = version, time.monotonic()
        return self._table

    def lookup(self, model: str | None) -> Price | None:
        return self.table().lookup(model or "")

    def cached(self) -> PriceTable:
        """The table as last loaded, without reloading it."""
        return self._table

    def cost_nanos(self, model: str | None, usage: Usage) -> int:
        """The cost of `usage` on `model`; 0 for a model without a price (warned once per model
        per process, counted per request)."""
        price = self.lookup(model)
        if price is not None:
            return cost_nanos(price, usage)
        if usage.total or usage.web_search_requests:
            self._note_unpriced(model or "")
        return 0

    def _note_unpriced(self, model: str) -> None:
        if model not in self._warned and len(self._warned) < MAX_METRIC_MODELS:
            self._warned.add(model)
            log.warning("no price for model: relayed at cost 0 (price it with PUT /admin/prices/{model} "
                        "or `octorelay prices set`)", extra={"fields": {"model": model[:200]}})
        UNPRICED_REQUESTS.labels(model[:200] if model in self._warned else "other").inc()
