"""Bedrock's transport: HTTP with an AWS SigV4 signature added at send time, by botocore.

The signature covers the method, URL, the headers sent and a hash of the
body, and carries a timestamp AWS accepts for a few minutes: so it is made
here, just before the request leaves, never ahead by the adaptor. botocore's
signer is used as is (hand-rolled SigV4 is a classic source of subtle bugs).
"""
from __future__ import annotations

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from ..wire.request import UpstreamRequest
from .transport import HttpTransport, UpstreamResponse


def sign(request: UpstreamRequest) -> dict:
    """The request's headers plus X-Amz-Date, X-Amz-Security-Token (temporary keys) and Authorization."""
    if request.auth is None:
        raise ValueError("a SigV4 request carries its credentials in `auth`")
    params = request.auth.params
    credentials = Credentials(params["aws_access_key_id"], params["aws_secret_access_key"],
                              params.get("aws_session_token") or None)
    aws = AWSRequest(method="POST", url=request.url, data=request.body, headers=dict(request.headers))
    SigV4Auth(credentials, params.get("service") or "bedrock", params["region"]).add_auth(aws)
    return dict(aws.headers.items())


class AwsTransport:
    """Signs requests that carry AWS keys; sends every request over the shared HTTP transport."""

    def __init__(self, http: HttpTransport):
        self.http = http

    def open(self, request: UpstreamRequest) -> UpstreamResponse:
        if request.auth is not None and request.auth.kind == "aws-sigv4":
            request = UpstreamRequest(request.url, sign(request), request.body, request.timeout_s)
        return self.http.open(request)

    def close(self) -> None:
        pass  # the shared HTTP transport is closed by its owner
