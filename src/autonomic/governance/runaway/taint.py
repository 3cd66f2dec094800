"""An action proposed right after tainted content runs one risk tier higher.

If a tool output or a retrieved document carried instructions, the model may be following them.
The action it proposes next is therefore not executed at LOW: it is raised to MEDIUM (a human
approves it) — or from MEDIUM to HIGH. Model calls are not raised: reading is how the model sees
the content; acting on it is what needs a human.
"""

from __future__ import annotations

from autonomic.governance.action import ActionKind, ProposedAction
from autonomic.governance.decision import Finding
from autonomic.governance.runaway.state import GuardState


class TaintGuard:
    """Raises the tier of any tool call or delegation that follows flagged content."""

    name = "taint"

    def check(self, action: ProposedAction, state: GuardState) -> list[Finding]:
        del state  # the taint travels with the action
        if action.kind is ActionKind.MODEL_CALL or not action.tainted:
            return []
        sources = [p.to_dict() for p in action.provenance if p.tainted]
        names = ", ".join(f"{p['source']}:{p['name']}" for p in sources)
        risk = action.risk.raised()
        return [
            Finding.raising(
                "taint",
                "taint.after_untrusted",
                risk,
                f"proposed right after content flagged as a possible injection ({names}); "
                f"raised from {action.risk.name} to {risk.name} so a human approves it",
                {"sources": sources, "from": action.risk.name, "to": risk.name},
            )
        ]
