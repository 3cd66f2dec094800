"""Seeded crash trials on every store: SIGKILL a worker anywhere, resume, lose and repeat nothing.

Each trial forks a child that drives a run of the crash harness's agent and SIGKILLs itself at a
random fault point; this process resumes the run and checks the invariants (see
``autonomic.testing.crash``). The last tests break the engine on purpose, to show that the
harness notices.
"""

import dataclasses
import os

import pytest

from autonomic.core.messages import Role
from autonomic.core.state import RunState
from autonomic.engine.step import StepProtocol
from autonomic.testing import crash
from autonomic.testing.crash import CRASH_POINTS, CrashKit, Report, run_trials

TRIALS = 100
SLOW_TRIALS = 1000
SEED = 20241121


@pytest.fixture
def store_url(store_url_or_pooler: str) -> str:
    """Every crash trial here runs on SQLite, PostgreSQL, and PostgreSQL behind pgBouncer's
    transaction pooling (``pooler=transaction``)."""
    return store_url_or_pooler


def _assert_invariants(report: Report, n: int) -> None:
    broken = report.details(limit=20, ignore=("duplicated_effect",))
    assert not broken, "\n".join(broken)
    assert report.trials == n
    assert report.crashes == n, f"only {report.crashes} of {n} trials crashed"
    assert report.completed + report.in_doubt == n, report.summary()["outcomes_by_point"]
    assert report.lost_steps == 0
    assert report.duplicated_keys == 0
    assert report.repeated_model_calls == 0
    assert set(report.crashes_by_point) == set(CRASH_POINTS)
    assert all(report.crashes_by_point[p] > 0 for p in CRASH_POINTS), report.crashes_by_point
    assert report.completed > 0
    assert report.in_doubt > 0


def test_crashes_anywhere_lose_nothing_and_repeat_nothing(store_url, tmp_path):
    report = run_trials(store_url, TRIALS, SEED, workdir=tmp_path / "trials")
    _assert_invariants(report, TRIALS)


@pytest.mark.slow
def test_a_thousand_crashes_lose_nothing_and_repeat_nothing(store_url, tmp_path, request):
    if not (request.config.getoption("--slow", default=False) or os.environ.get("AUTONOMIC_SLOW")):
        pytest.skip("1,000 crash trials: run with --slow (or AUTONOMIC_SLOW=1)")
    report = run_trials(store_url, SLOW_TRIALS, SEED + 1, workdir=tmp_path / "trials")
    _assert_invariants(report, SLOW_TRIALS)


def test_no_operation_is_applied_twice_under_any_key(store_url, tmp_path):
    report = run_trials(store_url, 25, SEED + 2, workdir=tmp_path / "trials")
    assert report.duplicated_effects == 0, "\n".join(report.details())


# -- the harness notices a broken engine -----------------------------------------------------------


def _break_the_resume(monkeypatch, breakage):
    """Apply ``breakage(patcher)`` while the harness resumes a crashed run, and only then.

    The reference run and the crashing children keep the real engine.
    """
    resume = crash.trial._resume

    async def broken_resume(url, kit, trial):
        with monkeypatch.context() as patcher:
            breakage(patcher)
            await resume(url, kit, trial)

    monkeypatch.setattr(crash.trial, "_resume", broken_resume)


def test_the_harness_catches_a_resume_that_replays_non_idempotent_calls(
    sqlite_url, tmp_path, monkeypatch
):
    pinned_tool = StepProtocol._pinned_tool

    def everything_idempotent(self, name):
        return dataclasses.replace(pinned_tool(self, name), idempotent=True)

    _break_the_resume(
        monkeypatch, lambda p: p.setattr(StepProtocol, "_pinned_tool", everything_idempotent)
    )
    report = run_trials(sqlite_url, 30, SEED, workdir=tmp_path / "trials", points=["after_effect"])
    assert report.in_doubt == 0
    assert report.duplicated_keys > 0
    assert report.violations["duplicated_key"] > 0


def test_the_harness_catches_a_resume_that_forgets_started_calls(sqlite_url, tmp_path, monkeypatch):
    pending_calls = RunState.pending_calls

    def unstarted_only(self):
        return [p for p in pending_calls(self) if p.intent is None]

    _break_the_resume(monkeypatch, lambda p: p.setattr(RunState, "pending_calls", unstarted_only))
    report = run_trials(sqlite_url, 30, SEED, workdir=tmp_path / "trials", points=["after_commit"])
    assert report.lost_steps > 0
    assert report.violations["lost_step"] > 0


def test_the_harness_catches_a_resume_that_asks_the_model_again(sqlite_url, tmp_path, monkeypatch):
    asked_again = []

    class Forgetful:
        """The real model, but first asked once more for the previous turn (a committed one)."""

        def __init__(self, model):
            self.model = model
            self.name = model.name

        async def complete(self, messages, tools):
            turns = [i for i, m in enumerate(messages) if m.role is Role.ASSISTANT]
            if turns and self not in asked_again:
                asked_again.append(self)
                await self.model.complete(messages[: turns[-1]], tools)
            return await self.model.complete(messages, tools)

    def forgetful_model(p):
        p.setattr(CrashKit, "resolve", lambda kit, spec: Forgetful(kit.model))

    _break_the_resume(monkeypatch, forgetful_model)
    report = run_trials(sqlite_url, 5, SEED, workdir=tmp_path / "trials", points=["step_done"])
    assert asked_again  # (in-doubt runs and runs already finished never ask the model)
    assert report.repeated_model_calls == len(asked_again)
    assert report.violations["repeated_model_call"] == len(asked_again)
