"""The canary's statistical rule: Wald's sequential probability ratio test on discordant pairs.

A canary sends a share of new runs to a candidate version; each run ends *good* or *bad* (see
``canary.Outcome``). The candidate's runs are paired, in the order they end, with the live
version's runs that ended meanwhile. A pair where both ended alike says nothing about which
version is worse; a **discordant** pair (one good, one bad) does. If the two versions are equally
good, the bad one of a discordant pair is the candidate with probability exactly 1/2, whatever
the base failure rate - so the test needs no estimate of the live version's rate, and the
false-alarm bound below holds for any rate (McNemar's idea, tested sequentially).

The test (Wald 1945), with ``theta`` the chance that the candidate is the bad one of a
discordant pair:

* H0: ``theta = 1/2`` (no worse) against H1: ``theta = theta1`` (worse; default 2/3, i.e. the
  candidate fails twice as often as the live version among the pairs that differ);
* after each discordant pair, ``llr += log(theta1 / 0.5)`` if the candidate was the bad one,
  else ``llr += log((1 - theta1) / 0.5)``;
* **rollback** as soon as ``llr >= log((1 - beta) / alpha)``; **promote** as soon as
  ``llr <= log(beta / (1 - alpha))`` and at least ``min_pairs`` pairs were seen; past
  ``max_pairs`` pairs with neither, the test stops **undecided** (an operator decides).

Wald's inequalities bound the chance of a rollback when the versions are equal by
``alpha / (1 - beta)`` (5.6 % with the defaults ``alpha = 0.05``, ``beta = 0.10``), and the
chance of promoting a candidate that is worse by ``theta1`` by ``beta / (1 - alpha)``.

Pure and fast (no I/O): ``tests/release/test_sequential.py`` runs it on 1,000 seeded streams.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field

from autonomic.errors import InvalidInput

__all__ = ["Sprt", "SprtRule", "Verdict"]


class Verdict(enum.StrEnum):
    CONTINUE = "continue"
    ROLLBACK = "rollback"
    PROMOTE = "promote"
    UNDECIDED = "undecided"


@dataclass(frozen=True, slots=True)
class SprtRule:
    """The test's parameters (documented in docs/release-safety.md, "Canary").

    Args:
        alpha: the false-alarm rate: the chance of rolling back a candidate as good as the live
            version is at most ``alpha / (1 - beta)``.
        beta: the chance of promoting a candidate worse by ``theta1`` (at most ``beta / (1 - alpha)``).
        theta1: the alternative: the candidate is the bad run of a discordant pair with this
            probability (0.5 < theta1 < 1).
        min_pairs: pairs (discordant or not) seen before a promotion may happen.
        max_pairs: pairs after which the test stops undecided.
    """

    alpha: float = 0.05
    beta: float = 0.10
    theta1: float = 2 / 3
    min_pairs: int = 30
    max_pairs: int = 2_000

    def __post_init__(self) -> None:
        if not (0 < self.alpha < 0.5 and 0 < self.beta < 0.5):
            raise InvalidInput(
                f"canary alpha and beta must be between 0 and 0.5, got {self.alpha} and {self.beta}"
            )
        if not 0.5 < self.theta1 < 1:
            raise InvalidInput(f"canary theta1 must be between 0.5 and 1, got {self.theta1}")
        if not 1 <= self.min_pairs <= self.max_pairs:
            raise InvalidInput(
                f"canary min_pairs ({self.min_pairs}) must be at least 1 and at most "
                f"max_pairs ({self.max_pairs})"
            )

    @property
    def upper(self) -> float:
        """Rollback at or above this log-likelihood ratio."""
        return math.log((1 - self.beta) / self.alpha)

    @property
    def lower(self) -> float:
        """Promote at or below this log-likelihood ratio."""
        return math.log(self.beta / (1 - self.alpha))

    @property
    def false_alarm_bound(self) -> float:
        """Wald's bound on the chance of a rollback when the versions are equally good."""
        return self.alpha / (1 - self.beta)


@dataclass(slots=True)
class Sprt:
    """The running test: feed it pairs (live bad?, candidate bad?) until it decides."""

    rule: SprtRule = field(default_factory=SprtRule)
    pairs: int = 0
    discordant: int = 0
    candidate_worse: int = 0
    llr: float = 0.0
    verdict: Verdict = Verdict.CONTINUE

    def add(self, live_bad: bool, candidate_bad: bool) -> Verdict:
        """One pair of outcomes; the verdict so far (a decided test ignores further pairs)."""
        if self.verdict is not Verdict.CONTINUE:
            return self.verdict
        self.pairs += 1
        if live_bad != candidate_bad:
            self.discordant += 1
            if candidate_bad:
                self.candidate_worse += 1
                self.llr += math.log(self.rule.theta1 / 0.5)
            else:
                self.llr += math.log((1 - self.rule.theta1) / 0.5)
        if self.llr >= self.rule.upper:
            self.verdict = Verdict.ROLLBACK
        elif self.llr <= self.rule.lower and self.pairs >= self.rule.min_pairs:
            self.verdict = Verdict.PROMOTE
        elif self.pairs >= self.rule.max_pairs:
            self.verdict = Verdict.UNDECIDED
        return self.verdict
