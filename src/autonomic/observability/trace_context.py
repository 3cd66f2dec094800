"""A run's place in a trace: the W3C ``traceparent`` of its root span, kept in its journal.

A run may be driven by several processes (a crash, a takeover, a resume after an approval); each
must put its spans in the *same* trace, under the same root. The root's context is written into
``run.started`` (``RunStarted.trace``) when a run is created with tracing on. A run created
without it (tracing off then, or a journal older than tracing) gets one derived from its id, the
same in every process, so its later halves still agree with each other.

Pure: no OpenTelemetry import (the hot path pays nothing when tracing is off).
"""

from __future__ import annotations

import hashlib
import random
import re
from typing import NamedTuple

_getrandbits = random.getrandbits
_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")


class TraceContext(NamedTuple):
    """The trace id and the run's root span id (both non-zero, as the W3C format demands)."""

    trace_id: int
    span_id: int

    @property
    def traceparent(self) -> str:
        return f"00-{self.trace_id:032x}-{self.span_id:016x}-01"

    @staticmethod
    def parse(text: str | None) -> TraceContext | None:
        """The context in a ``traceparent`` header value; ``None`` when malformed or zero."""
        match = _TRACEPARENT.match((text or "").strip().lower())
        if match is None:
            return None
        trace_id, span_id = int(match.group(1), 16), int(match.group(2), 16)
        if trace_id == 0 or span_id == 0:
            return None
        return TraceContext(trace_id, span_id)

    @staticmethod
    def new(trace_id: int | None = None) -> TraceContext:
        """A fresh root (in ``trace_id`` when the run joins a trace already going on).

        Random as the SDK's ``RandomIdGenerator`` makes ids: ``random``, not ``secrets`` (an id
        names a trace, it guards nothing; ``secrets`` reads ``/dev/urandom``, two system calls a
        run). ``random`` reseeds in a forked child, so forked workers do not repeat ids."""
        return TraceContext(trace_id or (_getrandbits(128) or 1), _getrandbits(64) or 1)

    @staticmethod
    def of_run(run_id: str) -> TraceContext:
        """The context a run without a recorded one gets: derived from its id."""
        digest = hashlib.sha256(f"autonomic-trace:{run_id}".encode()).digest()
        return TraceContext(
            int.from_bytes(digest[:16], "big") or 1, int.from_bytes(digest[16:24], "big") or 1
        )
