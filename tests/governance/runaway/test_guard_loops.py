"""Loop detection: the reconciliation-loop incident, exact and near repeats, plans, acknowledgement."""

from __future__ import annotations

import pytest

from autonomic.core.canonical import canonical_json
from autonomic.errors import InvalidInput
from autonomic.governance.runaway import (
    ActionKind,
    Finding,
    Guards,
    GuardState,
    LoopPolicy,
    ProposedAction,
    Verdict,
)
from autonomic.testing.runaway import drive, reconciliation_loop, tool_calls


def _call(tool: str, args: dict[str, object], thought: str = "", **kw: object) -> ProposedAction:
    return ProposedAction(
        ActionKind.TOOL_CALL, "a", tool=tool, arguments=args, thought=thought, **kw
    )  # type: ignore[arg-type]


def test_reconciliation_loop_is_suspended_within_three_repetitions():
    runs: list[ProposedAction] = []
    result = drive(Guards.default(), GuardState(), reconciliation_loop(10), on_execute=runs.append)

    assert result.suspended is not None
    assert result.suspended.code == "loop.near_repeat"
    # the third cleanup is the one suspended; the destructive tool ran twice
    assert tool_calls(result.executed) == 2
    assert sum(1 for a in runs if a.tool == "delete_records") == 2
    evidence = result.suspended.findings[0].evidence
    assert [s["seq"] for s in evidence["similar"]] == [2, 4]
    assert all(s["similarity"] >= 0.95 and s["trace"] for s in evidence["similar"])
    assert evidence["embedder"].startswith("hashed-ngram")


class ExactRepeatCounter:
    """What peers offer: the same tool with the same arguments, counted."""

    name = "exact"

    def check(self, action: ProposedAction, state: GuardState) -> list[Finding]:
        key = canonical_json(dict(action.arguments))
        same = [s for s in state.steps if s.tool == action.tool and s.args_key == key]
        if len(same) >= 2:
            return [Finding("exact", "exact", Verdict.SUSPEND, "exact repeat")]
        return []


def test_an_exact_match_counter_lets_the_incident_run_unchecked():
    """Why near-repeat detection exists: the peers' exact counter never fires on this loop."""
    result = drive(Guards([ExactRepeatCounter()]), GuardState(), reconciliation_loop(10))
    assert result.suspended is None
    assert tool_calls(result.executed) == 10


def test_exact_repeats_of_a_write_are_suspended_on_the_third():
    guards, state = Guards.default(), GuardState()
    action = _call("send_report", {"to": "cfo"}, "sending the report")
    for seq in (1, 2):
        assert guards.check(action, state).allowed
        state.record(action, seq=seq)
    verdict = guards.check(action, state)
    assert verdict.verdict is Verdict.SUSPEND
    assert verdict.code == "loop.exact_repeat"
    assert "send_report" in verdict.explanation
    assert "resume" in verdict.explanation


def test_reads_may_repeat_more_than_writes():
    guards, state = Guards.default(loops=LoopPolicy(read_repeats=5)), GuardState()
    poll = _call("get_job_status", {"job_id": "j1"}, "still running", read_only=True)
    for seq in range(1, 6):
        assert guards.check(poll, state).allowed, seq
        state.record(poll, seq=seq)
    assert guards.check(poll, state).code == "loop.exact_repeat"


def test_distinct_writes_with_similar_wording_are_not_repeats():
    guards, state = Guards.default(), GuardState()
    for seq, (account, amount) in enumerate([("1001", 50.0), ("1002", 75.0), ("1003", 12.5)], 1):
        post = _call(
            "post_entry",
            {"account": account, "amount": amount, "memo": "bank fee"},
            f"Post the missing bank fee for account {account}",
        )
        assert guards.check(post, state).allowed, account
        state.record(post, seq=seq)


def test_reworded_plans_are_a_plan_repeat():
    guards, state = Guards.default(), GuardState()
    plans = [
        "1. purge stale rows older than 2026-11-21T10:00Z 2. re-run reconciliation 3. verify",
        "1. purge stale rows older than 2026-11-21T10:07Z 2. re-run reconciliation 3. verify",
        "1. purge stale rows older than 2026-11-21T10:14Z 2. re-run reconciliation 3. verify",
    ]
    for seq, plan in enumerate(plans[:2], 1):
        action = _call(f"tool{seq}", {"n": seq}, plan=plan)
        assert guards.check(action, state).allowed
        state.record(action, seq=seq)
    verdict = guards.check(_call("tool9", {"n": 9}, plan=plans[2]), state)
    assert verdict.code == "loop.plan_repeat"
    assert [s["seq"] for s in verdict.findings[0].evidence["similar"]] == [1, 2]


def test_acknowledging_clears_the_repeats_so_a_resumed_run_continues():
    guards, state = Guards.default(), GuardState()
    action = _call("send_report", {"to": "cfo"})
    state.record(action, seq=1)
    state.record(action, seq=2)
    assert not guards.check(action, state).allowed
    state.acknowledge(seq=3)
    assert guards.check(action, state).allowed


def test_loop_policy_rejects_nonsense():
    with pytest.raises(InvalidInput, match="threshold"):
        LoopPolicy(threshold=1.5)
    with pytest.raises(InvalidInput, match="at least 1"):
        LoopPolicy(repeats=0)
