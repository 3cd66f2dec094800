"""Turning templates into responses: the Jinja2 environment, the helpers every page uses, and the
vendored static files (served from the package, so the console works with no network at all)."""

from __future__ import annotations

import datetime as dt
from functools import cache
from importlib import resources
from typing import Any

import jinja2
from fastapi import Request
from fastapi.responses import HTMLResponse, Response

from autonomic.service.console import access
from autonomic.service.console.views import duration, status_tone

_STATIC_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".png": "image/png",
    ".svg": "image/svg+xml",
}

_SECURITY_HEADERS = {
    # The pages load nothing from elsewhere; htmx needs no eval and no inline script.
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


@cache
def environment() -> jinja2.Environment:
    """One environment per process: templates are compiled once, autoescaped always."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("autonomic.service.console", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.globals.update(tone=status_tone, clock=clock, iso=iso, duration=duration)
    return env


def render(
    request: Request,
    template: str,
    context: dict[str, Any],
    *,
    identity: access.Identity | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    """``template`` rendered with ``context`` and what every page needs: links, the signed-in
    identity, its CSRF token."""
    html = render_fragment(request, template, context, identity=identity)
    return HTMLResponse(html, status_code=status_code, headers=_SECURITY_HEADERS)


def render_fragment(
    request: Request,
    template: str,
    context: dict[str, Any],
    *,
    identity: access.Identity | None = None,
) -> str:
    def url(route: str, /, **params: Any) -> str:
        return str(request.url_for(f"console.{route}", **params).path)

    def static(name: str) -> str:
        return url("static", name=name)

    base: dict[str, Any] = {
        "url": url,
        "static": static,
        "identity": identity,
        "csrf": access.csrf_token(request) if identity is not None else "",
        "section": "",
        "flash": None,
        "flash_tone": None,
        "pending_count": 0,
    }
    return environment().get_template(template).render(base | context)


def static_file(name: str) -> Response:
    """A vendored file by its bare name; anything else (a path, an unknown name) is a 404."""
    suffix = "." + name.rsplit(".", 1)[-1] if "." in name else ""
    if "/" in name or "\\" in name or name.startswith(".") or suffix not in _STATIC_TYPES:
        return Response("not found", status_code=404, media_type="text/plain")
    resource = resources.files("autonomic.service.console").joinpath("static", name)
    if not resource.is_file():
        return Response("not found", status_code=404, media_type="text/plain")
    return Response(
        resource.read_bytes(),
        media_type=_STATIC_TYPES[suffix],
        headers={"Cache-Control": "public, max-age=3600", "X-Content-Type-Options": "nosniff"},
    )


def clock(ts: float) -> str:
    """A timestamp as the server's UTC wall clock, to the second."""
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="seconds")
