"""The runaway guards in the durable engine: a gate before tool calls, a budget check before model
calls, and the injection screen on every tool result.

**Where guard history comes from.** ``GuardState`` is *rebuilt from the folded journal* at check
time, not journaled as records of its own: ``RunState.guard_steps`` keeps the latest executed tool
calls (seq, tool, arguments, the thought of the turn that proposed them, ``read_only``), and the
usage totals, per-tool counts, taint labels and the loop acknowledgement are folded from entries
the engine writes anyway (``tool.intent``, ``tool.result``, ``model.response``, ``transition``).
So a replay after a crash sees exactly the history the first attempt saw, journals written before
this wiring work unchanged, and nothing is stored twice. A per-run cache applies only the steps
added since the last check (same state as a rebuild, so the cost stays flat). Decisions themselves
are journaled by the ``Guard`` and replayed, so a decided step is never asked again.

**Acknowledgement.** When an operator reopens a run the loop guard suspended (``autonomic resume RUN
--force``), the transition's seq becomes ``RunState.loop_ack_seq``: steps before it are the
acknowledged repeats (``GuardState.acknowledge``) and do not count again.

**Budgets** live in one place: ``Agent(budget=Budget(...))``, overridable per run by the run's
``metadata["budget"]`` (same keys as ``Budget.from_dict``), pinned in ``run.started`` when the run
starts and raised by ``autonomic resume RUN --force --budget tokens=...``.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from autonomic.core.canonical import canonical_json
from autonomic.core.messages import Message, ToolSpec
from autonomic.core.state import RunState
from autonomic.errors import InvalidInput
from autonomic.governance.action import ActionKind, Estimate
from autonomic.governance.action import ProposedAction as GuardAction
from autonomic.governance.decision import Finding, Outcome, RiskTier
from autonomic.governance.decision import Verdict as GuardVerdict
from autonomic.governance.gate import Decision, ProposedAction, Verdict
from autonomic.governance.injection import screen
from autonomic.governance.provenance import Provenance, Source
from autonomic.governance.runaway.budget import Budget, BudgetGuard
from autonomic.governance.runaway.loops import LoopGuard, LoopPolicy
from autonomic.governance.runaway.state import GuardState
from autonomic.governance.runaway.taint import TaintGuard
from autonomic.governance.runaway.tenant import TenantLedger
from autonomic.ports.embedder import Embedder

GATE_NAME = "runaway"

_TIERS = {"low": RiskTier.LOW, "medium": RiskTier.MEDIUM, "high": RiskTier.HIGH}

COMPLETION_ALLOWANCE = 512
"""Tokens added to a model call's estimate for the answer (the prompt is counted)."""


def estimate_model_call(messages: Sequence[Message], tools: Sequence[ToolSpec]) -> Estimate:
    """A conservative token estimate of the next model call: one token per 3 characters of the
    prompt and tool schemas (real tokenisers average ~4 for English and JSON), 4 per message, plus
    an allowance for the answer. Small on purpose: the model gateway replaces it with exact
    counting (``ModelBudget.estimate`` is the hook)."""
    return _estimate(_message_chars(messages) + _tool_chars(tools), len(messages))


def _message_chars(messages: Sequence[Message]) -> int:
    return sum(
        len(m.content or "") + sum(len(c.name) + len(c.arguments) + 8 for c in m.tool_calls)
        for m in messages
    )


def _tool_chars(tools: Sequence[ToolSpec]) -> int:
    return sum(len(t.name) + len(t.description) + len(canonical_json(t.parameters)) for t in tools)


def _estimate(chars: int, messages: int) -> Estimate:
    return Estimate(tokens=math.ceil(chars / 3) + 4 * messages + COMPLETION_ALLOWANCE)


def pinned_budget(agent: Budget | None, override: Any) -> dict[str, Any]:
    """The budget a run pins: the agent's, overridden key by key by the run's ``budget`` mapping.
    Validated here (unknown keys, negative or non-numeric limits), at the entry point."""
    base: dict[str, Any] = {}
    if agent is not None:
        base = {
            "turns": agent.turns,
            "tokens": agent.tokens,
            "cost": agent.cost,
            "wall_seconds": agent.wall_seconds,
            "tool_calls": dict(agent.tool_calls) or None,
        }
    if override is not None and not isinstance(override, Mapping):
        raise InvalidInput(
            f"budget: expected a mapping of limits, got {type(override).__name__}",
            hint='e.g. metadata={"budget": {"tokens": 20000, "tool_calls": {"cleanup": 2}}}',
        )
    merged = {**base, **dict(override or {})}
    Budget.from_dict(merged)  # raises InvalidInput naming what is wrong
    return {k: v for k, v in merged.items() if v is not None}


def run_budget(state: RunState) -> Budget:
    """The run's pinned budget (validated when the run started or was reopened)."""
    return Budget.from_dict(state.budget or {})


@dataclass
class Runaway:
    """The engine's runaway-guard configuration (``Engine(..., runaway=Runaway(...))``).

    Args:
        embedder: vectors for near-repeat detection (default: hashed n-grams, offline).
        loops: loop-detection thresholds.
        window: how many recent tool calls loop detection compares with.
        ledger: per-tenant daily budgets over shared counters (``None``: no tenant limits).
        screen_results: screen every tool result for injected instructions before the model
            reads it (turn off only for trusted, operator-written tools in benchmarks).
    """

    embedder: Embedder | None = None
    loops: LoopPolicy | None = None
    window: int = 20
    ledger: TenantLedger | None = None
    screen_results: bool = True
    enabled: bool = True
    _gate: RunawayGate | None = field(default=None, init=False, repr=False)

    async def close(self) -> None:
        """Close the tenant ledger's counters (a Redis connection)."""
        if self.ledger is not None:
            await self.ledger.counters.close()

    def gate(self) -> RunawayGate:
        if self._gate is None:
            self._gate = RunawayGate(self)
        return self._gate


class RunawayGate:
    """Loop detection, per-tool budgets and the taint rule as an action gate.

    Maps the governance action to a guards action (thought = the content of the model turn that
    proposed the call; ``read_only`` from the agent's declaration; tier from the risk an earlier
    gate gave; provenance = the tainted results the model read before proposing it) and the guards'
    verdict back: SUSPEND -> ``Verdict.SUSPEND`` with the finding's reason and evidence (the similar
    steps quoted with their seq); RAISE_TIER -> APPROVE at MEDIUM, BLOCK at HIGH; ALLOW -> no opinion.
    """

    name = GATE_NAME

    def __init__(self, config: Runaway, *, cache_size: int = 1024) -> None:
        self.config = config
        self._loops = LoopGuard(config.loops)
        self._taint = TaintGuard()
        self._cache: OrderedDict[str, tuple[int, int, GuardState]] = OrderedDict()
        self._cache_size = cache_size
        self._pending: dict[str, GuardAction] = {}

    async def check(self, action: ProposedAction) -> Decision | None:
        state = action.state
        history = self.history(action.run.id, state)
        history.tool_calls = dict(state.intent_counts)
        history.cost = state.tool_cost + state.model_cost
        guard_action = GuardAction(
            ActionKind.TOOL_CALL,
            agent=action.run.agent,
            tool=action.tool.name,
            arguments=action.arguments,
            thought=_thought(state),
            tenant=action.tenant,
            provenance=tuple(_provenance(p) for p in state.taint),
            tier=_TIERS.get((action.risk or "low").lower(), RiskTier.LOW),
            read_only=action.read_only,
            estimate=Estimate(cost=action.tool.cost_estimate),
        )
        findings: list[Finding] = []
        findings.extend(self._loops.check(guard_action, history))
        findings.extend(BudgetGuard(run_budget(state)).check(guard_action, history))
        findings.extend(self._taint.check(guard_action, history))
        verdict = GuardVerdict.combine(guard_action.tier, findings)
        if verdict.allowed:
            self._pending[action.run.id] = guard_action
            while len(self._pending) > self._cache_size:
                del self._pending[next(iter(self._pending))]
        return to_decision(verdict, guard_action.tier)

    def history(self, run_id: str, state: RunState) -> GuardState:
        """The guard history of ``state``: the executed calls since the last acknowledgement."""
        steps = [s for s in state.guard_steps if s["seq"] > state.loop_ack_seq]
        cached = self._cache.get(run_id)
        last = steps[-1]["seq"] if steps else 0
        if cached is not None and cached[0] == state.loop_ack_seq and cached[1] <= last:
            _, seen, guard_state = cached
            fresh = [s for s in steps if s["seq"] > seen]
        else:
            guard_state = GuardState(self.config.embedder, window=self.config.window)
            fresh = steps[-self.config.window :]
        pending = self._pending.pop(run_id, None)
        for step in fresh:
            if pending is not None and _same(pending, step):
                # the call this gate allowed last time, now executed: its features (vectors)
                # were computed by the check; recording the same inputs gives the same state
                guard_state.record(pending, seq=int(step["seq"]))
                pending = None
            else:
                guard_state.apply(_record(step))
        self._cache[run_id] = (state.loop_ack_seq, last, guard_state)
        self._cache.move_to_end(run_id)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return guard_state


def to_decision(verdict: GuardVerdict, proposed: RiskTier) -> Decision | None:
    """The guards' verdict as a gate decision (``None``: no objection)."""
    if verdict.outcome is Outcome.ALLOW:
        return None
    evidence: dict[str, Any] = {"code": verdict.code, "guards": verdict.to_dict()}
    if verdict.findings:
        evidence.update({"finding": dict(verdict.findings[0].evidence)})
    if verdict.outcome is Outcome.SUSPEND:
        return Decision(Verdict.SUSPEND, verdict.reason, gate=GATE_NAME, evidence=evidence)
    if verdict.tier <= proposed and verdict.tier is RiskTier.LOW:  # pragma: no cover - defensive
        return None
    if verdict.tier is RiskTier.HIGH:
        return Decision(
            Verdict.BLOCK, verdict.reason, gate=GATE_NAME, risk="HIGH", evidence=evidence
        )
    return Decision(
        Verdict.APPROVE, verdict.reason, gate=GATE_NAME, risk="MEDIUM", evidence=evidence
    )


def _same(action: GuardAction, step: Mapping[str, Any]) -> bool:
    return (
        action.tool == step["tool"]
        and action.thought == step["thought"]
        and action.read_only == step["read_only"]
        and canonical_json(dict(action.arguments)) == canonical_json(step["arguments"])
    )


def _record(step: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "k": "step",
        "seq": step["seq"],
        "kind": ActionKind.TOOL_CALL.value,
        "agent": "",
        "tool": step["tool"],
        "arguments": step["arguments"],
        "thought": step["thought"],
        "read_only": step["read_only"],
    }


def _thought(state: RunState) -> str:
    for message in reversed(state.messages):
        if message.tool_calls:
            return message.content or ""
    return ""


def _provenance(data: Mapping[str, Any]) -> Provenance:
    try:
        source = Source(data.get("source", Source.TOOL_OUTPUT.value))
    except ValueError:
        source = Source.TOOL_OUTPUT
    return Provenance(source, str(data.get("name", "")), bool(data.get("tainted", True)))


class _NoVectors:
    name = "none"
    dim = 0

    def embed(self, texts: Sequence[str]) -> list[tuple[float, ...]]:
        raise AssertionError("budget checks never embed")  # pragma: no cover


_COUNTERS_ONLY: Any = _NoVectors()


# -- the model-call budget ------------------------------------------------------------------


class ModelBudget:
    """The check before each model call: the run's budget, then the tenant's daily budget.

    ``estimate`` is the hook the model gateway replaces with exact counting.
    """

    def __init__(self, ledger: TenantLedger | None = None, *, cache_size: int = 1024) -> None:
        """``ledger``: the per-tenant daily budgets (``None``: none)."""
        self.ledger = ledger
        self.estimate: Callable[[Sequence[Message], Sequence[ToolSpec]], Estimate] | None = None
        """The gateway's exact estimate, when it has one; else ``estimate_model_call``'s rule,
        counted incrementally per run (messages are append-only)."""
        self._chars: OrderedDict[str, tuple[int, int]] = OrderedDict()
        self._cache_size = cache_size

    def _estimate(
        self, run_id: str, messages: Sequence[Message], tools: Sequence[ToolSpec]
    ) -> Estimate:
        if self.estimate is not None:
            return self.estimate(messages, tools)
        seen, chars = self._chars.get(run_id, (0, 0))
        if seen > len(messages):
            seen, chars = 0, 0
        chars += _message_chars(messages[seen:])
        self._chars[run_id] = (len(messages), chars)
        self._chars.move_to_end(run_id)
        while len(self._chars) > self._cache_size:
            self._chars.popitem(last=False)
        return _estimate(chars + _tool_chars(tools), len(messages))

    async def check(
        self,
        *,
        agent: str,
        tenant: str,
        state: RunState,
        tools: Sequence[ToolSpec],
        now: float,
        messages: Sequence[Message] | None = None,
        estimate: Callable[[Sequence[Message], Sequence[ToolSpec]], Estimate] | None = None,
    ) -> tuple[GuardVerdict, GuardAction]:
        """``messages``: a call other than the next turn's (the planning call), estimated by
        ``estimate`` (that call's model's exact count) or the character rule."""
        if messages is None:
            found = self._estimate(state.run_id, state.messages, tools)
        elif estimate is not None:
            found = estimate(messages, tools)
        else:
            found = _estimate(_message_chars(messages) + _tool_chars(tools), len(messages))
        action = GuardAction(
            ActionKind.MODEL_CALL, agent=agent, tenant=tenant, estimate=found, now=now
        )
        history = GuardState(_COUNTERS_ONLY)  # budgets read counters only, never vectors
        history.started_at = state.started_at
        history.turns = state.turns
        history.tokens = state.usage.input_tokens + state.usage.output_tokens
        history.cost = state.tool_cost + state.model_cost
        history.tool_calls = dict(state.intent_counts)
        verdict = GuardVerdict.combine(
            RiskTier.LOW, BudgetGuard(run_budget(state)).check(action, history)
        )
        if verdict.allowed and self.ledger is not None:
            verdict = await self.ledger.reserve(action)
        return verdict, action

    async def settle(self, action: GuardAction, *, tokens: int, cost: float = 0.0) -> None:
        """Replace the reservation by what the call really used (``cost``: the gateway's
        ``cost_usd``; 0 for a model without prices)."""
        if self.ledger is not None:
            await self.ledger.settle(action, tokens=tokens, cost=cost)


# -- screening tool results -------------------------------------------------------------------


def screen_result(result: dict[str, Any], text: str) -> None:
    """Screen a tool result's observation ``text``; record what the screen found in the result.

    The journaled ``screen`` block is what replays see: ``text`` (what the model reads) is stored
    only when it differs from the plain observation, flags and provenance only when there are any.
    """
    screened = screen(text, Provenance(Source.TOOL_OUTPUT, str(result.get("tool", ""))))
    if not screened.flags and not screened.tainted:
        return
    block: dict[str, Any] = {
        "tainted": screened.tainted,
        "score": screened.score,
        "flags": [{"code": f.code, "detail": f.detail} for f in screened.flags],
        "provenance": screened.provenance.to_dict(),
    }
    if screened.text_for_model != text:
        block["text"] = screened.text_for_model
    result["screen"] = block
