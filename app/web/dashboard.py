"""The web console at /dashboard: page shells only; their scripts call the admin API.

The server hands out no data and holds no session: the browser keeps the admin
token in sessionStorage and sends it as a bearer header to /admin/*, so the
admin API stays the single source of truth and there is no cookie to forge.
"""
from flask import Blueprint, current_app, render_template, request

bp = Blueprint("dashboard", __name__, url_prefix="/dashboard")

# page endpoint -> (path, title); also the navigation, in this order
PAGES = {
    "overview": ("/", "Overview"),
    "keys": ("/keys", "Keys"),
    "channels": ("/channels", "Channels"),
    "logs": ("/logs", "Logs"),
    "prices": ("/prices", "Prices"),
}

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def _render(template: str, page: str, title: str):
    if not current_app.config["OCTORELAY"].admin_token:
        return render_template("dashboard/setup.html", page=None, title="Set an admin token", pages=PAGES)
    return render_template(template, page=page, title=title, pages=PAGES, **_channel_form())


def _channel_form() -> dict:
    """The channel form's type list and per-type fields, from the type registry (no data, no secrets)."""
    from ..channel_types import CHANNEL_TYPES

    types = [t.public() for t in CHANNEL_TYPES.values()]
    option_fields: dict[str, str] = {}
    for t in types:
        for option in t["options"]:
            option_fields.setdefault(option["name"], option["help"])
    return {"channel_types": types, "option_fields": option_fields}


def _page_view(page: str, title: str):
    def view():
        return _render(f"dashboard/{page}.html", page, title)
    view.__name__ = page
    return view


for _page, (_path, _title) in PAGES.items():
    bp.add_url_rule(_path, view_func=_page_view(_page, _title))


@bp.get("/signin")
def signin():
    return _render("dashboard/signin.html", None, "Sign in")


@bp.after_app_request
def _secure(response):
    """Dashboard pages and their static files (the app's /static) get a strict CSP."""
    if request.blueprint == bp.name or request.endpoint == "static":
        response.headers.update(SECURITY_HEADERS)
    return response
