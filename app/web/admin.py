"""The admin API (/admin/*): keys, channels, prices. Bearer admin token, JSON in and out."""
from flask import Blueprint, Response, current_app, request

from ..errors import InvalidRequest, PermissionDenied
from ..schemas import load
from ..schemas import usage as usage_query
from ..schemas.admin import ChannelSchema, KeySchema, PriceSchema
from ..schemas.json_body import parse_json_body
from ..services import channels, keys, prices, usage
from ..state import services
from .envelope import json_response, read_body

bp = Blueprint("admin", __name__, url_prefix="/admin")


@bp.before_request
def _require_admin():
    token = current_app.config["OCTORELAY"].admin_token
    if not token:
        raise PermissionDenied("the admin API is disabled: set OCTORELAY_ADMIN_TOKEN to enable it")
    require_bearer(token, "invalid admin token: send Authorization: Bearer $OCTORELAY_ADMIN_TOKEN")


def require_bearer(token: str, refusal: str) -> None:
    """401 unless the request carries `token`; failures throttled per client address (services/admin_guard.py)."""
    guard = services().admin_guard
    address = guard.client_address(request.remote_addr, request.headers.get("x-forwarded-for"))
    guard.authorize(token, request.headers.get("authorization", ""), address, request.path[:200], refusal)


def _body():
    """Strict JSON, as on the client API: lenient parsing let bad input through to the DB."""
    return parse_json_body(read_body())


def _no_content():
    return Response(status=204)


# keys ----------------------------------------------------------------------

@bp.post("/keys")
def create_key():
    key, raw = keys.create_key(load(KeySchema(), _body()))
    return json_response({**keys.serialize(key), "key": raw}, 201)


@bp.get("/keys")
def list_keys():
    return json_response({"data": [keys.serialize(k) for k in keys.list_keys()]})


@bp.get("/keys/<int:key_id>")
def show_key(key_id):
    return json_response(keys.serialize(keys.get_key(key_id)))


@bp.patch("/keys/<int:key_id>")
def update_key(key_id):
    fields = load(KeySchema(), _body(), partial=True)
    return json_response(keys.serialize(keys.update_key(key_id, fields)))


@bp.delete("/keys/<int:key_id>")
def revoke_key(key_id):
    keys.revoke_key(key_id)
    return _no_content()


# channels ------------------------------------------------------------------

@bp.post("/channels")
def create_channel():
    channel = channels.create_channel(load(ChannelSchema(), _body()), services().secrets, services().upstream_policy)
    return json_response(channels.serialize(channel), 201)


@bp.get("/channels")
def list_channels():
    return json_response({"data": [channels.serialize(c) for c in channels.list_channels()]})


@bp.get("/channels/<int:channel_id>")
def show_channel(channel_id):
    return json_response(channels.serialize(channels.get_channel(channel_id)))


@bp.patch("/channels/<int:channel_id>")
def update_channel(channel_id):
    fields = load(ChannelSchema(), _body(), partial=True)
    state = services()
    return json_response(channels.serialize(channels.update_channel(channel_id, fields, state.secrets,
                                                                    state.upstream_policy)))


@bp.post("/channels/<int:channel_id>/test")
def probe_channel(channel_id):
    """A minimal request through this one channel; 200 with ok false when the upstream fails."""
    return json_response(services().relay.probe(channel_id))


@bp.delete("/channels/<int:channel_id>")
def delete_channel(channel_id):
    channels.delete_channel(channel_id)
    return _no_content()


# prices --------------------------------------------------------------------

@bp.get("/prices")
def list_prices():
    return json_response({"data": [prices.serialize(p) for p in prices.list_prices()],
                          "unpriced": prices.unpriced_models()})


@bp.put("/prices/<path:model>")
def put_price(model):
    if len(model) > 200 or "\x00" in model:
        raise InvalidRequest("model: must be at most 200 characters, without NUL")
    price, created = prices.put_price(model, load(PriceSchema(), _body()))
    return json_response(prices.serialize(price), 201 if created else 200)


@bp.delete("/prices/<path:model>")
def delete_price(model):
    prices.delete_price(model)
    return _no_content()


# usage and logs ------------------------------------------------------------

@bp.get("/usage")
def get_usage():
    query = usage_query.parse_usage_query(request.args.to_dict(flat=False))
    return json_response({"data": usage.usage_report(**query)})


@bp.get("/logs")
def get_logs():
    query = usage_query.parse_logs_query(request.args.to_dict(flat=False))
    return json_response(usage.log_page(**query))
