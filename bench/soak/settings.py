"""What the soak runs: models, request kinds, keys and their limits, timeouts."""
from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"
BIN = Path(sys.executable).parent
OCTORELAY = str(BIN / "octorelay") if (BIN / "octorelay").exists() else "octorelay"
GUNICORN = str(BIN / "gunicorn") if (BIN / "gunicorn").exists() else "gunicorn"
UPSTREAM_KEY = "sk-ant-api03-soak-upstream-" + "x" * 24

# environment variables that would change what octorelay sees; the servers get ours only
SERVER_VARS = ("DATABASE_URL", "REDIS_URL", "WEB_CONCURRENCY", "PORT", "ANTHROPIC_API_KEY", "LOG_LEVEL",
               "GUNICORN_CMD_ARGS", "FORWARDED_ALLOW_IPS", "PROMETHEUS_MULTIPROC_DIR")

# models: both channels serve sonnet and haiku; opus and the alias only the healthy one; the
# alias is renamed by the healthy channel's model_map (so it is priced as haiku); nobody serves
# NO_CHANNEL_MODEL (404 from routing, which still leaves a row)
SHARED_MODELS = ["claude-sonnet-4-5", "claude-haiku-4-5"]
HEALTHY_ONLY = ["claude-opus-4-1"]
MODEL_MAP = {"soak-alias": "claude-haiku-4-5"}
NO_CHANNEL_MODEL = "claude-nochannel-0"
MODEL_WEIGHTS = {"claude-sonnet-4-5": 45, "claude-haiku-4-5": 30, "claude-opus-4-1": 10, "soak-alias": 15}

# request kinds a client picks from (weights): ~11% of streams hang up mid-stream
KIND_WEIGHTS = {"message": 45, "stream": 40, "disconnect": 5, "no_channel": 5, "count_tokens": 3,
                "invalid": 2}
ROUTED_KINDS = ("message", "stream", "disconnect", "no_channel")
ALLOWED_STATUS = {"message": {200, 402, 429}, "stream": {200, 402, 429}, "disconnect": {200, 402, 429},
                  "no_channel": {404, 402, 429}, "count_tokens": {200, 402, 429}, "invalid": {400, 402, 429}}
# count_tokens: limited per key (OCTORELAY_COUNT_TOKENS_RPM) and refused once the budget is used up;
# a key's limits are checked before its body is read, so an invalid body may meet them first

# keys: (name, limits, weight)
KEYS = [
    ("plain-a", {}, 30),
    ("plain-b", {}, 25),
    ("rpm", {"rpm": 60}, 10),
    ("tpm", {"tpm": 400_000}, 10),
    ("concurrency", {"max_concurrency": 2}, 10),
    ("budget", {"budget_usd": 0.5}, 10),
    ("quota", {"token_quota": 1_000_000}, 5),
]

TOKEN_FIELDS = ("input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
DISCONNECT_CHUNKS, DISCONNECT_DELAY = 60, 0.05  # a slow stream, so the client leaves while it runs
REQUEST_TIMEOUT = (5.0, 60.0)  # connect, read (per chunk)
STREAM_DEADLINE_S = 60.0  # one stream, start to end
SETTLE_TIMEOUT_S = 30.0  # waiting for the last rows (streams settle after their last byte)
SETTLE_STABLE_S = 5.0  # ... unless their count has not moved for this long
QUIET_S = 1.5  # after the load pauses: keep-alive sockets close, threads go idle


class SetupError(Exception):
    """The soak could not be set up (not an invariant failure)."""
