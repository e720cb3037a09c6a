"""Where a channel may point: the shape of its `base_url` and the addresses it may reach.

Whoever holds the admin token chooses a channel's `base_url`, and the relay sends the
channel's credentials there and hands the answer back to the client. So a `base_url` is
parsed and checked when it is written (and again when stored channels are loaded: one made
before a rule is skipped with a log line):

- its shape: http or https, a host, no userinfo, no query, no fragment (a `?` or `#` would
  make the relay's own path a query string or a fragment: any path of any host);
- by default, no link-local or cloud-metadata address (169.254.0.0/16, fe80::/10, AWS's
  fd00:ec2::254, metadata.google.internal, ...), written as a name, an address in any of the
  forms a resolver accepts (`2852039166`, `0xa9fea9fe`, `::ffff:169.254.169.254`), or a name
  that resolves to one when the channel is written. OCTORELAY_UPSTREAM_ALLOW_LINK_LOCAL=1
  lifts this; loopback and private networks stay allowed (local and in-house upstreams);
- optionally https only (OCTORELAY_UPSTREAM_HTTPS_ONLY) and an allow-list of host globs
  (OCTORELAY_UPSTREAM_HOSTS).

Residual risk: a name checked at write time may resolve elsewhere later (DNS rebinding);
connections are not re-checked. OCTORELAY_UPSTREAM_HOSTS (names you control) or an egress
rule against 169.254.169.254 closes it.
"""
from __future__ import annotations

import fnmatch
import ipaddress
import re
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

LINK_LOCAL = (ipaddress.ip_network("169.254.0.0/16"), ipaddress.ip_network("fe80::/10"))
METADATA_ADDRESSES = frozenset(ipaddress.ip_address(a) for a in (
    "fd00:ec2::254",     # AWS IMDS over IPv6
    "fd20:ce::254",      # Google Cloud metadata over IPv6
    "100.100.100.200",   # Alibaba Cloud metadata
))
METADATA_HOSTS = frozenset((
    "metadata", "metadata.google.internal", "metadata.goog",     # Google Cloud
    "instance-data", "instance-data.ec2.internal",               # AWS
    "metadata.azure.internal", "metadata.platformequinix.com", "metadata.packet.net",
))
ALLOW_SETTING = "OCTORELAY_UPSTREAM_ALLOW_LINK_LOCAL"
_HOST_NAME = re.compile(r"[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?)*\.?")
_LEGACY_IPV4 = re.compile(r"[0-9a-fx.]+")  # 2852039166, 0xa9fea9fe, 0251.0376.0251.0376, 169.254.43518
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def shape_problem(url: str) -> str | None:
    """What is wrong with `url` as an upstream root, naming the part; None when it is fine."""
    if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in url):
        return "must not contain spaces or control characters"
    if "\\" in url:
        return "must not contain a backslash"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        return f"is not a valid URL ({exc})"
    if parts.scheme.lower() not in ("http", "https"):
        return f"scheme {parts.scheme + ':' if parts.scheme else '(none)'} is not allowed: http or https only"
    if "@" in parts.netloc:
        return "must not carry a user or password (userinfo before '@'): put the key in api_key"
    if "?" in url:
        return "must not have a query ('?...'): the relay appends its own path"
    if "#" in url:
        return "must not have a fragment ('#...'): the relay appends its own path"
    host = parts.hostname
    if not host:
        return "has no host"
    if not _is_ip(host) and not _HOST_NAME.fullmatch(host):
        return f"host {host!r} is not a valid host name"
    if port == 0:
        return "has an invalid port (0)"
    return None


def normalise(url: str) -> str:
    """A checked URL as stored: scheme and host lower-cased, no trailing slash."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme.lower(), parts.netloc.lower(), parts.path.rstrip("/"), "", ""))


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


def _address(host: str):
    """The address a resolver would read `host` as, without asking DNS; None for a name."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    if _LEGACY_IPV4.fullmatch(host):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None


def _blocked(address) -> str | None:
    """How `address` reads when it is link-local or a metadata address (an IPv4 one inside an
    IPv6 address named too), else None."""
    inner = address
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            inner = address.ipv4_mapped
        elif address in _NAT64:
            inner = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if inner in METADATA_ADDRESSES or any(inner in net for net in LINK_LOCAL):
        return str(address) if inner == address else f"{address} ({inner})"
    return None


def metadata_problem(host: str, port: int | None = None, *, resolve: bool = False) -> str | None:
    """Why `host` is a link-local or metadata address (resolving a name when asked), or None."""
    name = host.lower().rstrip(".")
    if name in METADATA_HOSTS:
        return f"host {name!r} is a cloud metadata service"
    address = _address(name)
    if address is not None:
        blocked = _blocked(address)
        return f"address {blocked} is link-local or a cloud metadata service" if blocked else None
    if not resolve:
        return None
    try:
        infos = socket.getaddrinfo(name, port or 443, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return None  # not resolvable from here: nothing to refuse now (see the module's residual risk)
    for info in infos:
        try:
            resolved = info[4][0]
            if not isinstance(resolved, str):  # not an IP family's address: nothing to compare
                continue
            address = ipaddress.ip_address(resolved.split("%", 1)[0])
        except ValueError:
            continue
        blocked = _blocked(address)
        if blocked:
            return f"host {name!r} resolves to {blocked}, link-local or a cloud metadata service"
    return None


@dataclass(frozen=True)
class UpstreamPolicy:
    """Where channels may point (OCTORELAY_UPSTREAM_HTTPS_ONLY, OCTORELAY_UPSTREAM_HOSTS,
    OCTORELAY_UPSTREAM_ALLOW_LINK_LOCAL), so a leaked admin token cannot aim the relay, and
    its upstream keys, at internal addresses."""
    https_only: bool = False
    hosts: tuple[str, ...] = ()
    allow_link_local: bool = False

    def refusal(self, base_url: str | None, *, resolve: bool = False) -> str | None:
        """Why `base_url` is not allowed, or None. `resolve`: also look the host up in DNS
        (when a channel is written; never on the request path)."""
        if not base_url:
            return None
        problem = shape_problem(base_url)
        if problem:
            return problem
        parts = urlsplit(base_url)
        if self.https_only and parts.scheme.lower() != "https":
            return "must use https (OCTORELAY_UPSTREAM_HTTPS_ONLY is set)"
        host = (parts.hostname or "").lower()
        if self.hosts and not any(fnmatch.fnmatchcase(host, pattern) for pattern in self.hosts):
            return f"host {host!r} is not in OCTORELAY_UPSTREAM_HOSTS"
        if not self.allow_link_local:
            problem = metadata_problem(host, parts.port, resolve=resolve)
            if problem:
                return f"{problem}: refused unless {ALLOW_SETTING}=1"
        return None


DEFAULT_POLICY = UpstreamPolicy()  # the settings' defaults (frozen: safe to share as a default argument)
