"""The Anthropic-compatible client API under /v1: key auth, then the route's service."""
from flask import Blueprint, Response, g, request

from ..schemas.json_body import parse_json_body
from ..schemas.messages import check_messages_body
from ..services import catalog
from ..services.auth import authenticate, key_from_headers
from ..services.refusals import LOGGED_STATUSES
from ..services.relay import Relay, RelayCall
from ..state import services
from .envelope import json_response, read_body, request_id

bp = Blueprint("client", __name__, url_prefix="/v1")


@bp.before_request
def _authenticate():
    key = authenticate(key_from_headers(request.headers), services().key_cache)
    g.key = key
    g.key_id = key.id


def _call(relay: Relay, count_tokens: bool) -> RelayCall:
    """Refuse what the key's limits refuse before the body is read and parsed (issue 22): a key
    over its budget, rpm or concurrency never makes this worker read or parse its body."""
    admitted = relay.admit_before_body(g.key, count_tokens)
    try:
        raw = read_body()
        body = parse_json_body(raw)
        g.model, g.stream = body.get("model"), body.get("stream") is True  # for a refusal's log row
        check_messages_body(body, count_tokens=count_tokens)
    except BaseException:
        relay.abandon(admitted)
        raise
    # werkzeug's Headers is read as the Mapping it acts as (get and items, case-insensitive)
    # but is not registered as one
    headers = request.headers
    g.call = RelayCall(request_id(), g.key, body, raw, headers, count_tokens=count_tokens,  # type: ignore[arg-type]
                       admitted=admitted)
    return g.call


@bp.after_request
def _log_refusal(response: Response) -> Response:
    """A Messages request refused before the relay took charge of it still leaves a row."""
    if (request.endpoint == "client.messages" and response.status_code in LOGGED_STATUSES
            and "key" in g and not getattr(g.get("call"), "recorded", False)):
        error = (response.get_json(silent=True) or {}).get("error") or {}
        model = g.get("model") if isinstance(g.get("model"), str) else None
        services().refusals.record(
            request_id(), g.key.id, model, bool(g.get("stream")), response.status_code,
            str(error.get("type") or "invalid_request_error"))
    return response


def _relay(count_tokens: bool) -> Response:
    relay = services().relay
    call = _call(relay, count_tokens)
    try:
        reply = relay.count_tokens(call) if count_tokens else relay.messages(call)
    except BaseException:
        relay.abandon(call.admitted)  # refused before it was settled (model, price, budget)
        raise
    return Response(reply.body, status=reply.status, headers=reply.headers)


@bp.post("/messages")
def messages():
    return _relay(count_tokens=False)


@bp.post("/messages/count_tokens")
def count_tokens():
    return _relay(count_tokens=True)


@bp.get("/models")
def list_models():
    return json_response(catalog.list_page(g.key, request.args))


@bp.get("/models/<path:model_id>")
def get_model(model_id):
    return json_response(catalog.get_model(g.key, model_id))
