"""What the gateway counts, as a plain object: exported to Prometheus by the observability layer,
shown by ``autonomic show``, asserted by tests.

Waiting for rate-limit capacity is the gateway's normal way of coping with load, so it has to be
visible: ``waiting`` is how many calls wait right now, ``waits``/``waited_seconds`` how often and
how long calls waited per provider.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field


@dataclass(slots=True)
class GatewayMetrics:
    """Counters per provider (plain dicts of name -> value) and a gauge of waiting calls."""

    calls: Counter[str] = field(default_factory=Counter)
    """Successful calls per provider."""
    failures: Counter[str] = field(default_factory=Counter)
    """Failed attempts per provider (each retry counts)."""
    retries: Counter[str] = field(default_factory=Counter)
    fallbacks: Counter[str] = field(default_factory=Counter)
    """Calls served by a provider other than the first one they could use, per serving provider."""
    waits: Counter[str] = field(default_factory=Counter)
    """Calls that waited for rate-limit capacity, per provider."""
    waited_seconds: defaultdict[str, float] = field(default_factory=lambda: defaultdict(float))
    refused: Counter[str] = field(default_factory=Counter)
    """Reservations refused because the wait exceeded what the call could afford."""
    breaker_rejections: Counter[str] = field(default_factory=Counter)
    breaker_fallbacks: int = 0
    """Breaker operations answered from this process's own state because the Redis that shares
    breaker state was unreachable (0 without Redis). Non-zero: circuits are per process for now."""
    input_tokens: Counter[str] = field(default_factory=Counter)
    output_tokens: Counter[str] = field(default_factory=Counter)
    cost_usd: defaultdict[str, float] = field(default_factory=lambda: defaultdict(float))
    waiting: int = 0
    """Gauge: calls waiting for capacity right now."""
    max_waiting: int = 0
    max_late_s: float = 0.0
    """Gauge: the longest a call was sent after its reserved turn. Calls reserve their slot ahead;
    when the event loop stalls (CPU starvation, blocking code), the calls due during the stall are
    sent together when it ends, so the rate over a window can exceed the limit plus one bucket by
    up to ``rate * max_late_s``. Watch it: a large value means the process is overloaded."""

    def snapshot(self) -> dict[str, object]:
        """Everything as JSON-ready dicts."""
        out: dict[str, object] = {
            "waiting": self.waiting,
            "max_waiting": self.max_waiting,
            "max_late_s": round(self.max_late_s, 6),
            "breaker_fallbacks": self.breaker_fallbacks,
        }
        for name in (
            "calls",
            "failures",
            "retries",
            "fallbacks",
            "waits",
            "waited_seconds",
            "refused",
            "breaker_rejections",
            "input_tokens",
            "output_tokens",
            "cost_usd",
        ):
            out[name] = dict(getattr(self, name))
        return out
