"""Delegation limits: depth, cycles, and ping-pong between two scripted agents."""

from __future__ import annotations

import pytest

from autonomic.errors import InvalidInput
from autonomic.governance.runaway import (
    ActionKind,
    DelegationPolicy,
    Guards,
    GuardState,
    Hop,
    ProposedAction,
)
from autonomic.testing.runaway import ping_pong_message


def test_ping_pong_between_two_agents_is_stopped_within_three_exchanges():
    guards = Guards.default()
    states = {"linter": GuardState(), "fixer": GuardState()}
    sender, receiver = "linter", "fixer"
    stopped_at = None
    for n in range(1, 10):
        action = ping_pong_message(sender, receiver, n)
        verdict = guards.check(action, states[sender])
        if not verdict.allowed:
            stopped_at = n
            break
        seq = states[sender].last_seq + 1
        states[sender].record(action, seq=seq)
        states[receiver].received(
            source=sender,
            target=receiver,
            subject=action.subject,
            seq=states[receiver].last_seq + 1,
        )
        sender, receiver = receiver, sender
    assert stopped_at is not None
    assert stopped_at <= 3
    assert verdict.code == "delegation.ping_pong"
    exchanges = verdict.findings[0].evidence["exchanges"]
    assert [(e["from"], e["to"]) for e in exchanges] == [("linter", "fixer"), ("fixer", "linter")]


def test_a_reply_on_a_different_subject_is_not_ping_pong():
    guards, state = Guards.default(), GuardState()
    state.record(
        ProposedAction(ActionKind.DELEGATE, "a", target="b", subject="review PR 12"), seq=1
    )
    state.received(source="b", target="a", subject="which branch holds the release notes?", seq=2)
    again = ProposedAction(ActionKind.DELEGATE, "a", target="b", subject="review PR 12")
    assert guards.check(again, state).allowed


def test_delegation_depth_limit():
    guards = Guards.default(delegation=DelegationPolicy(max_depth=3))
    chain = tuple(Hop(f"agent{i}", f"task {i}") for i in range(3))
    ok = ProposedAction(ActionKind.DELEGATE, "agent2", target="agent3", subject="t", chain=chain)
    assert guards.check(ok, GuardState()).allowed
    deep = ProposedAction(
        ActionKind.DELEGATE, "agent3", target="agent4", subject="t", chain=(*chain, Hop("agent3"))
    )
    verdict = guards.check(deep, GuardState())
    assert verdict.code == "delegation.depth"
    assert verdict.findings[0].evidence["depth"] == 4
    assert "agent0 -> agent1 -> agent2 -> agent3 -> agent4" in verdict.explanation


def test_forty_seven_levels_are_stopped_at_the_default_depth():
    chain: tuple[Hop, ...] = (Hop("root", "migrate the database"),)
    guards = Guards.default()
    for level in range(1, 48):
        action = ProposedAction(
            ActionKind.DELEGATE,
            chain[-1].agent,
            target=f"helper{level}",
            subject=f"part {level} of the migration plan, step {level * 3}",
            chain=chain,
        )
        if not guards.check(action, GuardState()).allowed:
            break
        chain = (*chain, Hop(f"helper{level}", action.subject))
    assert len(chain) == DelegationPolicy().max_depth + 1


def test_a_cycle_in_the_chain_is_detected():
    chain = (Hop("planner", "fix lint in a.py"), Hop("fixer", "Fix the lint in a.py (attempt 2)"))
    back = ProposedAction(
        ActionKind.DELEGATE, "fixer", target="planner", subject="fix lint in a.py", chain=chain
    )
    verdict = Guards.default().check(back, GuardState())
    assert verdict.code == "delegation.cycle"
    other = ProposedAction(
        ActionKind.DELEGATE, "fixer", target="planner", subject="which style guide?", chain=chain
    )
    assert Guards.default().check(other, GuardState()).allowed


def test_policy_validates():
    with pytest.raises(InvalidInput, match="max_depth"):
        DelegationPolicy(max_depth=0)
