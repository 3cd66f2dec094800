"""A run: one execution of an agent, and the lifecycle it moves through.

The lifecycle is an enum plus a transition table, so every status change is checked in one place and
an illegal one raises an error that names it.
"""

from __future__ import annotations

import dataclasses
import enum
import operator
import re
from dataclasses import dataclass, field
from typing import Any

from autonomic.errors import IllegalTransition, InvalidInput


class RunStatus(enum.StrEnum):
    """Where a run is in its life."""

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    WAITING_FOR_HUMAN = "WAITING_FOR_HUMAN"
    WAITING_FOR_CHILD = "WAITING_FOR_CHILD"
    """It handed a subtask to a child run and waits, as a row holding no worker, for the child's
    outcome (``engine/delegation.py``); the outcome reopens it."""
    SUSPENDED = "SUSPENDED"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def terminal(self) -> bool:
        """Terminal runs never change again."""
        return self in _TERMINAL


_TERMINAL = frozenset({RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED})

TRANSITIONS: dict[RunStatus, frozenset[RunStatus]] = {
    # PENDING -> SUSPENDED: a run no worker can drive (its agent version is deployed nowhere).
    RunStatus.PENDING: frozenset({RunStatus.RUNNING, RunStatus.SUSPENDED, RunStatus.CANCELLED}),
    RunStatus.RUNNING: frozenset(
        {
            RunStatus.WAITING_FOR_HUMAN,
            RunStatus.WAITING_FOR_CHILD,
            RunStatus.SUSPENDED,
            RunStatus.COMPLETED,
            RunStatus.FAILED,
            RunStatus.CANCELLED,
        }
    ),
    RunStatus.WAITING_FOR_HUMAN: frozenset(
        {RunStatus.RUNNING, RunStatus.FAILED, RunStatus.CANCELLED}
    ),
    RunStatus.WAITING_FOR_CHILD: frozenset(
        {RunStatus.RUNNING, RunStatus.FAILED, RunStatus.CANCELLED}
    ),
    RunStatus.SUSPENDED: frozenset({RunStatus.RUNNING, RunStatus.FAILED, RunStatus.CANCELLED}),
    RunStatus.COMPLETED: frozenset(),
    RunStatus.FAILED: frozenset(),
    RunStatus.CANCELLED: frozenset(),
}


def check_transition(run_id: str, source: RunStatus, target: RunStatus) -> None:
    """Raise ``IllegalTransition`` unless the table allows ``source -> target``."""
    if target not in TRANSITIONS[source]:
        raise IllegalTransition(run_id, source.value, target.value)


_RUN_ID = re.compile(r"^run_[0-9a-f]{32}$")


def validate_run_id(value: str) -> str:
    """Return ``value`` if it looks like a run id, else raise a clear ``InvalidInput``."""
    if not _RUN_ID.match(value):
        raise InvalidInput(
            f"invalid run id {value!r}",
            hint="run ids look like run_ followed by 32 hex digits; `autonomic runs` lists them",
        )
    return value


@dataclass(frozen=True, slots=True)
class Lease:
    """Who may write to a run, until when, and the fencing token that proves it."""

    owner: str | None
    expires_at: float
    fence: int


@dataclass(frozen=True, slots=True)
class Run:
    """A run as stored: the row behind the journal.

    ``version`` is the optimistic-locking counter: every domain write bumps it, and a write that
    expected an older one touches nothing. ``lease.fence`` is bumped every time a worker claims the
    run, so a paused worker's writes can be refused.
    """

    id: str
    agent: str
    agent_version: str
    model: str
    status: RunStatus
    version: int
    lease: Lease
    created_at: float
    updated_at: float
    tenant: str = "default"
    input: dict[str, Any] = field(default_factory=dict)
    output: Any = None
    status_reason: str | None = None
    max_turns: int = 20
    metadata: dict[str, Any] = field(default_factory=dict)
    parent_run_id: str | None = None
    correlation_id: str | None = None
    capability: str | None = None
    """The capability a child run was delegated for (its fleet-wide concurrency limit counts it)."""
    queued: bool = False
    """A child waiting for a free slot of its capability: no worker claims it until admitted."""

    def replace(self, **changes: Any) -> Run:
        """A copy with ``changes`` applied (runs are immutable values): what
        ``dataclasses.replace`` gives, without its walk over the fields' definitions (a run is
        copied at every commit)."""
        values = dict(zip(_RUN_FIELDS, _run_values(self), strict=True))
        values.update(changes)
        return Run(**values)


_RUN_FIELDS = tuple(f.name for f in dataclasses.fields(Run))
_run_values = operator.attrgetter(*_RUN_FIELDS)


@dataclass(frozen=True, slots=True)
class RunChanges:
    """What one commit changes on the run row besides appending journal entries."""

    status: RunStatus | None = None
    status_reason: str | None = None
    output: Any = None
    set_output: bool = False
    metadata: dict[str, Any] | None = None
    lease_expires_at: float | None = None
    release_lease: bool = False
    """Clear the lease in the same commit: a run leaving RUNNING needs no separate release."""
    agent_version: str | None = None
    """Move the run onto another version of its agent (an operator's ``resume --force
    --agent-version``; journaled in the same commit's transition)."""
