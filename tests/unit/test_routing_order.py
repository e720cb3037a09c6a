"""Candidate order and cooldown (app/services/routing.py), as pure functions: no app, no database."""
from __future__ import annotations

import random
from collections import Counter
from datetime import datetime, timedelta, timezone

import pytest

from app.services.routing import (COOLDOWN_BASE_S, COOLDOWN_MAX_S, FAILURES_BEFORE_COOLDOWN, ChannelConfig,
                                  cooldown_for, home_first, order_candidates, weighted_order)

NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)


def channel(id: int, *, priority: int = 0, weight: int = 1, models=("claude-*",), model_map=None,
            cooldown_until: datetime | None = None) -> ChannelConfig:
    return ChannelConfig(id=id, name=f"c{id}", type="anthropic", base_url=None, api_key=None, models=tuple(models),
                         model_map=dict(model_map or {}), priority=priority, weight=weight, timeout_s=60.0,
                         consecutive_failures=0, cooldown_until=cooldown_until)


def ids(channels) -> list[int]:
    return [c.id for c in channels]


def test_higher_priority_comes_first_whatever_the_weights():
    channels = [channel(1, priority=0, weight=100), channel(2, priority=5, weight=1), channel(3, priority=1)]
    for seed in range(50):
        assert ids(order_candidates(channels, "claude-x", NOW, random.Random(seed))) == [2, 3, 1]


def test_only_channels_serving_the_model_by_glob_or_map():
    channels = [channel(1, models=("gpt-*",)), channel(2), channel(3, models=(), model_map={"alias": "claude-y"})]
    assert ids(order_candidates(channels, "claude-x", NOW, random.Random(0))) == [2]
    assert ids(order_candidates(channels, "alias", NOW, random.Random(0))) == [3]
    assert order_candidates(channels, "llama", NOW, random.Random(0)) == []


def test_cooling_channels_go_last_soonest_ready_first():
    later, sooner = NOW + timedelta(minutes=5), NOW + timedelta(minutes=1)
    channels = [channel(1, priority=9, cooldown_until=later), channel(2, priority=9, cooldown_until=sooner),
                channel(3, priority=0), channel(4, priority=0, cooldown_until=NOW - timedelta(seconds=1))]
    order = ids(order_candidates(channels, "claude-x", NOW, random.Random(1)))
    assert set(order[:2]) == {3, 4}  # a cooldown in the past is over
    assert order[2:] == [2, 1]


def test_the_same_seed_gives_the_same_order():
    channels = [channel(i, weight=i) for i in range(1, 8)]
    first = ids(order_candidates(channels, "claude-x", NOW, random.Random(42)))
    assert ids(order_candidates(channels, "claude-x", NOW, random.Random(42))) == first


def test_weights_set_the_share_of_first_places():
    """9:1 weights: the heavy channel leads ~90 % of 2,000 seeded draws (exact for the seed)."""
    channels = [channel(1, weight=9), channel(2, weight=1)]
    rng = random.Random(7)
    firsts = Counter(weighted_order(channels, rng)[0].id for _ in range(2000))
    assert 0.87 <= firsts[1] / 2000 <= 0.93, firsts


def test_zero_weight_counts_as_one():
    channels = [channel(1, weight=0), channel(2, weight=1)]
    rng = random.Random(3)
    firsts = Counter(weighted_order(channels, rng)[0].id for _ in range(2000))
    assert 0.45 <= firsts[1] / 2000 <= 0.55, firsts


def test_home_first_moves_a_usable_home_to_the_front_only():
    a, b, c = channel(1), channel(2), channel(3)
    assert ids(home_first([a, b, c], 3, NOW)) == [3, 1, 2]
    assert ids(home_first([a, b, c], 1, NOW)) == [1, 2, 3]
    assert ids(home_first([a, b, c], 9, NOW)) == [1, 2, 3]  # not a candidate (disabled, or not serving)
    resting = channel(3, cooldown_until=NOW + timedelta(minutes=1))
    assert ids(home_first([a, b, resting], 3, NOW)) == [1, 2, 3]  # cooling down: the order stands


@pytest.mark.parametrize("failures, seconds", [
    (0, 0.0), (FAILURES_BEFORE_COOLDOWN - 1, 0.0),
    (FAILURES_BEFORE_COOLDOWN, COOLDOWN_BASE_S), (FAILURES_BEFORE_COOLDOWN + 1, 2 * COOLDOWN_BASE_S),
    (FAILURES_BEFORE_COOLDOWN + 2, 4 * COOLDOWN_BASE_S), (FAILURES_BEFORE_COOLDOWN + 50, COOLDOWN_MAX_S),
])
def test_cooldown_starts_at_the_threshold_doubles_and_is_capped(failures, seconds):
    assert cooldown_for(failures) == seconds


def test_cooling_is_strictly_before_the_deadline():
    assert channel(1, cooldown_until=NOW + timedelta(microseconds=1)).cooling(NOW)
    assert not channel(1, cooldown_until=NOW).cooling(NOW)
    assert not channel(1).cooling(NOW)
