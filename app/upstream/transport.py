"""Sending one upstream request and reading its answer as it arrives.

One HTTPAdapter (its urllib3 pool) is shared by every thread of a worker,
so connections are reused. Requests go straight to the adapter as prepared
requests: a Session would add what the relay never wants (cookies kept and
merged, environment proxies and .netrc, redirects, hooks) and it cost a
tenth of a worker's CPU under load (issue 14's profile: cookie jars and
their locks built and merged twice per request).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Callable, Iterator

import requests
from urllib3.exceptions import ProtocolError, ReadTimeoutError

from ..errors import InvalidRequest
from ..wire.request import UpstreamRequest
from .cutoff import TrackedAdapter, abort_all

CONNECT_TIMEOUT_S = 10.0
READ_CHUNK = 65536


class TransportError(Exception):
    """No usable answer: `kind` is "connect" or "timeout" (before the head) or "broken" (mid-body)."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind
        self.message = message


MAX_BODY_BYTES = 32 * 1024 * 1024


@dataclass
class UpstreamResponse:
    """An answer whose head has arrived; `chunks()` yields body bytes as they come."""
    status: int
    headers: dict
    _chunks: Iterator[bytes] = field(repr=False)
    _close: Callable[[], None] | None = field(default=None, repr=False)
    max_bytes: int = MAX_BODY_BYTES  # what read() accepts: a whole body is held in memory

    def chunks(self) -> Iterator[bytes]:
        return self._chunks

    def read(self) -> bytes:
        """The whole body, at most `max_bytes` of it (a misbehaving upstream must not be able
        to fill the worker's memory); raises TransportError past that."""
        parts, size = [], 0
        for chunk in self._chunks:
            size += len(chunk)
            if size > self.max_bytes:
                raise TransportError("too_large", f"the upstream's answer is larger than "
                                                  f"{self.max_bytes // (1024 * 1024) or 1} MB")
            parts.append(chunk)
        return b"".join(parts)

    def close(self) -> None:
        if self._close is not None:
            self._close()


class HttpTransport:
    def __init__(self, pool_size: int = 64, max_body_bytes: int = MAX_BODY_BYTES):
        self.max_body_bytes = max_body_bytes
        self._adapter = TrackedAdapter(pool_connections=16, pool_maxsize=pool_size, max_retries=0,
                                       pool_block=False)

    def open(self, request: UpstreamRequest) -> UpstreamResponse:
        """POST and wait for the head; raises TransportError when none comes.
        No proxies from the environment, no .netrc, no cookies, no redirects followed."""
        try:
            prepared = requests.PreparedRequest()
            prepared.method = "POST"
            prepared.url = _prepared_url(request.url)
            prepared.prepare_headers(request.headers)  # checks every value (InvalidHeader)
            prepared.prepare_body(request.body, None)  # Content-Length
            resp = self._adapter.send(
                prepared, stream=True, verify=True, cert=None, proxies={},
                timeout=(min(CONNECT_TIMEOUT_S, request.timeout_s), request.timeout_s))
        except requests.exceptions.InvalidHeader:
            # A client's anthropic-* value requests will not send: the client's fault, not the
            # channel's. (The value is not echoed: the message could name our own key.)
            raise InvalidRequest("a request header value cannot be forwarded upstream") from None
        except requests.exceptions.ConnectTimeout as exc:
            raise TransportError("connect", f"connect timeout: {type(exc).__name__}") from None
        except requests.exceptions.Timeout:
            raise TransportError("timeout", "upstream did not answer in time") from None
        except requests.exceptions.RequestException as exc:
            raise TransportError("connect", f"upstream connection failed: {type(exc).__name__}") from None
        return UpstreamResponse(resp.status_code, dict(resp.headers), _iter_body(resp), resp.close,
                                self.max_body_bytes)

    def close(self) -> None:
        self._adapter.close()

    def abort_all(self) -> int:
        """A stopping worker: end every upstream call in flight now (see cutoff.py)."""
        return abort_all()


@lru_cache(maxsize=1024)  # channel URLs: a few per channel (Bedrock and Vertex put the model in the path)
def _prepared_url(url: str) -> str:
    """The URL as requests sends it (IDNA host, quoted path); raises requests' errors for a bad one."""
    prepared = requests.PreparedRequest()
    prepared.prepare_url(url, None)
    return prepared.url or url  # set by prepare_url (which raises for a URL it cannot prepare)


def _iter_body(resp: requests.Response) -> Iterator[bytes]:
    """Yield body bytes as they arrive: one chunk per HTTP chunk, or whatever a read returns.

    `iter_content(chunk_size=None)` would block until EOF on a non-chunked
    body, so read1() is used there; the upstream is asked for identity
    encoding, so no decoding is needed.
    """
    raw = resp.raw
    try:
        if raw.chunked:
            yield from raw.read_chunked(decode_content=False)
        else:
            while True:
                data = raw.read1(READ_CHUNK)
                if not data:
                    break
                yield data
    except ReadTimeoutError:
        raise TransportError("timeout", "upstream stalled mid-response") from None
    except (ProtocolError, OSError) as exc:
        raise TransportError("broken", f"upstream connection broke: {type(exc).__name__}") from None
    except requests.exceptions.RequestException as exc:
        raise TransportError("broken", f"upstream connection broke: {type(exc).__name__}") from None
