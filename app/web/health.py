"""Liveness and readiness probes for load balancers and PaaS health checks, and `GET /`'s signpost."""
from flask import Blueprint, Response, current_app

from .. import metrics
from ..db import db, describe_error, pending_migrations
from ..state import services
from .admin import require_bearer
from .envelope import json_response

bp = Blueprint("health", __name__)


@bp.get("/")
def root():
    """Someone opened the server's address: say what it is and where to go (no DB, no secrets)."""
    return json_response({
        "name": "octorelay",
        "message": "a relay for the Claude Messages API: clients POST /v1/messages with an octorelay key; "
                   "the admin console is at /dashboard",
        "dashboard": "/dashboard",
        "api": {"messages": "/v1/messages", "models": "/v1/models", "admin": "/admin"},
        "health": {"live": "/healthz", "ready": "/readyz"},
        "docs": "docs/api.md in octorelay's source (README.md to start)",
    })


@bp.get("/healthz")
def healthz():
    """Alive: the process answers. Touches nothing else, so it stays up while the DB is down."""
    return json_response({"status": "ok"})


@bp.get("/readyz")
def readyz():
    """Ready: the database answers and its schema is current (every migration applied), and
    Redis answers when configured. Each failure is named, so the operator knows what to fix."""
    checks = {}
    try:
        db.execute_sql("SELECT 1")
        checks["database"] = "ok"
    except Exception as exc:  # any failure means not ready; the probe must not 500
        checks["database"] = f"error: {describe_error(exc)}"
    if checks["database"] == "ok":
        try:
            pending = pending_migrations(db.obj)
            checks["schema"] = "ok" if not pending else (
                f"error: {len(pending)} migration(s) not applied ({', '.join(pending)}): "
                "run `octorelay db upgrade`")
        except Exception as exc:
            checks["schema"] = f"error: {describe_error(exc)}"
    redis_client = services().redis
    if redis_client is not None:
        try:
            redis_client.ping()
            checks["redis"] = "ok"
        except Exception as exc:
            checks["redis"] = f"error: {describe_error(exc)}"
    ready = all(v == "ok" for v in checks.values())
    return json_response({"status": "ready" if ready else "unavailable", "checks": checks},
                         200 if ready else 503)


@bp.get("/metrics")
def prometheus_metrics():
    """Prometheus text; behind OCTORELAY_METRICS_TOKEN when it is set (cost per model is business data)."""
    token = current_app.config["OCTORELAY"].metrics_token
    if token:
        require_bearer(token, "GET /metrics needs Authorization: Bearer $OCTORELAY_METRICS_TOKEN")
    body, content_type = metrics.render()
    return Response(body, content_type=content_type)
