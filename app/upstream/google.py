"""Vertex AI's transport: HTTP with an OAuth access token from a service account, via google-auth.

Getting a token is a signed-JWT exchange with the key file's `token_uri`
(honoured as given, so tests can point it at loopback). Tokens last an hour:
each worker keeps one per service account and refreshes it before it
expires (google-auth treats a token as stale a few minutes early), one
refresh at a time per account, so a burst of requests waits for one exchange
instead of starting hundreds.
"""
from __future__ import annotations

import functools
import threading
from http.cookiejar import DefaultCookiePolicy
from typing import Mapping

import requests

from ..wire.request import UpstreamRequest
from .transport import HttpTransport, TransportError, UpstreamResponse

SCOPES = ("https://www.googleapis.com/auth/cloud-platform",)
TOKEN_TIMEOUT_S = 15.0
MAX_ACCOUNTS = 256


class _Account:
    """One service account's credentials and the lock its refreshes take turns on."""

    def __init__(self, info: Mapping):
        from google.oauth2 import service_account

        self.credentials = service_account.Credentials.from_service_account_info(info, scopes=list(SCOPES))
        self.lock = threading.Lock()


class GoogleTransport:
    """Adds `Authorization: Bearer <access token>`; sends over the shared HTTP transport."""

    def __init__(self, http: HttpTransport):
        self.http = http
        self._accounts: dict[tuple, _Account] = {}
        self._lock = threading.Lock()
        self._token_session = requests.Session()
        self._token_session.trust_env = False  # never a proxy or .netrc from the environment
        self._token_session.cookies.set_policy(DefaultCookiePolicy(allowed_domains=[]))

    def open(self, request: UpstreamRequest) -> UpstreamResponse:
        if request.auth is None or request.auth.kind != "google-service-account":
            return self.http.open(request)
        token = self.token(request.auth.params)
        headers = {**request.headers, "authorization": f"Bearer {token}"}
        return self.http.open(UpstreamRequest(request.url, headers, request.body, request.timeout_s))

    def token(self, info: Mapping) -> str:
        """A valid access token for this service account: the cached one, or a fresh one."""
        account = self._account(info)
        if not account.credentials.valid:
            with account.lock:  # one refresh at a time; the others then find a fresh token
                if not account.credentials.valid:
                    self._refresh(account)
        return account.credentials.token

    def _account(self, info: Mapping) -> _Account:
        # the same str objects every request (from the channel cache): their hashes are cached
        key = (info.get("client_email"), info.get("private_key_id"), info.get("token_uri"), info.get("private_key"))
        account = self._accounts.get(key)
        if account is None:
            with self._lock:
                account = self._accounts.get(key)
                if account is None:
                    try:
                        account = _Account(info)
                    except (ValueError, KeyError) as exc:
                        raise TransportError("connect", f"the service-account key is unusable: "
                                                        f"{type(exc).__name__}") from None
                    if len(self._accounts) >= MAX_ACCOUNTS:
                        self._accounts.clear()
                    self._accounts[key] = account
        return account

    def _refresh(self, account: _Account) -> None:
        from google.auth import exceptions
        from google.auth.transport.requests import Request

        request = functools.partial(Request(self._token_session), timeout=TOKEN_TIMEOUT_S)
        try:
            account.credentials.refresh(request)
        except exceptions.RefreshError as exc:
            # google-auth's message is the token endpoint's error code and description: no secret.
            reason = str(exc.args[0])[:200] if exc.args else type(exc).__name__
            raise TransportError("connect", f"Google refused the channel's service account: {reason}") from None
        except exceptions.TransportError as exc:
            raise TransportError("connect", f"Google token endpoint unreachable: {type(exc).__name__}") from None

    def close(self) -> None:
        self._token_session.close()
