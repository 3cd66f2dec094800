"""GuardState: folding the journaled records gives the same state and the same verdicts."""

from __future__ import annotations

import json

import pytest

from autonomic.errors import InvalidInput
from autonomic.governance.runaway import ActionKind, Guards, GuardState
from autonomic.testing.runaway import legitimate_run, reconciliation_loop


def test_rebuilding_from_records_gives_the_same_verdicts():
    guards = Guards.default()
    live = GuardState()
    records = [live.start(1_795_000_000.0)]
    actions = legitimate_run(3, 30) + reconciliation_loop(5)
    verdicts = []
    for action in actions:
        verdict = guards.check(action, live)
        verdicts.append(verdict.findings_record())
        if verdict.allowed:
            records.append(live.record(action, seq=live.last_seq + 1))
            if action.kind is ActionKind.MODEL_CALL:
                records.append(live.charge(tokens=action.estimate.tokens, cost=0.001))
    journal = json.loads(json.dumps(records))  # what the store gives back
    rebuilt = GuardState.rebuild(journal)
    assert (rebuilt.turns, rebuilt.tokens, rebuilt.tool_calls, rebuilt.last_seq) == (
        live.turns,
        live.tokens,
        live.tool_calls,
        live.last_seq,
    )
    assert rebuilt.cost == pytest.approx(live.cost)
    assert [s.trace for s in rebuilt.steps] == [s.trace for s in live.steps]
    probe = reconciliation_loop(7)[-1]
    assert (
        guards.check(probe, rebuilt).findings_record()
        == guards.check(probe, live).findings_record()
    )
    assert any(v["outcome"] == "suspend" for v in verdicts)


def test_history_is_bounded_so_the_cost_per_step_stays_flat():
    state = GuardState(window=20)
    for seq, action in enumerate(legitimate_run(1, 200), 1):
        state.record(action, seq=seq)
    assert len(state.steps) == 20
    assert state.turns == sum(state.tool_calls.values()) >= 200


def test_unknown_records_are_rejected_with_a_hint():
    with pytest.raises(InvalidInput, match="unknown record kind 'bogus'"):
        GuardState.rebuild([{"k": "bogus"}])
    with pytest.raises(InvalidInput, match="at least 1"):
        GuardState(window=0)
