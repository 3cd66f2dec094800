"""Operational metadata of a tool contract: what the runtime enforces around a call.

A tool's function holds no policy. How often it is retried, how long it may take, what its data is
worth, whether it can be undone and what it costs are declared here (in Python or YAML) and can be
overridden by a policy file without touching the tool's code (see ``autonomic.governance.policy.tool_policy``).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from autonomic.errors import InvalidInput


class DataClass(enum.StrEnum):
    """How sensitive the data a tool reads or writes is; risk rules match on it."""

    PUBLIC = "public"
    INTERNAL = "internal"
    PII = "pii"
    FINANCIAL = "financial"


class AuditLevel(enum.StrEnum):
    """How much of a call goes to the audit trail: nothing, the call's outline, or everything."""

    NONE = "none"
    BASIC = "basic"
    FULL = "full"


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How the engine retries a failed call (a raise or a timeout) of an idempotent tool.

    Only idempotent tools are retried: re-running a call that may have half-happened is safe only
    when the tool dedups on its idempotency key, which is what ``idempotent`` promises.
    """

    attempts: int = 1
    """Total tries, the first one included (1 = no retry)."""
    backoff: float = 0.05
    """Seconds before the second try; doubled for every further one."""
    max_backoff: float = 5.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise InvalidInput(f"retry attempts must be at least 1, got {self.attempts}")
        if self.backoff < 0 or self.max_backoff < 0:
            raise InvalidInput("retry backoff must not be negative")

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed try number ``attempt`` (1-based)."""
        return float(min(self.backoff * 2 ** (attempt - 1), self.max_backoff))

    def to_dict(self) -> dict[str, Any]:
        return {"attempts": self.attempts, "backoff": self.backoff, "max_backoff": self.max_backoff}


@dataclass(frozen=True, slots=True)
class BreakerThresholds:
    """When a circuit breaker should open for this tool.

    Metadata only here: the breaker itself is a separate component that reads these thresholds
    (the ``breaker`` hook documented in docs/governance.md).
    """

    failure_rate: float = 0.5
    """Open when at least this share of the last ``window`` calls failed..."""
    window: int = 20
    min_calls: int = 5
    """...and at least this many calls were seen."""
    open_seconds: float = 30.0
    """How long the breaker stays open before a trial call."""

    def __post_init__(self) -> None:
        if not 0 < self.failure_rate <= 1:
            raise InvalidInput(f"breaker failure_rate must be in (0, 1], got {self.failure_rate}")
        if self.window < 1 or self.min_calls < 1 or self.open_seconds < 0:
            raise InvalidInput("breaker window and min_calls must be >= 1, open_seconds >= 0")

    def to_dict(self) -> dict[str, Any]:
        return {
            "failure_rate": self.failure_rate,
            "window": self.window,
            "min_calls": self.min_calls,
            "open_seconds": self.open_seconds,
        }
