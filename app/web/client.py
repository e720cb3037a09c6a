"""The Anthropic-compatible client API under /v1: key auth, then the route's service."""
from flask import Blueprint, current_app, g, request

from ..services import catalog
from ..services.auth import authenticate, key_from_headers
from .envelope import json_response

bp = Blueprint("client", __name__, url_prefix="/v1")


@bp.before_request
def _authenticate():
    key = authenticate(key_from_headers(request.headers), current_app.extensions["octorelay.key_cache"])
    g.key = key
    g.key_id = key.id


@bp.get("/models")
def list_models():
    return json_response(catalog.list_page(g.key, request.args))


@bp.get("/models/<path:model_id>")
def get_model(model_id):
    return json_response(catalog.get_model(g.key, model_id))
