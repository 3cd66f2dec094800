"""The gatekeeper: the one place the engine asks governance about a call and journals the answer.

This is the *decide* phase of the step protocol (``autonomic.engine.step``). For each new tool call
(arguments already validated) ``Gatekeeper.decide``:

1. replays the journaled ``decision`` for the call if there is one, else builds the one
   ``ProposedAction`` (the tool's contract, the validated arguments, the thought of the turn that
   proposed it, the provenance of what the model read, the run's folded state) and asks the gate
   chain (the agent's workflow gate and own gates first, then the engine's: risk policy, breakers,
   runaway guards) - and stages the decision: it is committed before any effect, with the intent of
   a non-idempotent call or with the wait for a human;
2. acts on the verdict: ``ALLOW`` executes; ``BLOCK`` records a refused result (0 executions) and
   lets the model go on; ``SUSPEND`` records a refused result and suspends the run (a security
   violation, a runaway, an open circuit); ``APPROVE`` either waits - the approval row is inserted
   in the same transaction that moves the run to WAITING_FOR_HUMAN and releases its lease, so
   waiting holds no worker - or, once the journal holds the outcome, executes (approved, and the
   binding hash of what is about to run matches what was approved) or records the refusal
   (rejected / timed out).

The action's execution after approval is the ordinary write-ahead step (intent, effect, result
under the idempotency key ``run_id:seq``), so a crash between approval and execution redoes nothing
twice: the approval outcome is in the journal, the decision is replayed, the call runs once.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from typing import Any

from autonomic.core.approval import Approval, ApprovalStatus, approval_id, binding_hash
from autonomic.core.calls import Position
from autonomic.core.entries import DecisionRecord, ToolResult, WorkflowMove
from autonomic.core.messages import ToolCall
from autonomic.core.run import RunStatus
from autonomic.core.state import RunState
from autonomic.engine.session import RunSession
from autonomic.errors import NotFound
from autonomic.governance.action import ProposedAction
from autonomic.governance.decision import ApprovalRule, Decision, Verdict, risk_name
from autonomic.governance.gate import Gate, GateChain
from autonomic.governance.provenance import Provenance
from autonomic.tools.contract import Tool

_PASSIVE = frozenset({"runaway", "breaker", "provenance", "delegation"})
"""Gates whose silence is not journaled (see ``decide``): asking them again after a crash gives
the same answer (the provenance ledger and the runaway history are folded from the journal) or
the right one (a breaker that has since opened)."""


class Go(enum.Enum):
    EXECUTE = "execute"
    SKIP = "skip"
    """Refused; a result saying why is staged. Carry on with the next call."""
    STOP = "stop"
    """The run left RUNNING (waiting for a human, or suspended)."""


class Gatekeeper:
    """Decides, journals and enforces, for one run's calls. Stateless across runs."""

    def __init__(
        self,
        gates: GateChain,
        extra: Sequence[Gate] = (),
        *,
        read_only: frozenset[str] = frozenset(),
        expected: frozenset[str] | None = None,
        contracts: Mapping[str, Tool] | None = None,
    ) -> None:
        """``gates``: the engine's chain; ``extra``: the agent's workflow gate and own gates,
        asked first; ``expected``: the agent's expected consequential tools; ``contracts``:
        its tools by name (the provenance gate reads their outputs' trust)."""
        self.gates = gates
        self.extra = list(extra)
        self.read_only = read_only
        self.expected = expected
        self.contracts: Mapping[str, Tool] = dict(contracts or {})
        self._only_passive = not self.extra and all(g.name in _PASSIVE for g in gates.gates)

    async def decide(
        self,
        session: RunSession,
        tool: Tool,
        call: ToolCall,
        arguments: dict[str, Any],
        *,
        at: Position,
    ) -> Go:
        """``at``: the call's position in the run (turn, index), what its decision is keyed by."""
        state = session.state
        decision = state.decisions.get(at)
        replayed = decision is not None
        if decision is None:
            if not self.gates.gates and not self.extra:
                return Go.EXECUTE  # no governance configured: nothing to journal
            action = proposed_action(
                session, tool, call, arguments, tool.name in self.read_only
            )._replace(expected=self.expected, contracts=self.contracts)
            decided = await self.gates.decide(action, self.extra)
            if decided.gate == "default" and self._only_passive:
                # Only the runaway guards and breakers are configured and they had no objection:
                # nothing has happened yet, so asking again after a crash is safe (the runaway
                # history is folded from the journal; a breaker may since have opened, and then
                # refusing is right), and an ungoverned run's journal stays as it was.
                return Go.EXECUTE
            decision = decision_record(decided, action, at)
            session.stage(decision)
        verdict = Verdict(decision.verdict)
        if verdict is Verdict.ALLOW:
            self._enter_state(session, decision)
            return Go.EXECUTE
        if verdict is Verdict.BLOCK:
            _refuse(
                session,
                call,
                at,
                tool,
                "action_blocked",
                f"blocked by {decision.gate}: "
                f"{decision.explanation} (risk {decision.risk or 'n/a'}); "
                "nothing was executed",
            )
            return Go.SKIP
        if verdict is Verdict.SUSPEND:
            code = "security_violation"
            message = f"security violation ({decision.gate}): {decision.explanation}"
            if decision.gate == "runaway":
                code = str(decision.evidence.get("code") or "runaway")
                message = f"suspended by the runaway guard: {decision.explanation}"
            elif decision.gate == "breaker":
                code = "circuit_open"
                message = f"suspended until the tool recovers: {decision.explanation}"
            _refuse(session, call, at, tool, code, message + "; nothing was executed")
            await session.transition(RunStatus.SUSPENDED, message, decision=decision)
            return Go.STOP
        return await self._approval(session, tool, call, at, arguments, decision, replayed)

    async def _approval(
        self,
        session: RunSession,
        tool: Tool,
        call: ToolCall,
        at: Position,
        arguments: dict[str, Any],
        decision: DecisionRecord,
        replayed: bool,
    ) -> Go:
        assert decision.approval_id is not None
        outcome = session.state.approvals.get(decision.approval_id)
        if outcome is None:
            insert: list[Approval] = []
            if not replayed:
                insert.append(new_approval(session, tool, arguments, decision))
            else:  # reopened without a decision (resume --force): wait again, same approval
                try:
                    await session.store.get_approval(decision.approval_id)
                except NotFound:
                    insert.append(new_approval(session, tool, arguments, decision))
            await session.transition(
                RunStatus.WAITING_FOR_HUMAN,
                f"approval {decision.approval_id} needed: {tool.ref} - {decision.explanation}",
                approvals=insert,
                approval_id=decision.approval_id,
            )
            return Go.STOP
        status = ApprovalStatus(outcome.status)
        if status is ApprovalStatus.APPROVED:
            about_to_run = binding_hash(tool.ref, arguments, session.run.id, decision.step)
            if about_to_run != outcome.binding or about_to_run != decision.binding:
                _refuse(
                    session,
                    call,
                    at,
                    tool,
                    "approval_mismatch",
                    f"approval {outcome.approval_id} was given for other arguments; "
                    "nothing was executed",
                )
                return Go.SKIP
            session.fault("approved")
            self._enter_state(session, decision)
            return Go.EXECUTE
        who = ", ".join(outcome.by) or "nobody"
        if status is ApprovalStatus.TIMEOUT:
            code, text = (
                "approval_timeout",
                f"approval timed out (denied by default): {outcome.reason}",
            )
        else:
            code, text = "approval_rejected", f"rejected by {who}: {outcome.reason}"
        _refuse(session, call, at, tool, code, text + "; nothing was executed")
        return Go.SKIP

    @staticmethod
    def _enter_state(session: RunSession, decision: DecisionRecord) -> None:
        target = decision.workflow_to
        if target and target != session.state.workflow:
            session.stage(
                WorkflowMove(
                    session.state.workflow,
                    target,
                    f"{decision.tool} belongs to state {target}",
                    call_id=decision.call_id,
                )
            )


def proposed_action(
    session: RunSession, tool: Tool, call: ToolCall, arguments: dict[str, Any], read_only: bool
) -> ProposedAction:
    """The one ``ProposedAction`` for a call: everything deterministic about it and the run."""
    state = session.state
    return ProposedAction.tool_call(
        session.run,
        state,
        tool,
        arguments,
        call_id=call.id,
        step=session.next_seq,
        thought=thought(state),
        provenance=tuple(Provenance.from_label(p) for p in state.taint),
        read_only=read_only,
    )


def thought(state: RunState) -> str:
    """The reasoning of the turn that proposed the pending calls (what loop detection compares)."""
    for message in reversed(state.messages):
        if message.tool_calls:
            return message.content or ""
    return ""


def decision_record(
    decision: Decision, action: ProposedAction, at: Position | None = None
) -> DecisionRecord:
    """The journal entry for a decision: the verdict, why, and what it is bound to (and, ``at``,
    the position of the call in the run)."""
    run, _, tool = action.in_run()
    rule = decision.approval or ApprovalRule()
    approve = decision.verdict is Verdict.APPROVE
    return DecisionRecord(
        call_id=action.call_id,
        tool=tool.name,
        version=tool.version,
        step=action.step,
        binding=binding_hash(tool.ref, dict(action.arguments), run.id, action.step),
        verdict=decision.verdict.value,
        gate=decision.gate,
        risk=risk_name(decision.risk),
        explanation=decision.explanation,
        evidence=decision.evidence,
        workflow_to=decision.workflow_to,
        approval_id=approval_id(run.id, action.call_id, action.step) if approve else None,
        approval=rule.to_dict() if approve else None,
        position=at,
    )


def new_approval(
    session: RunSession, tool: Tool, arguments: dict[str, Any], decision: DecisionRecord
) -> Approval:
    rule = ApprovalRule.from_dict(decision.approval or {})
    now = session.now()
    assert decision.approval_id is not None
    return Approval(
        id=decision.approval_id,
        run_id=session.run.id,
        call_id=decision.call_id,
        step=decision.step,
        tenant=session.run.tenant,
        tool=tool.ref,
        arguments=arguments,
        binding=decision.binding,
        explanation=decision.explanation,
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


def _refuse(
    session: RunSession, call: ToolCall, at: Position, tool: Tool, code: str, message: str
) -> None:
    session.stage(ToolResult.failed(call.id, tool.name, code, message, refused=True, position=at))
