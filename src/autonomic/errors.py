"""One error tree for autonomic.

The tree separates three things callers treat differently:

* ``UserError`` and its children: the caller asked for something wrong (a bad URL, an unknown run,
  malformed input). The message says what is wrong and how to fix it; retrying will not help.
* ``ConcurrencyError``: another writer got there first. ``StaleVersion`` means "reload and retry";
  ``LeaseLost`` means "another worker owns this run now: stop, and never redo a side effect".
* Run failures (``ModelError``, ``ToolError``) that happen inside a run and are journaled.

Every error carries a stable ``code``, whether it is ``retryable``, and serialises with ``to_dict`` so
that it can be written into the journal and shown by the CLI and API.

    AutonomicError
    ├── UserError
    │   ├── ConfigError
    │   ├── NotFound
    │   │   └── ToolVersionMissing
    │   ├── InvalidInput
    │   │   ├── ToolArgumentsInvalid
    │   │   ├── GraphInvalid
    │   │   ├── RunInputError
    │   │   └── EventRejected
    │   ├── PolicyFileError
    │   ├── ApprovalRefused
    │   └── IllegalTransition
    ├── StoreUnavailable
    │   └── StoreDamaged
    ├── BusUnavailable
    ├── ConcurrencyError
    │   ├── StaleVersion
    │   ├── LeaseLost
    │   ├── RunExists
    │   ├── JournalConflict
    │   └── ApprovalConflict
    ├── CircuitOpen
    ├── ModelError
    │   ├── RateLimited
    │   └── ProviderUnavailable
    └── ToolError
"""

from __future__ import annotations

from typing import Any, ClassVar


class AutonomicError(Exception):
    """Base of every error autonomic raises on purpose."""

    code: ClassVar[str] = "autonomic_error"
    retryable: bool = False

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form, stable across versions: code, message, hint, retryable."""
        return {
            "code": self.code,
            "message": self.message,
            "hint": self.hint,
            "retryable": self.retryable,
        }


class UserError(AutonomicError):
    """The caller asked for something that cannot be done as asked."""

    code = "user_error"


class ConfigError(UserError):
    """Configuration is wrong: a bad database URL, a missing extra, an unknown model spec."""

    code = "config_error"


class NotFound(UserError):
    """A run, agent or tool that does not exist (or belongs to another tenant)."""

    code = "not_found"


class ToolVersionMissing(NotFound):
    """A run pinned ``name@version`` of a tool and this worker has not registered that version.

    The run is never executed against another version: it is suspended with this reason."""

    code = "tool_version_missing"


class InvalidInput(UserError):
    """Input failed validation: a corrupt script, a malformed run input, a bad id."""

    code = "invalid_input"


class EgressRuleInvalid(InvalidInput):
    """A sandbox's ``egress_allow`` entry is malformed or cannot be resolved."""

    code = "egress_rule_invalid"


class ToolArgumentsInvalid(InvalidInput):
    """Arguments proposed for a tool do not match its JSON schema."""

    code = "tool_arguments_invalid"


class GraphInvalid(InvalidInput):
    """A dependency graph of steps or subtasks that may not run: a cycle, an unknown capability
    or tool, a reference to a missing node, an output that does not fit the next node's input,
    too many nodes. The message is one line naming the node (``core/graph.py``)."""

    code = "graph_invalid"

    def __init__(self, message: str, *, node: str | None = None, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.node = node


class RunInputError(InvalidInput):
    """A run's input or metadata is missing or wrong (no ``metadata.bank``, a path that is not a
    bank database): agent code raises it when it validates what it was given.

    Raised inside a run, it does not fail the run: the engine suspends it with this message as the
    one-line reason, so an operator can give what is missing and resume it
    (``autonomic resume RUN --force --metadata JSON``). The message says what is wrong, the hint
    what to give and how."""

    code = "run_input_invalid"


class EventRejected(InvalidInput):
    """An event that may not travel: a malformed CloudEvent envelope, an unknown type, ``data``
    that breaks its type's schema (the message names the field), or an oversized payload.

    Untrusted input: a consumer dead-letters such an event with this message as the reason."""

    code = "event_rejected"


class PolicyFileError(UserError):
    """A policy, tool-policy or workflow file is wrong. The message names the file and line."""

    code = "policy_file_error"

    def __init__(
        self, path: str, line: int | None, problem: str, *, hint: str | None = None
    ) -> None:
        where = f"{path}:{line}" if line is not None else path
        super().__init__(f"{where}: {problem}", hint=hint)
        self.path = path
        self.line = line


class ApprovalRefused(UserError):
    """An approval decision that may not be made: the requester approving their own run, an
    approver outside the group, a vote twice, an approval already decided or bound to other
    arguments."""

    code = "approval_refused"


class IllegalTransition(UserError):
    """A run was asked to move between two states the transition table does not connect."""

    code = "illegal_transition"

    def __init__(self, run_id: str, source: str, target: str) -> None:
        super().__init__(
            f"run {run_id}: illegal transition {source} -> {target}",
            hint=f"a {source} run cannot become {target}",
        )
        self.source = source
        self.target = target


class StoreUnavailable(AutonomicError):
    """The database cannot be reached. Nothing was written."""

    code = "store_unavailable"
    retryable = True


class StoreDamaged(StoreUnavailable):
    """The database answers, but its file is damaged (a corrupt page, a damaged header).

    Nothing was written, and the store writes nothing more into it: a write into a damaged
    file can spread the damage. Not retryable: it must be repaired or restored from a backup.
    """

    code = "store_damaged"
    retryable = False


class BusUnavailable(AutonomicError):
    """The event bus cannot be reached (a broker down, a database gone); the outbox keeps
    events until it is back."""

    code = "bus_unavailable"
    retryable = True


class ConcurrencyError(AutonomicError):
    """Another writer changed the run first."""

    code = "concurrency_error"


class StaleVersion(ConcurrencyError):
    """The run's version moved on since it was read: reload it and decide again."""

    code = "stale_version"
    retryable = True


class LeaseLost(ConcurrencyError):
    """This worker no longer holds the run's lease (its fencing token is old).

    The write was refused and must not be retried: the run belongs to another worker now.
    """

    code = "lease_lost"


class RunExists(ConcurrencyError):
    """A run with this id exists already; nothing was written."""

    code = "run_exists"


class JournalConflict(ConcurrencyError):
    """An entry with this ``(run_id, seq)`` exists already: the journal is append-only and a seq is
    written once. Nothing was written. Under the version check this cannot happen; it means a writer
    bypassed it."""

    code = "journal_conflict"


class ApprovalConflict(ConcurrencyError):
    """An approval changed since it was read (another approver decided first); nothing was written."""

    code = "approval_conflict"
    retryable = True


class ModelError(AutonomicError):
    """The model server failed or answered with something unusable."""

    code = "model_error"

    def __init__(
        self,
        message: str,
        *,
        hint: str | None = None,
        retryable: bool = False,
        retry_after: float | None = None,
        status: int | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.retryable = retryable
        self.retry_after = retry_after
        """Seconds the server asked us to wait (``Retry-After``), if it said."""
        self.status = status
        """The HTTP status, when the server answered with an error status."""


class RateLimited(ModelError):
    """No provider had rate-limit capacity before the call's deadline.

    Retryable: capacity comes back as the buckets refill; a later attempt (or a longer deadline)
    will get through.
    """

    code = "rate_limited"

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message, hint=hint, retryable=True)


class ProviderUnavailable(ModelError):
    """Every provider a call may use is down or has its circuit open."""

    code = "provider_unavailable"

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message, hint=hint, retryable=True)


class CircuitOpen(AutonomicError):
    """A circuit breaker is open: the protected dependency failed too often, calls are refused
    until a half-open probe succeeds. Retryable after ``retry_after`` seconds."""

    code = "circuit_open"
    retryable = True

    def __init__(self, key: str, retry_after: float) -> None:
        super().__init__(
            f"circuit {key!r} is open after repeated failures",
            hint=f"calls are refused for another {retry_after:.1f}s, then one probe is let through",
        )
        self.key = key
        self.retry_after = retry_after


class ToolError(AutonomicError):
    """A tool raised while executing; the error is journaled as the tool's result."""

    code = "tool_error"
