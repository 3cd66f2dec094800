"""The guard: where the pre-action seam meets the step protocol.

For each new tool call (arguments already validated) ``Guard.before_call``:

1. replays the journaled ``decision`` for the call if there is one, else asks the ``GateChain``
   (plus the agent's workflow gate) and stages the decision - it is committed before any effect,
   with the intent of a non-idempotent call or with the wait for a human;
2. acts on the verdict: ``ALLOW`` executes; ``BLOCK`` records a refused result (0 executions) and
   lets the model go on; ``SUSPEND`` records a refused result and suspends the run (a security
   violation); ``APPROVE`` either waits - the approval row is inserted in the same transaction that
   moves the run to WAITING_FOR_HUMAN and releases its lease, so waiting holds no worker - or, once
   the journal holds the outcome, executes (approved, and the binding hash of what is about to run
   matches what was approved) or records the refusal (rejected / timed out).

The action's execution after approval is the ordinary write-ahead step (intent, effect, result
under the idempotency key ``run_id:seq``), so a crash between approval and execution redoes nothing
twice: the approval outcome is in the journal, the decision is replayed, the call runs once.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from typing import Any

from autonomic.core.approval import Approval, ApprovalStatus, approval_id, binding_hash
from autonomic.core.journal import EntryKind
from autonomic.core.messages import ToolCall
from autonomic.core.run import RunStatus
from autonomic.engine.session import RunSession
from autonomic.errors import NotFound
from autonomic.governance.gate import (
    ApprovalRule,
    Decision,
    Gate,
    GateChain,
    ProposedAction,
    Verdict,
)
from autonomic.tools.contract import Tool

_PASSIVE = frozenset({"runaway", "breaker"})
"""Gates whose allow is not journaled (see ``before_call``)."""


class Go(enum.Enum):
    EXECUTE = "execute"
    SKIP = "skip"
    """Refused; a result saying why is staged. Carry on with the next call."""
    STOP = "stop"
    """The run left RUNNING (waiting for a human, or suspended)."""


class Guard:
    """Decides, journals and enforces, for one run's calls. Stateless across runs."""

    def __init__(
        self,
        gates: GateChain,
        extra: Sequence[Gate] = (),
        *,
        read_only: frozenset[str] = frozenset(),
    ) -> None:
        self.gates = gates
        self.extra = list(extra)
        self.read_only = read_only

    async def before_call(
        self, session: RunSession, tool: Tool, call: ToolCall, arguments: dict[str, Any]
    ) -> Go:
        state = session.state
        decision = state.decisions.get(call.id)
        replayed = decision is not None
        if decision is None:
            action = ProposedAction(
                run=session.run,
                state=state,
                tool=tool,
                arguments=arguments,
                call_id=call.id,
                step=session.next_seq,
                read_only=tool.name in self.read_only,
            )
            if not self.gates.gates and not self.extra:
                return Go.EXECUTE  # no governance configured: nothing to journal
            decided = await self.gates.decide(action, self.extra)
            if decided.gate == "default" and self._only_passive():
                # Only the runaway guards and breakers are configured and they had no objection:
                # nothing has happened yet, so asking again after a crash is safe (the runaway
                # history is folded from the journal; a breaker may since have opened, and then
                # refusing is right), and an ungoverned run's journal stays as it was.
                return Go.EXECUTE
            decision = decision_payload(decided, action)
            session.stage(EntryKind.DECISION, decision)
        verdict = Verdict(decision["verdict"])
        if verdict is Verdict.ALLOW:
            self._enter_state(session, decision)
            return Go.EXECUTE
        if verdict is Verdict.BLOCK:
            _refuse(
                session,
                call,
                tool,
                "action_blocked",
                f"blocked by {decision['gate']}: "
                f"{decision['explanation']} (risk {decision.get('risk') or 'n/a'}); "
                "nothing was executed",
            )
            return Go.SKIP
        if verdict is Verdict.SUSPEND:
            code = "security_violation"
            message = f"security violation ({decision['gate']}): {decision['explanation']}"
            if decision["gate"] == "runaway":
                code = str(decision.get("evidence", {}).get("code") or "runaway")
                message = f"suspended by the runaway guard: {decision['explanation']}"
            elif decision["gate"] == "breaker":
                code = "circuit_open"
                message = f"suspended until the tool recovers: {decision['explanation']}"
            _refuse(session, call, tool, code, message + "; nothing was executed")
            await session.transition(RunStatus.SUSPENDED, message, decision=decision)
            return Go.STOP
        return await self._approval(session, tool, call, arguments, decision, replayed)

    def _only_passive(self) -> bool:
        return not self.extra and all(g.name in _PASSIVE for g in self.gates.gates)

    async def _approval(
        self,
        session: RunSession,
        tool: Tool,
        call: ToolCall,
        arguments: dict[str, Any],
        decision: dict[str, Any],
        replayed: bool,
    ) -> Go:
        outcome = session.state.approvals.get(call.id)
        if outcome is None:
            insert: list[Approval] = []
            if not replayed:
                insert.append(new_approval(session, tool, arguments, decision))
            else:  # reopened without a decision (resume --force): wait again, same approval
                try:
                    await session.store.get_approval(decision["approval_id"])
                except NotFound:
                    insert.append(new_approval(session, tool, arguments, decision))
            await session.transition(
                RunStatus.WAITING_FOR_HUMAN,
                f"approval {decision['approval_id']} needed: {tool.ref} - {decision['explanation']}",
                approvals=insert,
                approval_id=decision["approval_id"],
            )
            return Go.STOP
        status = ApprovalStatus(outcome["status"])
        if status is ApprovalStatus.APPROVED:
            about_to_run = binding_hash(tool.ref, arguments, session.run.id, int(decision["step"]))
            if about_to_run != outcome.get("binding") or about_to_run != decision["binding"]:
                _refuse(
                    session,
                    call,
                    tool,
                    "approval_mismatch",
                    f"approval {outcome.get('approval_id')} was given for other arguments; "
                    "nothing was executed",
                )
                return Go.SKIP
            session.fault("approved")
            self._enter_state(session, decision)
            return Go.EXECUTE
        who = ", ".join(outcome.get("by") or []) or "nobody"
        if status is ApprovalStatus.TIMEOUT:
            code, text = (
                "approval_timeout",
                f"approval timed out (denied by default): {outcome.get('reason')}",
            )
        else:
            code, text = "approval_rejected", f"rejected by {who}: {outcome.get('reason')}"
        _refuse(session, call, tool, code, text + "; nothing was executed")
        return Go.SKIP

    @staticmethod
    def _enter_state(session: RunSession, decision: dict[str, Any]) -> None:
        target = decision.get("workflow_to")
        if target and target != session.state.workflow:
            session.stage(
                EntryKind.WORKFLOW,
                {
                    "from": session.state.workflow,
                    "to": target,
                    "reason": f"{decision['tool']} belongs to state {target}",
                    "call_id": decision["call_id"],
                },
            )


def decision_payload(decision: Decision, action: ProposedAction) -> dict[str, Any]:
    """The journal entry for a decision: the verdict, why, and what it is bound to."""
    tool = action.tool
    payload: dict[str, Any] = {
        "call_id": action.call_id,
        "tool": tool.name,
        "version": tool.version,
        "step": action.step,
        "binding": binding_hash(tool.ref, action.arguments, action.run.id, action.step),
        "verdict": decision.verdict.value,
        "gate": decision.gate,
        "risk": decision.risk,
        "explanation": decision.explanation,
        "evidence": decision.evidence,
    }
    if decision.workflow_to:
        payload["workflow_to"] = decision.workflow_to
    if decision.verdict is Verdict.APPROVE:
        payload["approval_id"] = approval_id(action.run.id, action.call_id, action.step)
        payload["approval"] = (decision.approval or ApprovalRule()).to_dict()
    return payload


def new_approval(
    session: RunSession, tool: Tool, arguments: dict[str, Any], decision: dict[str, Any]
) -> Approval:
    rule = ApprovalRule.from_dict(decision.get("approval") or {})
    now = session.now()
    return Approval(
        id=decision["approval_id"],
        run_id=session.run.id,
        call_id=decision["call_id"],
        step=int(decision["step"]),
        tenant=session.run.tenant,
        tool=tool.ref,
        arguments=arguments,
        binding=decision["binding"],
        explanation=decision["explanation"],
        created_at=now,
        expires_at=now + rule.expires_after,
        requester=session.state.requester,
        group=rule.group,
        approvers=rule.approvers,
        escalate_at=now + rule.escalate_after if rule.escalate_after is not None else None,
        escalation_group=rule.escalation_group,
        escalation_approvers=rule.escalation_approvers,
        quorum=rule.quorum,
    )


def _refuse(session: RunSession, call: ToolCall, tool: Tool, code: str, message: str) -> None:
    session.stage(
        EntryKind.TOOL_RESULT,
        {
            "call_id": call.id,
            "tool": tool.name,
            "ok": False,
            "error": {"code": code, "message": message},
            "refused": True,
        },
    )
