"""Liveness and readiness probes for load balancers and PaaS health checks."""
from flask import Blueprint, Response, current_app

from .. import metrics
from ..db import db
from .envelope import json_response

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz():
    """Alive: the process answers. Touches nothing else, so it stays up while the DB is down."""
    return json_response({"status": "ok"})


@bp.get("/readyz")
def readyz():
    checks = {}
    try:
        db.execute_sql("SELECT 1")
        checks["database"] = "ok"
    except Exception as exc:  # any failure means not ready; the probe must not 500
        checks["database"] = f"error: {type(exc).__name__}"
    redis_client = current_app.extensions.get("octorelay.redis")
    if redis_client is not None:
        try:
            redis_client.ping()
            checks["redis"] = "ok"
        except Exception as exc:
            checks["redis"] = f"error: {type(exc).__name__}"
    ready = all(v == "ok" for v in checks.values())
    return json_response({"status": "ready" if ready else "unavailable", "checks": checks},
                         200 if ready else 503)


@bp.get("/metrics")
def prometheus_metrics():
    body, content_type = metrics.render()
    return Response(body, content_type=content_type)
