"""The live timeline: a run's new journal entries as server-sent events, while the run moves.

The page subscribes with htmx's SSE extension (``sse-connect``). Each new entry is sent as an
event ``step`` whose data is the same ``<li>`` the page draws for it, and each change of the
run's status as ``status``; when the run has ended and every entry has been sent, ``end`` tells
the page to close the stream. Event ids are journal seqs, so a browser that reconnects (it does
so by itself) sends ``Last-Event-ID`` and gets only what it has not seen.

The stream reads the store: the journal is the truth, in any process, so a step committed by a
worker on another machine appears as soon as it is committed, with no message bus in between.
It polls (``POLL_S``) because neither database tells a reader when a row arrives; the query is an
indexed range read of the entries after the last seq sent.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

from fastapi import Request

from autonomic.core.run import Run
from autonomic.errors import NotFound
from autonomic.service.console.rendering import environment, render_fragment
from autonomic.service.console.scope import Scope
from autonomic.service.console.views import step_of

POLL_S = 0.5
"""How often the stream looks for new entries."""
HEARTBEAT_S = 15.0
"""A comment line this often keeps proxies from closing a quiet stream."""
MAX_STREAM_S = 600.0
"""A stream ends after this long; the browser reconnects with Last-Event-ID (nothing is lost)."""


def event(name: str, data: str, *, ident: int | None = None) -> str:
    """One server-sent event; every line of ``data`` gets its own ``data:`` field."""
    lines = [f"event: {name}"]
    if ident is not None:
        lines.append(f"id: {ident}")
    lines.extend(f"data: {line}" for line in data.splitlines() or [""])
    return "\n".join(lines) + "\n\n"


async def stream(request: Request, scope: Scope, run: Run, *, after: int) -> AsyncIterator[str]:
    """Events for ``run`` from journal seq ``after`` on, until it ends or the client leaves."""
    started_at = run.created_at  # the first entry's time: the run is created with it
    step_url = request.url_for("console.run", run_id=run.id).path + "/steps"
    row = environment().get_template("_step.html").module.step  # type: ignore[attr-defined]
    status = None
    last = after
    began = beat = time.monotonic()
    yield "retry: 2000\n\n"
    while True:
        try:
            current = await scope.run(run.id)
        except NotFound:
            yield event("end", "")
            return
        for entry in await scope.journal(run.id, after_seq=last):
            html = str(row(step_of(entry, started_at), step_url))
            yield event("step", html, ident=entry.seq)
            last = entry.seq
        if current.status != status:
            status = current.status
            yield event("status", render_fragment(request, "_status.html", {"run": current}))
        if current.status.terminal:
            # the run row was read before the journal: every entry of a finished run is sent
            yield event("end", "")
            return
        now = time.monotonic()
        if now - began > MAX_STREAM_S or await request.is_disconnected():
            return
        if now - beat > HEARTBEAT_S:
            beat = now
            yield ": still here\n\n"
        await asyncio.sleep(POLL_S)
