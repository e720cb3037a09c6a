"""Loopback fakes of AWS Bedrock and Google Vertex AI that check what the real services check.

They answer through the scripted upstream (tests/support/upstream.py: `upstream.set_default(fake)`):

- `FakeBedrock` recomputes each request's SigV4 signature with botocore's own
  signer (from the headers the request says it signed, its body, the same
  credentials) and refuses a mismatch, a stale date or an unknown key id as
  AWS does; streams answer in real AWS event-stream frames (`event_frame`:
  prelude, headers, payload, CRC32s), `exception` frames included.
- `FakeVertex` is also the OAuth token endpoint its service-account JSON's
  `token_uri` points at: it verifies the JWT assertion's RS256 signature with
  the account's public key and hands out short-lived tokens, which its
  rawPredict / streamRawPredict / count-tokens endpoints then require.

No cloud is ever called: every URL is the loopback upstream's.
"""
from __future__ import annotations

import base64
import hmac
import json
import re
import secrets
import struct
import threading
import time
import zlib
from datetime import datetime, timezone
from typing import Callable
from urllib.parse import parse_qs, unquote

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from tests.support.upstream import (Answer, BodyAnswer, RecordedRequest, StreamAnswer, anthropic_message,
                                    anthropic_stream_events, json_answer, sse_answer)

# --------------------------------------------------------------------------- AWS event stream


def event_frame(headers: dict[str, str], payload: bytes) -> bytes:
    """One AWS event-stream message: total and header lengths, prelude CRC, string headers
    (type 7), payload, message CRC. botocore only decodes these, so tests build them here."""
    encoded = b"".join(
        struct.pack(">B", len(name)) + name.encode() + b"\x07" + struct.pack(">H", len(value.encode()))
        + value.encode() for name, value in headers.items())
    prelude = struct.pack(">II", 12 + len(encoded) + len(payload) + 4, len(encoded))
    message = prelude + struct.pack(">I", zlib.crc32(prelude)) + encoded + payload
    return message + struct.pack(">I", zlib.crc32(message))


def event_json(event: dict) -> bytes:
    """An Anthropic event as Anthropic serialises it in a stream (compact JSON)."""
    return json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode()


def chunk_frame(event: dict) -> bytes:
    """A Bedrock `chunk` event carrying one Anthropic event, base64 JSON (plus Bedrock's padding)."""
    payload = {"bytes": base64.b64encode(event_json(event)).decode(), "p": "abcdefgh"}
    return event_frame({":event-type": "chunk", ":content-type": "application/json", ":message-type": "event"},
                       json.dumps(payload).encode())


def exception_frame(name: str, message: str) -> bytes:
    return event_frame({":exception-type": name, ":content-type": "application/json",
                        ":message-type": "exception"}, json.dumps({"message": message}).encode())


def bedrock_stop_event() -> dict:
    """Bedrock's message_stop carries invocation metrics Anthropic never sends."""
    return {"type": "message_stop", "amazon-bedrock-invocationMetrics": {
        "inputTokenCount": 25, "outputTokenCount": 15, "invocationLatency": 321, "firstByteLatency": 120}}


def sse_of(events) -> bytes:
    """The SSE bytes Anthropic would send for `events` (what the relay must produce)."""
    return b"".join(b"event: " + e["type"].encode() + b"\ndata: " + event_json(e) + b"\n\n" for e in events)


# --------------------------------------------------------------------------- Bedrock

AWS_KEY_ID = "AKIAOCTORELAYTEST01"
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYOCTORELAYKEY"
AWS_SESSION_TOKEN = "IQoJb3JpZ2luX2VjEOCTORELAY//session-token-for-tests"
BEDROCK_API_KEY = "ABSKQmVkcm9ja0FQSUtleS1vY3RvcmVsYXktdGVzdA=="
SIGV4 = re.compile(r"^AWS4-HMAC-SHA256 Credential=(?P<key>[^/]+)/(?P<date>\d{8})/(?P<region>[^/]+)/"
                   r"(?P<service>[^/]+)/aws4_request, SignedHeaders=(?P<signed>[a-z0-9;-]+), "
                   r"Signature=(?P<signature>[0-9a-f]{64})$")
PATH = re.compile(r"^/model/(?P<model>[^/]+)/(?P<action>invoke|invoke-with-response-stream|count-tokens)$")


def aws_error(status: int, name: str, message: str) -> BodyAnswer:
    return json_answer({"message": message}, status, {"x-amzn-ErrorType": f"{name}:http://internal.amazon.com/",
                                                      "x-amzn-RequestId": secrets.token_hex(8)})


def event_stream_answer(frames: list[bytes], delay: float = 0.0) -> StreamAnswer:
    return StreamAnswer(frames, [delay] * len(frames), headers={
        "Content-Type": "application/vnd.amazon.eventstream", "x-amzn-RequestId": secrets.token_hex(8)})


class FakeBedrock:
    """Bedrock runtime for one account and region. `respond(call)` may be replaced by a test: it
    gets a `BedrockCall` and returns an Answer; the default answers like Claude would."""

    def __init__(self, region: str = "us-east-1", key_id: str = AWS_KEY_ID, secret: str = AWS_SECRET,
                 session_token: str | None = AWS_SESSION_TOKEN, api_key: str | None = BEDROCK_API_KEY):
        self.region, self.key_id, self.secret, self.session_token = region, key_id, secret, session_token
        self.api_key = api_key
        self.calls: list[BedrockCall] = []
        self.refusals: list[str] = []
        self.respond: Callable[[BedrockCall], Answer] = default_bedrock_answer

    def __call__(self, request: RecordedRequest) -> Answer:
        refusal = self.authenticate(request)
        if refusal is not None:
            self.refusals.append(refusal[1])
            return aws_error(403, *refusal)
        match = PATH.match(request.path.split("?", 1)[0])
        if request.method != "POST" or match is None:
            return aws_error(404, "UnknownOperationException", "unknown operation")
        call = BedrockCall(unquote(match["model"]), match["action"], request)
        problem = call.problem()
        if problem:
            return aws_error(400, "ValidationException", problem)
        self.calls.append(call)
        return self.respond(call)

    def authenticate(self, request: RecordedRequest) -> tuple[str, str] | None:
        """None when AWS would accept the request's credentials, else (exception, message)."""
        auth = request.headers.get("authorization", "")
        if auth.startswith("Bearer "):
            if self.api_key and hmac.compare_digest(auth[7:].encode(), self.api_key.encode()):
                return None
            return "UnrecognizedClientException", "The security token included in the request is invalid."
        match = SIGV4.match(auth)
        if match is None:
            return "MissingAuthenticationTokenException", "Missing Authentication Token"
        if match["key"] != self.key_id:
            return "UnrecognizedClientException", "The security token included in the request is invalid."
        if (match["region"], match["service"]) != (self.region, "bedrock"):
            return "InvalidSignatureException", "Credential should be scoped to a valid region and service."
        amz_date = request.headers.get("x-amz-date", "")
        try:
            signed_at = datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=timezone.utc)
        except ValueError:
            return "IncompleteSignatureException", "X-Amz-Date is missing or malformed"
        if abs((datetime.now(timezone.utc) - signed_at).total_seconds()) > 300:
            return "InvalidSignatureException", "Signature expired"
        if self.session_token and request.headers.get("x-amz-security-token") != self.session_token:
            return "UnrecognizedClientException", "The security token included in the request is invalid."
        names = match["signed"].split(";")
        if "host" not in names or "x-amz-date" not in names:
            return "InvalidSignatureException", "host and x-amz-date must be signed"
        aws = AWSRequest(method=request.method, url=f"http://{request.headers['host']}{request.path}",
                         data=request.body, headers={name: request.headers.get(name, "") for name in names})
        aws.context["timestamp"] = amz_date
        signer = SigV4Auth(Credentials(self.key_id, self.secret, self.session_token), "bedrock", self.region)
        expected = signer.signature(signer.string_to_sign(aws, signer.canonical_request(aws)), aws)
        if not hmac.compare_digest(expected, match["signature"]):
            return "InvalidSignatureException", ("The request signature we calculated does not match "
                                                 "the signature you provided.")
        return None


class BedrockCall:
    def __init__(self, model: str, action: str, request: RecordedRequest):
        self.model, self.action, self.request = model, action, request
        outer = request.json()
        if action == "count-tokens":
            self.body = json.loads(base64.b64decode(outer["input"]["invokeModel"]["body"]))
        else:
            self.body = outer

    @property
    def stream(self) -> bool:
        return self.action == "invoke-with-response-stream"

    def problem(self) -> str | None:
        """What Bedrock's validation refuses in an Anthropic body."""
        if self.body.get("anthropic_version") != "bedrock-2023-05-31":
            return "anthropic_version: bedrock-2023-05-31 required"
        for name in ("model", "stream"):
            if name in self.body:
                return f"extraneous key [{name}] is not permitted"
        if self.action == "count-tokens" and not self.model.startswith("anthropic."):
            return "The provided model doesn't support counting tokens."
        return None


def default_bedrock_answer(call: BedrockCall) -> Answer:
    if call.action == "count-tokens":
        return json_answer({"inputTokens": 42})
    if call.stream:
        return event_stream_answer(bedrock_frames(anthropic_events(["Hello", " from", " Bedrock"])))
    return json_answer(anthropic_message("Hello from Bedrock", model=call.model),
                       headers={"x-amzn-RequestId": secrets.token_hex(8)})  # Bedrock sends one on every answer


def anthropic_events(chunks, **kwargs) -> list[dict]:
    """tests.support.upstream's streamed reply as plain event dicts."""
    return [data for _, data in anthropic_stream_events(chunks, **kwargs)]


def bedrock_frames(events: list[dict]) -> list[bytes]:
    """Chunk frames for `events`, message_stop with Bedrock's metrics as Bedrock sends it."""
    return [chunk_frame(bedrock_stop_event() if e["type"] == "message_stop" else e) for e in events]


# --------------------------------------------------------------------------- Vertex


def b64url(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def unb64url(data: str) -> bytes:
    return base64.urlsafe_b64decode(data + "=" * (-len(data) % 4))


GOOGLE_TOKEN_AUDIENCE = "https://oauth2.googleapis.com/token"  # what google-auth puts in `aud`, whatever token_uri


class FakeVertex:
    """Vertex AI for one project, and the token endpoint of one service account."""

    TOKEN_PATH = "/token"

    def __init__(self, base_url: str, project: str = "octo-test-project", expires_in: int = 3600,
                 token_delay: float = 0.0):
        self.project = project
        self.expires_in = expires_in
        self.token_delay = token_delay
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = self._key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()).decode()
        self.service_account = {
            "type": "service_account", "project_id": project, "private_key_id": secrets.token_hex(20),
            "private_key": pem, "client_email": f"octorelay@{project}.iam.gserviceaccount.com",
            "client_id": "100000000000000000001", "token_uri": base_url + self.TOKEN_PATH,
            "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        }
        self.tokens: dict[str, float] = {}  # access token -> expiry (monotonic)
        self.token_requests = 0
        self.calls: list[VertexCall] = []
        self.refusals: list[str] = []
        self.respond: Callable[[VertexCall], Answer] = default_vertex_answer
        self._lock = threading.Lock()

    def __call__(self, request: RecordedRequest) -> Answer:
        if request.path == self.TOKEN_PATH:
            return self.token(request)
        auth = request.headers.get("authorization", "")
        expiry = self.tokens.get(auth[7:]) if auth.startswith("Bearer ") else None
        if expiry is None or expiry < time.monotonic():
            self.refusals.append("token")
            return google_error(401, "UNAUTHENTICATED", "Request had invalid authentication credentials.")
        match = re.match(rf"^/v1/projects/{re.escape(self.project)}/locations/(?P<region>[a-z0-9-]+)/publishers/"
                         r"anthropic/models/(?P<model>[^/:]+):(?P<method>rawPredict|streamRawPredict)$",
                         request.path)
        if match is None:
            return google_error(404, "NOT_FOUND", f"The requested URL {request.path} was not found.")
        call = VertexCall(match["region"], unquote(match["model"]), match["method"], request)
        problem = call.problem()
        if problem:
            return json_answer({"type": "error", "error": {"type": "invalid_request_error", "message": problem}}, 400)
        self.calls.append(call)
        return self.respond(call)

    def token(self, request: RecordedRequest) -> Answer:
        """Google's JWT-bearer grant: the assertion must be signed by the account's key."""
        with self._lock:
            self.token_requests += 1
        if self.token_delay:
            time.sleep(self.token_delay)
        form = {k: v[0] for k, v in parse_qs(request.body.decode()).items()}
        if form.get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer":
            return json_answer({"error": "unsupported_grant_type"}, 400)
        try:
            header_b64, claims_b64, signature = form["assertion"].split(".")
            header, claims = json.loads(unb64url(header_b64)), json.loads(unb64url(claims_b64))
            self._key.public_key().verify(unb64url(signature), f"{header_b64}.{claims_b64}".encode(),
                                          padding.PKCS1v15(), hashes.SHA256())
        except Exception:  # noqa: BLE001 - any defect is Google's invalid_grant
            self.refusals.append("assertion")
            return json_answer({"error": "invalid_grant", "error_description": "Invalid JWT Signature."}, 400)
        now = time.time()
        account = self.service_account
        if (header.get("alg") != "RS256" or claims.get("iss") != account["client_email"]
                or claims.get("aud") not in (account["token_uri"], GOOGLE_TOKEN_AUDIENCE) or not claims.get("iat", 0) - 300 <= now < claims.get("exp", 0)
                or "https://www.googleapis.com/auth/cloud-platform" not in claims.get("scope", "").split()):
            self.refusals.append("claims")
            return json_answer({"error": "invalid_grant", "error_description": "Invalid JWT."}, 400)
        token = "ya29.fake-" + secrets.token_urlsafe(24)
        self.tokens[token] = time.monotonic() + self.expires_in
        return json_answer({"access_token": token, "expires_in": self.expires_in, "token_type": "Bearer"})

    def other_key_account(self) -> dict:
        """The same account with a key the token endpoint does not know (a revoked key)."""
        other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = other.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()).decode()
        return {**self.service_account, "private_key": pem, "private_key_id": secrets.token_hex(20)}


class VertexCall:
    def __init__(self, region: str, model: str, method: str, request: RecordedRequest):
        self.region, self.model, self.method, self.request = region, model, method, request
        self.body = request.json()

    @property
    def count_tokens(self) -> bool:
        return self.model == "count-tokens"

    def problem(self) -> str | None:
        if self.body.get("anthropic_version") != "vertex-2023-10-16":
            return "anthropic_version: vertex-2023-10-16 required"
        if self.count_tokens != ("model" in self.body):
            return "model: only the count-tokens endpoint takes the model in the body"
        if (self.method == "streamRawPredict") != (self.body.get("stream") is True):
            return "stream: use streamRawPredict for streams"
        return None


def default_vertex_answer(call: VertexCall) -> Answer:
    if call.count_tokens:
        return json_answer({"input_tokens": 17})
    if call.method == "streamRawPredict":
        return sse_answer(anthropic_stream_events(["Hello", " from", " Vertex"], model=call.model))
    return json_answer(anthropic_message("Hello from Vertex", model=call.model))


def google_error(status: int, code: str, message: str) -> BodyAnswer:
    return json_answer({"error": {"code": status, "message": message, "status": code}}, status)

