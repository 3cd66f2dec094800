"""The outermost layer of the app (plain ASGI): refuses oversized bodies and keeps every
unexpected exception away from the client.

* A body over ``max_body_bytes`` is answered 413 before the app sees it: at once when
  ``Content-Length`` says so, or as soon as the streamed bytes pass the limit.
* An exception that escapes the app (Starlette re-raises what its handlers answered as 500) is
  logged as one line with a digest, never a traceback, and answered in the one error shape if
  nothing was sent yet.
"""

from __future__ import annotations

import hashlib
import logging
import traceback
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from autonomic.service.problems import problem

log = logging.getLogger("autonomic.service")


class _TooLarge(Exception):
    pass


class Guard:
    """See the module docstring."""

    def __init__(self, app: ASGIApp, *, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_body_bytes
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
                if declared < 0 or declared > limit:
                    await self._refuse(scope, send, declared)
                    return
        seen = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise _TooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except _TooLarge:
            if not started:
                await self._refuse(scope, send, seen)
        except Exception as exc:
            text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
            digest = hashlib.sha256(text.encode()).hexdigest()[:12]
            if not started:
                log.error("unexpected %s on %s %s [%s]", type(exc).__name__,
                          scope.get("method"), scope.get("path"), digest)  # fmt: skip
                response = problem(
                    500, "internal", f"the service failed unexpectedly (reference {digest})",
                    "try again; if it persists, give the reference to the operator",
                )  # fmt: skip
                await response(scope, _drain, send)

    async def _refuse(self, scope: Scope, send: Send, size: int) -> None:
        shown = "an invalid Content-Length" if size < 0 else f"{size} bytes"
        response = problem(
            413,
            "body_too_large",
            f"the request body is too large ({shown}; at most {self.max_body_bytes} bytes)",
            "send a smaller body",
        )
        await response(scope, _drain, send)


async def _drain() -> dict[str, Any]:
    return {"type": "http.disconnect"}
