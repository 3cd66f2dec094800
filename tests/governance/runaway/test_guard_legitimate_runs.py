"""No false suspension on long, varied, legitimate runs (with polling), and the rate is reported."""

from __future__ import annotations

from autonomic.governance.runaway import Budget, Guards, GuardState
from autonomic.testing.runaway import drive, legitimate_run, tool_calls

RUNS = 25
STEPS = 60


def test_no_false_suspension_on_legitimate_long_runs(capsys):
    guards = Guards.default(budget=Budget(turns=500, tokens=2_000_000, cost=5.0))
    suspended = []
    polls = 0
    for seed in range(RUNS):
        actions = legitimate_run(seed, STEPS)
        assert tool_calls(actions) >= 50
        polls += sum(1 for a in actions if a.tool == "get_job_status")
        result = drive(guards, GuardState(), actions)
        if result.suspended is not None:
            suspended.append((seed, result.suspended.explanation))
    with capsys.disabled():
        print(
            f"\nloop guard false positives: {len(suspended)}/{RUNS} legitimate runs "
            f"({len(suspended) / RUNS:.0%}), {polls} polling reads among them"
        )
    assert polls > 100  # the runs really contain repeated reads
    assert suspended == []


def test_the_same_runs_with_a_loose_threshold_would_be_suspended():
    """The legitimate runs are close enough to the line that a careless threshold trips them."""
    from autonomic.governance.runaway import LoopPolicy

    loose = Guards.default(loops=LoopPolicy(threshold=0.6))
    assert any(drive(loose, GuardState(), legitimate_run(s, STEPS)).suspended for s in range(RUNS))
