"""The Anthropic-compatible client API under /v1: key auth, then the route's service."""
from flask import Blueprint, Response, current_app, g, request

from ..schemas.messages import check_messages_body, parse_json_body
from ..services import catalog
from ..services.auth import authenticate, key_from_headers
from ..services.relay import RelayCall
from .envelope import json_response, read_body, request_id

bp = Blueprint("client", __name__, url_prefix="/v1")


@bp.before_request
def _authenticate():
    key = authenticate(key_from_headers(request.headers), current_app.extensions["octorelay.key_cache"])
    g.key = key
    g.key_id = key.id


def _call(count_tokens: bool) -> RelayCall:
    raw = read_body()
    body = parse_json_body(raw)
    check_messages_body(body, count_tokens=count_tokens)
    return RelayCall(request_id(), g.key, body, raw, request.headers, count_tokens=count_tokens)


def _send(reply) -> Response:
    return Response(reply.body, status=reply.status, headers=reply.headers)


@bp.post("/messages")
def messages():
    return _send(current_app.extensions["octorelay.relay"].messages(_call(count_tokens=False)))


@bp.post("/messages/count_tokens")
def count_tokens():
    return _send(current_app.extensions["octorelay.relay"].count_tokens(_call(count_tokens=True)))


@bp.get("/models")
def list_models():
    return json_response(catalog.list_page(g.key, request.args))


@bp.get("/models/<path:model_id>")
def get_model(model_id):
    return json_response(catalog.get_model(g.key, model_id))
