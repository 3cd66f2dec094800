"""One JSON shape for every error the service answers, and the handlers that produce it.

Every error body is::

    {"error": {"status": 422, "code": "unknown_field", "message": "...", "hint": "..."}}

``message`` says what is wrong, ``hint`` what to do about it. No traceback ever reaches a client:
an unexpected exception is logged here (its digest, not its arguments) and answered as a 500 with
a reference to that log line.

Which autonomic error is which status: ``NotFound`` 404 (also another tenant's object, so that
existence does not leak), other ``UserError`` 400 (``InvalidInput`` 422, ``ApprovalRefused`` and
``IllegalTransition`` 409), ``ConcurrencyError`` 409, ``StoreUnavailable`` and
``BusUnavailable`` 503.
"""

from __future__ import annotations

import hashlib
import logging
import traceback
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from autonomic.errors import (
    ApprovalRefused,
    AutonomicError,
    BusUnavailable,
    ConcurrencyError,
    IllegalTransition,
    InvalidInput,
    NotFound,
    StoreUnavailable,
    UserError,
)

log = logging.getLogger("autonomic.service")


class ServiceError(AutonomicError):
    """An HTTP answer other than the domain's errors: it carries its own status."""

    status: int = 400

    def __init__(self, message: str, *, hint: str | None = None, code: str | None = None) -> None:
        super().__init__(message, hint=hint)
        if code is not None:
            self.code = code  # type: ignore[misc]


class Unauthenticated(ServiceError):
    """No credential, or one that is not (or no longer) valid: 401."""

    status = 401
    code = "unauthenticated"


class Forbidden(ServiceError):
    """A valid identity whose role does not allow the act: 403."""

    status = 403
    code = "forbidden"


class NotAvailable(ServiceError):
    """A route this service's configuration cannot answer (a service with no event bus): 501."""

    status = 501
    code = "not_available"


class TooLarge(ServiceError):
    status = 413
    code = "body_too_large"


def problem(status: int, code: str, message: str, hint: str | None = None) -> JSONResponse:
    """The one error response."""
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    body = {"error": {"status": status, "code": code, "message": message, "hint": hint}}
    return JSONResponse(body, status_code=status, headers=headers)


def status_of(exc: AutonomicError) -> int:
    """The HTTP status an autonomic error answers with."""
    if isinstance(exc, ServiceError):
        return exc.status
    if isinstance(exc, NotFound):
        return 404
    if isinstance(exc, ApprovalRefused | IllegalTransition | ConcurrencyError):
        return 409
    if isinstance(exc, InvalidInput):
        return 422
    if isinstance(exc, UserError):
        return 400
    if isinstance(exc, StoreUnavailable | BusUnavailable):
        return 503
    return 500


_PLACES = {"body": "the body", "query": "the query", "path": "the path", "header": "the headers"}


def _where(loc: tuple[Any, ...]) -> str:
    """``'task' in the body``, ``'limit' in the query``: the field a person must fix."""
    if loc and loc[0] in _PLACES:
        field = ".".join(str(p) for p in loc[1:])
        return f"{field!r} in {_PLACES[loc[0]]}" if field else _PLACES[loc[0]]
    return ".".join(str(p) for p in loc) or "the request"


def _validation(exc: RequestValidationError) -> JSONResponse:
    """Pydantic's findings as one line naming the first field to fix."""
    errors = list(exc.errors())
    if not errors:
        return problem(422, "invalid_request", "the request is not valid")
    first = errors[0]
    kind = str(first.get("type", ""))
    loc = tuple(first.get("loc", ()))
    where = _where(loc)
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    if kind == "json_invalid":
        detail = (first.get("ctx") or {}).get("error", "")
        return problem(
            400,
            "malformed_json",
            f"the body is not valid JSON: {detail}".rstrip(": "),
            "send a JSON object with Content-Type: application/json",
        )
    if kind == "extra_forbidden":
        return problem(
            422,
            "unknown_field",
            f"unknown field {where}{more}",
            "remove it; the request's schema is in /openapi.json",
        )
    if kind == "missing":
        return problem(422, "missing_field", f"{where} is required{more}", "add it")
    if kind in ("model_attributes_type", "dict_type") and loc[:1] == ("body",):
        return problem(
            422,
            "invalid_body",
            "the body must be a JSON object",
            "send a JSON object with Content-Type: application/json",
        )
    message = str(first.get("msg", "invalid value"))
    return problem(
        422, "invalid_value", f"{where}: {message}{more}", "the schema is in /openapi.json"
    )


def install(app: FastAPI) -> None:
    """Answer every error of ``app`` in the one shape."""

    async def on_validation(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return _validation(exc)

    async def on_autonomic(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, AutonomicError)
        status = status_of(exc)
        if status >= 500:
            return await on_unexpected(request, exc)
        return problem(status, exc.code, exc.message, exc.hint)

    async def on_http(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        if exc.status_code == 404:
            return problem(404, "no_route", f"no route {request.url.path}", "see /docs")
        if exc.status_code == 405:
            return problem(
                405, "method_not_allowed", f"{request.method} is not allowed on {request.url.path}"
            )
        return problem(exc.status_code, "http_error", str(exc.detail))

    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        digest = hashlib.sha256(text.encode()).hexdigest()[:12]
        log.error("unexpected %s on %s %s [%s]", type(exc).__name__, request.method,
                  request.url.path, digest)  # fmt: skip
        if isinstance(exc, StoreUnavailable | BusUnavailable):
            return problem(503, exc.code, exc.message, exc.hint)
        return problem(
            500, "internal", f"the service failed unexpectedly (reference {digest})",
            "try again; if it persists, give the reference to the operator",
        )  # fmt: skip

    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(AutonomicError, on_autonomic)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(Exception, on_unexpected)
