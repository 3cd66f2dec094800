"""The canary's sequential test on synthetic outcome streams: it rolls a worse candidate back
within the stated number of runs, and rolls an equal one back no more often than its stated
false-alarm bound (1,000 seeded repetitions: the module is pure, so this is cheap)."""

import math
import random

import pytest

from autonomic.errors import InvalidInput
from autonomic.release.sequential import Sprt, SprtRule, Verdict

LIVE_BAD = 0.10
WORSE_BY = 0.15
ROLLBACK_WITHIN = 300
"""Stated in docs/release-safety.md: a candidate failing 25 % of runs against a live version
failing 10 % is rolled back within 300 candidate runs in at least 95 % of streams."""


def stream(rng: random.Random, live: float, candidate: float, rule: SprtRule) -> Sprt:
    test = Sprt(rule)
    while test.add(rng.random() < live, rng.random() < candidate) is Verdict.CONTINUE:
        pass
    return test


def test_no_rollback_on_equal_streams_beyond_the_false_alarm_bound() -> None:
    rule = SprtRule()
    rng = random.Random(19)
    repetitions = 1_000
    rollbacks = sum(
        stream(rng, LIVE_BAD, LIVE_BAD, rule).verdict is Verdict.ROLLBACK
        for _ in range(repetitions)
    )
    bound = rule.false_alarm_bound
    # the bound plus three binomial standard deviations of 1,000 draws
    allowed = repetitions * bound + 3 * math.sqrt(repetitions * bound * (1 - bound))
    assert rollbacks <= allowed, (rollbacks, allowed)


def test_a_worse_candidate_is_rolled_back_within_the_stated_runs() -> None:
    rule = SprtRule()
    rng = random.Random(7)
    tests = [stream(rng, LIVE_BAD, LIVE_BAD + WORSE_BY, rule) for _ in range(400)]
    in_time = sum(t.verdict is Verdict.ROLLBACK and t.pairs <= ROLLBACK_WITHIN for t in tests)
    assert in_time >= 0.95 * len(tests)


def test_an_equal_candidate_is_mostly_promoted_and_never_before_min_pairs() -> None:
    rule = SprtRule(min_pairs=50)
    rng = random.Random(3)
    tests = [stream(rng, LIVE_BAD, LIVE_BAD, rule) for _ in range(200)]
    promoted = [t for t in tests if t.verdict is Verdict.PROMOTE]
    assert len(promoted) >= 0.9 * len(tests)
    assert min(t.pairs for t in promoted) >= 50


def test_a_decided_test_ignores_later_pairs_and_max_pairs_stops_it() -> None:
    test = Sprt(SprtRule(max_pairs=40, min_pairs=40))
    for _ in range(40):
        test.add(False, False)  # concordant pairs: no evidence either way
    assert test.verdict is Verdict.UNDECIDED
    assert test.add(False, True) is Verdict.UNDECIDED
    assert test.pairs == 40


@pytest.mark.parametrize(
    "options",
    [
        {"alpha": 0},
        {"beta": 0.7},
        {"theta1": 0.5},
        {"min_pairs": 0},
        {"min_pairs": 5, "max_pairs": 4},
    ],
)
def test_bad_rules_are_refused(options: dict[str, float]) -> None:
    with pytest.raises(InvalidInput):
        SprtRule(**options)  # type: ignore[arg-type]
