"""Per-call context the model port has no parameters for: priority, deadline, run and tenant.

The ``Model`` port is ``complete(messages, tools)``; what a call may wait for, how much it matters
and whom it is billed to travel in a context variable that the engine sets around a run's model
calls (``with call_context(priority=..., deadline=..., run_id=..., tenant=...)``), so every model
keeps the same one-method port.
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from autonomic.gateway.provider import Priority


@dataclass(frozen=True, slots=True)
class CallContext:
    """How the current call may be served."""

    priority: Priority = Priority.NORMAL
    deadline: float | None = None
    """``time.monotonic()`` value after which the call must have failed; None: gateway default."""
    run_id: str | None = None
    tenant: str | None = None

    def remaining(self, default: float) -> float:
        """Seconds left before the deadline (``default`` from now when there is none)."""
        if self.deadline is None:
            return default
        return max(0.0, self.deadline - time.monotonic())


_current: contextvars.ContextVar[CallContext] = contextvars.ContextVar(
    "autonomic_gateway_call",
    default=CallContext(),  # noqa: B039 - frozen, so sharing the default is safe
)


def current_call() -> CallContext:
    """The context of the call being made (defaults: normal priority, no deadline)."""
    return _current.get()


@contextmanager
def call_context(
    *,
    priority: Priority | str = Priority.NORMAL,
    timeout: float | None = None,
    deadline: float | None = None,
    run_id: str | None = None,
    tenant: str | None = None,
) -> Iterator[CallContext]:
    """Model calls inside the block use this priority, deadline (absolute monotonic, or
    ``timeout`` seconds from now; the earlier wins), run and tenant."""
    if timeout is not None:
        t = time.monotonic() + timeout
        deadline = t if deadline is None else min(deadline, t)
    ctx = CallContext(Priority(priority), deadline, run_id, tenant)
    token = _current.set(ctx)
    try:
        yield ctx
    finally:
        _current.reset(token)
