"""First start: with no keys yet, mint one and make sure some channel serves claude-*."""
from __future__ import annotations

from ..crypto import SecretBox
from ..models import ApiKey, Channel
from . import channels, keys


def bootstrap(anthropic_api_key: str | None, box: SecretBox) -> list[str]:
    """Returns the lines to print (the new key appears only here). Does nothing if keys exist."""
    if ApiKey.select().exists():
        return []
    key, raw = keys.create_key({"name": "default"})
    lines = [
        "octorelay: first start — created API key 'default' (shown once, store it now):",
        f"  {raw}",
    ]
    if not Channel.select().exists():
        if anthropic_api_key:
            channels.create_channel({"name": "anthropic", "type": "anthropic",
                                     "api_key": anthropic_api_key, "models": ["claude-*"]}, box)
            lines.append("octorelay: created channel 'anthropic' (api.anthropic.com) for claude-*")
        else:
            channels.create_channel({"name": "mock", "type": "mock", "models": ["claude-*"]}, box)
            lines += [
                "octorelay: *** DEMO MODE *** ANTHROPIC_API_KEY is not set, so claude-* is served by",
                "octorelay: a local MOCK channel that answers canned text. Add a real channel with",
                "octorelay:   octorelay channels add --name anthropic --type anthropic"
                " --api-key ... --model 'claude-*'",
                "octorelay: and remove the mock one (octorelay channels remove ID).",
            ]
    return lines
