"""A seeded batch of crash trials, what it found, and the command line that prints it as JSON."""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autonomic.core.run import RunStatus
from autonomic.testing.crash.kit import CrashKit
from autonomic.testing.crash.trial import (
    CRASH_POINTS,
    IN_DOUBT,
    TrialResult,
    crash_trial,
    reference_run,
)


@dataclass
class Report:
    """What a batch of trials found. ``ok`` when every trial ended well and nothing was broken."""

    url: str
    seed: int
    trials: int = 0
    completed: int = 0
    in_doubt: int = 0
    crashes: int = 0
    lost_steps: int = 0
    duplicated_keys: int = 0
    duplicated_effects: int = 0
    repeated_model_calls: int = 0
    crashes_by_point: Counter[str] = field(default_factory=Counter)
    outcomes_by_point: dict[str, Counter[str]] = field(default_factory=dict)
    violations: Counter[str] = field(default_factory=Counter)
    failures: list[TrialResult] = field(default_factory=list)
    seconds: float = 0.0
    audit_breaks: list[str] = field(default_factory=list)
    """What ``autonomic audit verify`` found in the database after the trials (crashes must
    leave no entry unanchored and no anchor without its entries)."""

    def add(self, trial: TrialResult) -> None:
        self.trials += 1
        self.completed += trial.outcome == RunStatus.COMPLETED.value
        self.in_doubt += trial.outcome == IN_DOUBT
        if trial.crashed:
            self.crashes += 1
            self.crashes_by_point[trial.point] += 1
        self.outcomes_by_point.setdefault(trial.point, Counter())[trial.outcome] += 1
        self.lost_steps += trial.lost_steps
        self.duplicated_keys += trial.duplicated_keys
        self.duplicated_effects += trial.duplicated_effects
        self.repeated_model_calls += trial.repeated_model_calls
        self.violations.update(v.kind for v in trial.violations)
        if trial.violations:
            self.failures.append(trial)

    @property
    def ok(self) -> bool:
        return (
            not self.failures
            and not self.audit_breaks
            and self.completed + self.in_doubt == self.trials
        )

    def details(self, *, limit: int = 10, ignore: Sequence[str] = ()) -> list[str]:
        """The first ``limit`` violations (of kinds not in ``ignore``), for an error message."""
        found = [v.detail for t in self.failures for v in t.violations if v.kind not in ignore]
        return found[:limit]

    def summary(self) -> dict[str, Any]:
        """A JSON-ready summary."""
        return {
            "url_scheme": self.url.partition(":")[0],
            "seed": self.seed,
            "trials": self.trials,
            "completed": self.completed,
            "in_doubt": self.in_doubt,
            "crashes": self.crashes,
            "crashes_by_point": dict(sorted(self.crashes_by_point.items())),
            "outcomes_by_point": {p: dict(c) for p, c in sorted(self.outcomes_by_point.items())},
            "lost_steps": self.lost_steps,
            "duplicated_keys": self.duplicated_keys,
            "duplicated_effects": self.duplicated_effects,
            "repeated_model_calls": self.repeated_model_calls,
            "violations": dict(sorted(self.violations.items())),
            "failed_trials": len(self.failures),
            "audit_log": self.audit_breaks[:3] or "intact",
            "ok": self.ok,
            "seconds": round(self.seconds, 3),
            "seconds_per_trial": round(self.seconds / self.trials, 4) if self.trials else None,
            "first_violations": self.details(),
        }


def run_trials(
    url: str,
    n: int,
    seed: int,
    *,
    workdir: Path | None = None,
    points: Sequence[str] = CRASH_POINTS,
    kit: CrashKit | None = None,
    progress: Callable[[TrialResult], None] | None = None,
) -> Report:
    """Run ``n`` crash trials on the database at ``url`` (migrated first), seeded by ``seed``.

    Each trial crashes at a point drawn from ``points`` and an occurrence drawn from the range the
    reference run reaches, so every trial does crash. Side-channel files go under ``workdir`` (kept)
    or a temporary directory (removed). Call with no event loop running: children are forked.
    """
    kit = kit or CrashKit()
    started = time.perf_counter()
    temporary = workdir is None
    root = Path(tempfile.mkdtemp(prefix="autonomic-crash-")) if workdir is None else workdir
    try:
        reference = reference_run(url, root / "reference", kit)
        totals = reference.totals()
        choices = [p for p in points if totals[p] > 0]
        if not choices:
            raise ValueError(f"none of the points {list(points)} is reached by a run of the plan")
        rng = random.Random(seed)  # noqa: S311 - reproducible choices, not secrets
        report = Report(url=url, seed=seed)
        for index in range(n):
            point = rng.choice(choices)
            count = rng.randint(1, totals[point])
            trial = crash_trial(
                url,
                point,
                count,
                reference=reference,
                directory=root / f"trial-{index:05d}",
                kit=kit,
                index=index,
            )
            report.add(trial)
            if progress is not None:
                progress(trial)
    finally:
        if temporary:
            shutil.rmtree(root, ignore_errors=True)
    report.seconds = time.perf_counter() - started
    report.audit_breaks = asyncio.run(_audit_breaks(url))
    return report


async def _audit_breaks(url: str) -> list[str]:
    """The audit log verified over every run the trials wrote."""
    from autonomic.audit.verify import verify_store
    from autonomic.bootstrap import build_store

    store = build_store(url)
    try:
        return [str(b) for b in (await verify_store(store)).breaks]
    finally:
        await store.close()


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m autonomic.testing.crash --db URL -n N --seed S``: print the report as JSON."""
    parser = argparse.ArgumentParser(
        prog="python -m autonomic.testing.crash",
        description="Crash a worker at random points of runs, resume them, check the invariants.",
    )
    parser.add_argument("--db", required=True, help="sqlite:///path.db or postgresql://...")
    parser.add_argument("-n", "--trials", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, help="keep the effect sinks and model logs here")
    args = parser.parse_args(argv)
    report = run_trials(args.db, args.trials, args.seed, workdir=args.workdir)
    sys.stdout.write(json.dumps(report.summary(), indent=2) + "\n")
    return 0 if report.ok else 1
