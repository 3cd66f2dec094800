"""The budget check before every model call: the run's budgets, then the tenant's daily budget.

A call is estimated before it is made - tokens and cost - and refused (the run suspended) if the
estimate would take the run or its tenant past a limit, so a run stops *before* the call that would
overrun, never after it. The estimate is a conservative character rule
(``estimate_model_call``) unless the model can count exactly (the gateway does: the engine puts its
``estimate_call`` in ``ModelBudget.estimate``). After the call, ``settle`` replaces the tenant
ledger's reservation with what the call really used.

Budgets live in one place: ``Agent(budget=Budget(...))``, overridable per run by the run's
``metadata["budget"]`` (same keys as ``Budget.from_dict``), pinned in ``run.started`` when the run
starts (``budget.pinned_budget``) and raised by ``autonomic resume RUN --force --budget tokens=...``.
"""

from __future__ import annotations

import math
import operator
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

from autonomic.core.canonical import canonical_json
from autonomic.core.messages import Message, ToolSpec
from autonomic.core.state import RunState
from autonomic.governance.action import ActionKind, Estimate, ProposedAction
from autonomic.governance.decision import Decision
from autonomic.governance.runaway.budget import UNLIMITED, BudgetGuard, run_budget
from autonomic.governance.runaway.state import GuardState
from autonomic.governance.runaway.tenant import TenantLedger

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


_SPEC_CHARS: dict[int, tuple[ToolSpec, int]] = {}
"""Characters per tool spec, by identity (the spec is kept, so its id is not reused): a run's
specs are the same objects every turn, and serialising their schemas was most of the estimate."""


def _spec_chars(spec: ToolSpec) -> int:
    cached = _SPEC_CHARS.get(id(spec))
    if cached is not None and cached[0] is spec:
        return cached[1]
    chars = len(spec.name) + len(spec.description) + len(canonical_json(spec.parameters))
    if len(_SPEC_CHARS) >= 4096:
        _SPEC_CHARS.clear()
    _SPEC_CHARS[id(spec)] = (spec, chars)
    return chars


def _tool_chars(tools: Sequence[ToolSpec]) -> int:
    return sum(map(_spec_chars, tools))


def _estimate(chars: int, messages: int) -> Estimate:
    return Estimate(tokens=math.ceil(chars / 3) + 4 * messages + COMPLETION_ALLOWANCE)


class _NoVectors:
    name = "none"
    dim = 0

    def embed(self, texts: Sequence[str]) -> list[tuple[float, ...]]:
        raise AssertionError("budget checks never embed")  # pragma: no cover


_COUNTERS_ONLY: Any = _NoVectors()

_ALLOWED = Decision.of_findings(())
"""What the check answers when no limit applies (a run without a budget, no tenant ledger): no
guard can object then, so the answer is this one, without building a history to ask them."""


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
        self._tools: tuple[Sequence[ToolSpec], tuple[ToolSpec, ...], int] = ((), (), 0)
        """The last tool list counted, a copy of it and its characters: a run's turns pass the
        same list of the same specs each time."""

    def _tool_chars(self, tools: Sequence[ToolSpec]) -> int:
        last, specs, chars = self._tools
        if last is tools and len(specs) == len(tools) and all(map(operator.is_, specs, tools)):
            return chars
        chars = _tool_chars(tools)
        self._tools = (tools, tuple(tools), chars)
        return chars

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
        return _estimate(chars + self._tool_chars(tools), len(messages))

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
    ) -> tuple[Decision, ProposedAction]:
        """``messages``: a call other than the next turn's (the planning call), estimated by
        ``estimate`` (that call's model's exact count) or the character rule."""
        if messages is None:
            found = self._estimate(state.run_id, state.messages, tools)
        elif estimate is not None:
            found = estimate(messages, tools)
        else:
            found = _estimate(_message_chars(messages) + _tool_chars(tools), len(messages))
        action = ProposedAction(
            ActionKind.MODEL_CALL, agent=agent, tenant=tenant, estimate=found, now=now
        )
        budget = run_budget(state)
        if budget is UNLIMITED and self.ledger is None:
            return _ALLOWED, action  # every limit unset: BudgetGuard finds nothing to object to
        history = GuardState(_COUNTERS_ONLY)  # budgets read counters only, never vectors
        history.started_at = state.started_at
        history.turns = state.turns
        history.tokens = state.usage.input_tokens + state.usage.output_tokens
        history.cost = state.tool_cost + state.model_cost
        history.tool_calls = dict(state.intent_counts)
        verdict = Decision.of_findings(BudgetGuard(budget).check(action, history))
        if verdict.allowed and self.ledger is not None:
            verdict = await self.ledger.reserve(action)
        return verdict, action

    async def settle(self, action: ProposedAction, *, tokens: int, cost: float = 0.0) -> None:
        """Replace the reservation by what the call really used (``cost``: the gateway's
        ``cost_usd``; 0 for a model without prices)."""
        if self.ledger is not None:
            await self.ledger.settle(action, tokens=tokens, cost=cost)
