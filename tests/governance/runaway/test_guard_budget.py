"""Run budgets: checked before the action with its estimate; exceeding one suspends with evidence."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from autonomic.errors import InvalidInput
from autonomic.governance.runaway import (
    ActionKind,
    Budget,
    Estimate,
    Guards,
    GuardState,
    ProposedAction,
    Verdict,
)


def _model_call(tokens: int, cost: float = 0.0, now: float = 0.0) -> ProposedAction:
    return ProposedAction(
        ActionKind.MODEL_CALL, "a", estimate=Estimate(tokens=tokens, cost=cost), now=now
    )


def _run_until_suspended(
    guards: Guards, calls: list[tuple[int, int, float, float]]
) -> tuple[GuardState, Verdict | None]:
    """Each call: (estimated tokens, actual tokens, estimated cost, actual cost)."""
    state = GuardState()
    for seq, (est_t, act_t, est_c, act_c) in enumerate(calls, 1):
        action = _model_call(est_t, est_c)
        verdict = guards.check(action, state)
        if not verdict.allowed:
            return state, verdict.verdict
        state.record(action, seq=seq)
        state.charge(tokens=act_t, cost=act_c)
    return state, None


@settings(max_examples=200, deadline=None)
@given(
    limit_tokens=st.integers(1_000, 50_000),
    limit_cost=st.floats(0.01, 2.0),
    calls=st.lists(
        st.tuples(st.integers(1, 4_000), st.floats(0.0, 2.0), st.floats(0.0001, 0.2)),
        min_size=1,
        max_size=80,
    ),
)
def test_a_run_never_exceeds_its_token_or_cost_budget_by_more_than_one_estimate(
    limit_tokens, limit_cost, calls
):
    """Actual usage may differ from the estimate (up to 2x here); the overshoot stays within one."""
    guards = Guards.default(budget=Budget(tokens=limit_tokens, cost=limit_cost))
    script = [(t, int(t * f), c, c * f) for t, f, c in calls]
    state, _ = _run_until_suspended(guards, script)
    max_token_estimate = max(t for t, _, _, _ in script)
    max_cost_estimate = max(c for _, _, c, _ in script)
    assert state.tokens <= limit_tokens + max_token_estimate
    assert state.cost <= limit_cost + max_cost_estimate + 1e-9


def test_without_the_estimate_the_same_run_overshoots():
    """Checking only what was used (not used + estimate) lets the last call blow through."""
    calls = [(3_000, 3_000, 0.0, 0.0)] * 10
    state, outcome = _run_until_suspended(Guards.default(budget=Budget(tokens=10_000)), calls)
    assert outcome is Verdict.SUSPEND
    assert state.tokens == 9_000
    naive = Guards.default(budget=Budget(tokens=10_000))
    state = GuardState()
    for seq, (_, actual, _, _) in enumerate(calls, 1):
        action = _model_call(0)  # no estimate: only "already over?" is checked
        if not naive.check(action, state).allowed:
            break
        state.record(action, seq=seq)
        state.charge(tokens=actual, cost=0)
    assert state.tokens == 12_000  # 2,000 over: the budget was passed by a whole call


def test_token_suspension_names_limit_used_and_estimate():
    guards = Guards.default(budget=Budget(tokens=1_000))
    state = GuardState()
    state.charge(tokens=900, cost=0.0)
    verdict = guards.check(_model_call(200), state)
    assert verdict.verdict is Verdict.SUSPEND
    assert verdict.code == "budget.tokens"
    assert verdict.findings[0].evidence == {"limit": 1_000, "used": 900, "estimate": 200}
    assert "raise tokens and resume" in verdict.explanation


def test_turns_wall_clock_and_per_tool_budgets():
    guards = Guards.default(
        budget=Budget(turns=2, wall_seconds=60, tool_calls={"search": 1, "*": 3})
    )
    state = GuardState()
    state.start(1_000.0)
    for seq in (1, 2):
        action = _model_call(0, now=1_001.0)
        assert guards.check(action, state).allowed
        state.record(action, seq=seq)
    assert guards.check(_model_call(0, now=1_002.0), state).code == "budget.turns"
    late = ProposedAction(ActionKind.TOOL_CALL, "a", tool="other", now=1_061.0)
    assert guards.check(late, state).code == "budget.wall_clock"

    search = ProposedAction(ActionKind.TOOL_CALL, "a", tool="search", now=1_010.0)
    assert guards.check(search, state).allowed
    state.record(search, seq=3)
    verdict = guards.check(search, state)
    assert verdict.code == "budget.tool_calls"
    assert verdict.findings[0].evidence["tool"] == "search"
    other = ProposedAction(ActionKind.TOOL_CALL, "a", tool="fetch", arguments={"n": 1}, now=1_010.0)
    assert guards.check(other, state).allowed


def test_budget_from_configuration_validates():
    assert Budget.from_dict({"tokens": "100", "tool_calls": {"x": 2}}) == Budget(
        tokens=100, tool_calls={"x": 2}
    )
    with pytest.raises(InvalidInput, match="unknown key\\(s\\) tokns"):
        Budget.from_dict({"tokns": 1})
    with pytest.raises(InvalidInput, match="must be >= 0"):
        Budget(cost=-1)
    with pytest.raises(InvalidInput, match="limits are numbers"):
        Budget.from_dict({"turns": "many"})
