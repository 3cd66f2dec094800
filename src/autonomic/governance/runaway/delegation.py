"""Delegation limits: chain depth, cycles in the chain, and ping-pong between two agents.

Incidents behind it: delegation chains 47 levels deep, and two agents handing the same lint fix to
each other forever. Checked before each ``DELEGATE`` action:

* **depth** — the new hop would make the chain longer than ``max_depth`` delegations;
* **cycle** — the target agent already holds this subject further up the chain (work coming back
  to an agent that delegated it away);
* **ping-pong** — the run's recent hand-offs on this subject alternate between the same two agents
  and the proposed one would make ``max_exchanges`` of them (default 3: A→B, B→A, then A→B is
  stopped). This catches agents that talk over the bus without nesting their chains.

Subjects are compared after removing volatile tokens, and as embeddings at the loop threshold, so
"fix lint in a.py (attempt 2)" and "Fix the lint in a.py" are the same subject.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from autonomic.errors import InvalidInput
from autonomic.governance.action import ActionKind, Hop, ProposedAction
from autonomic.governance.decision import Finding, Verdict
from autonomic.governance.runaway.normalise import normalise_text
from autonomic.governance.runaway.state import GuardState, Handoff
from autonomic.ports.embedder import dot


@dataclass(frozen=True, slots=True)
class DelegationPolicy:
    """Tuning for delegation limits.

    Args:
        max_depth: delegations allowed from the root run (root -> a -> b is depth 2).
        max_exchanges: alternating hand-offs between two agents on one subject before stopping.
        threshold: similarity at or above which two subjects are the same.
    """

    max_depth: int = 5
    max_exchanges: int = 3
    threshold: float = 0.95

    def __post_init__(self) -> None:
        if self.max_depth < 1 or self.max_exchanges < 2:
            raise InvalidInput(
                "delegation policy: max_depth must be >= 1 and max_exchanges >= 2",
                hint="the defaults are max_depth=5, max_exchanges=3",
            )


class DelegationGuard:
    """Suspends delegations that go too deep, loop back, or bounce between two agents."""

    name = "delegation"

    def __init__(self, policy: DelegationPolicy | None = None) -> None:
        self.policy = policy or DelegationPolicy()

    def check(self, action: ProposedAction, state: GuardState) -> list[Finding]:
        if action.kind is not ActionKind.DELEGATE:
            return []
        p = self.policy
        target = action.target or ""
        feats = state.features(action)
        chain = action.chain or (Hop(action.agent, ""),)
        found: list[Finding] = []
        path = " -> ".join(h.agent for h in (*chain, Hop(target)))
        depth = len(chain)
        if depth > p.max_depth:
            found.append(
                Finding(
                    "delegation",
                    "delegation.depth",
                    Verdict.SUSPEND,
                    f"delegating to {target} would make the chain {depth} deep (limit "
                    f"{p.max_depth}): {path}; raise max_depth if this is intended",
                    {"limit": p.max_depth, "depth": depth, "chain": [h.to_dict() for h in chain]},
                )
            )
        same = [
            i
            for i, hop in enumerate(chain)
            if hop.agent == target and self._same_subject(state, hop.subject, feats)
        ]
        if same:
            found.append(
                Finding(
                    "delegation",
                    "delegation.cycle",
                    Verdict.SUSPEND,
                    f"delegating {action.subject!r} to {target} closes a cycle: {target} already "
                    f"holds it at depth {same[0]} of {path}",
                    {"chain": [h.to_dict() for h in chain], "target": target, "at": same},
                )
            )
        bounce = self._bounce(state, action.agent, target, feats.subject_vector, feats.subject)
        if len(bounce) + 1 >= p.max_exchanges:
            quoted = [
                {"seq": h.seq, "from": h.source, "to": h.target, "subject": h.subject}
                for h in bounce
            ]
            found.append(
                Finding(
                    "delegation",
                    "delegation.ping_pong",
                    Verdict.SUSPEND,
                    f"{action.agent} and {target} have handed {action.subject!r} back and forth "
                    f"{len(bounce)} times (steps {', '.join(str(h.seq) for h in bounce)}); "
                    "a human should decide who owns it",
                    {"exchanges": quoted, "limit": p.max_exchanges},
                )
            )
        return found

    def _same_subject(self, state: GuardState, subject: str, feats: Any) -> bool:
        norm = normalise_text(subject)
        if norm == feats.subject:
            return True
        if not norm or feats.subject_vector is None:
            return False
        vector = state.embedder.embed([norm])[0]
        return dot(vector, feats.subject_vector) >= self.policy.threshold

    def _bounce(
        self, state: GuardState, agent: str, target: str, vector: Any, subject: str
    ) -> list[Handoff]:
        """The trailing run of hand-offs alternating between ``agent`` and ``target``."""
        run: list[Handoff] = []
        expect_source, expect_target = target, agent  # the hand-off before ours went target->agent
        for handoff in reversed(state.handoffs):
            if (handoff.source, handoff.target) != (expect_source, expect_target):
                break
            if handoff.subject != subject and (
                vector is None or dot(handoff.vector, vector) < self.policy.threshold
            ):
                break
            run.append(handoff)
            expect_source, expect_target = expect_target, expect_source
        run.reverse()
        return run
