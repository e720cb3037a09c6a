"""The request an adaptor builds and a channel type's transport sends: a plain value."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping


@dataclass(frozen=True)
class UpstreamAuth:
    """Credentials a transport turns into headers at send time (a SigV4 signature, an OAuth
    token): `kind` names the scheme, `params` holds the secrets (never in a repr)."""
    kind: str
    params: Mapping = field(repr=False)


@dataclass
class UpstreamRequest:
    url: str
    headers: dict
    body: bytes
    timeout_s: float = 600.0
    auth: UpstreamAuth | None = None  # applied by the channel type's transport, not the adaptor
