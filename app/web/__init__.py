"""The HTTP layer: thin Flask blueprints that parse, call a service, and render."""
from . import admin, client, cors, dashboard, envelope, health


def init_app(app) -> None:
    envelope.init_app(app)
    cors.init_app(app, app.config["OCTORELAY"].cors_origins)
    app.register_blueprint(health.bp)
    app.register_blueprint(client.bp)
    app.register_blueprint(admin.bp)
    app.register_blueprint(dashboard.bp)
