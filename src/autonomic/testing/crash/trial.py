"""Crash trials: the uncrashed reference run, one crash-and-resume trial, and its checks.

``crash_trial`` kills a child at a fault point, ``resume_trial`` resumes the run in this process
and ``check_trial`` checks it against the ``Reference``: the outcome, no lost step, no duplicated
effect, no repeated model call, an intact journal.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autonomic.bootstrap import build_store
from autonomic.core.journal import Entry, EntryKind
from autonomic.core.run import RunStatus
from autonomic.engine.executor import new_run_id
from autonomic.engine.faults import STEP_POINTS, CrashAt
from autonomic.testing.crash.child import ChildExit, drive_in_child
from autonomic.testing.crash.journal import StepResult, chain_problems, kinds, step_results
from autonomic.testing.crash.kit import BLIND, CrashKit, TrialFiles, read_jsonl

CRASH_POINTS: tuple[str, ...] = STEP_POINTS
"""Where trials crash: every fault point of the step protocol."""
IN_DOUBT = "in doubt"


# -- the reference run ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FaultHit:
    """A fault point reached in the reference run, with how far the run had got by then."""

    point: str
    occurrence: int
    tools_run: int
    """Tool calls made so far."""
    model_calls: int
    """Model calls made so far."""


class _Recorder:
    """A ``Faults`` that records every point reached (no crash)."""

    def __init__(self, files: TrialFiles) -> None:
        self.files = files
        self.hits: list[FaultHit] = []
        self._seen: Counter[str] = Counter()

    def at(self, point: str) -> None:
        self._seen[point] += 1
        tools_run = sum(1 for r in self.files.effects() if r["event"] == "attempt")
        model_calls = len(read_jsonl(self.files.model_log))
        self.hits.append(FaultHit(point, self._seen[point], tools_run, model_calls))


@dataclass(frozen=True)
class Reference:
    """An uncrashed run of the plan: what every crashed run must converge to."""

    run_id: str
    entries: tuple[Entry, ...]
    output: Any
    hits: tuple[FaultHit, ...]

    @property
    def results(self) -> list[StepResult]:
        return step_results(self.entries)

    @property
    def kinds(self) -> list[str]:
        return kinds(self.entries)

    def totals(self) -> Counter[str]:
        """How many times each fault point is reached in a whole run."""
        return Counter(h.point for h in self.hits)

    def occurrence(
        self,
        point: str,
        *,
        tools_run: int | None = None,
        model_calls: int | None = None,
        last: bool = False,
    ) -> int:
        """The first (or last) occurrence of ``point`` reached when exactly ``tools_run`` tool
        calls and ``model_calls`` model calls had been made (either may be left out)."""
        found = [
            h.occurrence
            for h in self.hits
            if h.point == point
            and (tools_run is None or h.tools_run == tools_run)
            and (model_calls is None or h.model_calls == model_calls)
        ]
        if not found:
            raise LookupError(
                f"{point} is never reached after {tools_run} tool and {model_calls} model calls"
            )
        return found[-1] if last else found[0]


async def _finish_reference(url: str, kit: CrashKit, files: TrialFiles) -> Reference:
    recorder = _Recorder(files)
    store = build_store(url)
    try:
        await store.migrate()
        engine = kit.engine(store, faults=recorder)
        run_id = new_run_id()
        await kit.start(engine, run_id, files)
        run = await engine.run_to_end(run_id)
        entries = await store.load_journal(run_id)
    finally:
        await store.close()
    if run.status is not RunStatus.COMPLETED:
        raise AssertionError(f"the reference run ended {run.status}: {run.status_reason}")
    return Reference(run_id, tuple(entries), run.output, tuple(recorder.hits))


def reference_run(url: str, directory: Path, kit: CrashKit | None = None) -> Reference:
    """Migrate ``url`` and run the plan once without crashing, recording every fault point."""
    return asyncio.run(_finish_reference(url, kit or CrashKit(), TrialFiles.create(directory)))


# -- a trial and its checks ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Violation:
    """A broken invariant. ``kind``: outcome, lost_step, duplicated_key, duplicated_effect,
    repeated_model_call, evidence, journal, child, error."""

    kind: str
    detail: str


@dataclass
class TrialResult:
    """One crash-and-resume trial and what its checks found."""

    index: int
    point: str
    count: int
    run_id: str
    child: ChildExit
    status: RunStatus | None = None
    reason: str | None = None
    output: Any = None
    entries: list[Entry] = field(default_factory=list)
    committed_before_resume: int = 0
    effects: list[dict[str, Any]] = field(default_factory=list)
    model_calls: Counter[int] = field(default_factory=Counter)
    lost_steps: int = 0
    duplicated_keys: int = 0
    duplicated_effects: int = 0
    repeated_model_calls: int = 0
    violations: list[Violation] = field(default_factory=list)

    @property
    def crashed(self) -> bool:
        return self.child.killed

    @property
    def outcome(self) -> str:
        if self.status is RunStatus.WAITING_FOR_HUMAN and IN_DOUBT in (self.reason or ""):
            return IN_DOUBT
        return self.status.value if self.status else "unknown"

    def violate(self, kind: str, detail: str) -> None:
        self.violations.append(
            Violation(kind, f"trial {self.index} ({self.point}:{self.count}): {detail}")
        )


async def _resume(url: str, kit: CrashKit, trial: TrialResult) -> None:
    """Resume the crashed run with a fresh engine until it stops; record what it became."""
    store = build_store(url)
    try:
        trial.committed_before_resume = len(await store.load_journal(trial.run_id))
        engine = kit.engine(store)
        for _ in range(3):
            run = await store.get_run(trial.run_id)
            if run.status not in (RunStatus.PENDING, RunStatus.RUNNING):
                break
            await engine.run_to_end(trial.run_id)
        run = await store.get_run(trial.run_id)
        trial.status, trial.reason, trial.output = run.status, run.status_reason, run.output
        trial.entries = await store.load_journal(trial.run_id)
    finally:
        await store.close()


def resume_trial(
    url: str,
    run_id: str,
    *,
    child: ChildExit,
    reference: Reference,
    files: TrialFiles,
    kit: CrashKit | None = None,
    point: str = "custom",
    count: int = 0,
    index: int = 0,
) -> TrialResult:
    """Resume ``run_id`` (left behind by ``child``) in this process, then check every invariant."""
    trial = TrialResult(index=index, point=point, count=count, run_id=run_id, child=child)
    try:
        asyncio.run(_resume(url, kit or CrashKit(), trial))
    except Exception as exc:
        trial.violate("error", f"resuming failed: {type(exc).__name__}: {exc}")
        return trial
    check_trial(trial, reference, files)
    return trial


def check_trial(trial: TrialResult, reference: Reference, files: TrialFiles) -> None:
    """Check every invariant of a resumed trial; fill in its counters and violations."""
    for problem in chain_problems(trial.entries):
        trial.violate("journal", problem)
    _check_steps(trial, reference)
    _check_effects(trial, files)
    _check_model_calls(trial, files)


def _common_prefix(a: Sequence[StepResult], b: Sequence[StepResult]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def _check_steps(trial: TrialResult, reference: Reference) -> None:
    got = step_results(trial.entries)
    want = reference.results
    same = _common_prefix(got, want)
    if trial.outcome == RunStatus.COMPLETED.value:
        trial.lost_steps += max(len(got), len(want)) - same
        if got != want:
            trial.violate("lost_step", f"tool results differ from the reference after step {same}")
        elif kinds(trial.entries) != reference.kinds:
            trial.violate("journal", "the journal's kinds differ from the reference's")
        if trial.output != reference.output:
            trial.violate("lost_step", f"output {trial.output!r} != {reference.output!r}")
    elif trial.outcome == IN_DOUBT:
        trial.lost_steps += len(got) - same
        if same != len(got) or len(got) >= len(want):
            trial.violate(
                "lost_step", "an in-doubt run's results are not a prefix of the reference"
            )
        _check_evidence(trial, want[len(got)] if len(got) < len(want) else None)
    else:
        trial.violate("outcome", f"the run ended {trial.status}: {trial.reason}")


def _check_evidence(trial: TrialResult, next_step: StepResult | None) -> None:
    last = trial.entries[-1] if trial.entries else None
    if last is None or last.kind is not EntryKind.TRANSITION:
        trial.violate("evidence", "an in-doubt run does not end with its transition")
        return
    evidence = last.payload.get("in_doubt")
    if not isinstance(evidence, dict):
        trial.violate("evidence", "the in-doubt transition carries no intent")
        return
    call_id = evidence.get("call_id")
    intents = [
        e.payload
        for e in trial.entries
        if e.kind is EntryKind.TOOL_INTENT and e.payload.get("call_id") == call_id
    ]
    if intents != [evidence]:
        trial.violate("evidence", f"the evidence {evidence} is not the journaled intent")
    if any(
        e.kind is EntryKind.TOOL_RESULT and e.payload.get("call_id") == call_id
        for e in trial.entries
    ):
        trial.violate("evidence", f"call {call_id} is in doubt but has a result")
    if evidence.get("tool") != BLIND or evidence.get("idempotent") is not False:
        trial.violate("evidence", f"an idempotent call was sent to a human: {evidence}")
    if next_step is not None and call_id != next_step[0]:
        trial.violate("lost_step", f"in doubt about {call_id}, but the next step is {next_step[0]}")
    if str(call_id) not in (trial.reason or ""):
        trial.violate("evidence", "the status reason does not name the call in doubt")


def _check_effects(trial: TrialResult, files: TrialFiles) -> None:
    effects = [r for r in files.effects() if r["run_id"] == trial.run_id]
    trial.effects = effects
    applied = [r for r in effects if r["event"] == "applied"]
    per_key = Counter(str(r["key"]) for r in applied)
    per_op = Counter(str(r["op"]) for r in applied)
    for key, n in per_key.items():
        if n > 1:
            trial.duplicated_keys += n - 1
            trial.violate("duplicated_key", f"key {key} was applied {n} times")
    for op, n in per_op.items():
        if n > 1:
            keys = sorted({str(r["key"]) for r in applied if r["op"] == op})
            trial.duplicated_effects += n - 1
            trial.violate(
                "duplicated_effect", f"operation {op} was applied {n} times (keys {keys})"
            )
    # Every journaled success must be backed by an effect applied under its intent's key.
    key_of = {
        e.payload["call_id"]: str(e.payload["key"])
        for e in trial.entries
        if e.kind is EntryKind.TOOL_INTENT
    }
    for e in trial.entries:
        if e.kind is EntryKind.TOOL_RESULT and e.payload.get("ok"):
            call_id = e.payload["call_id"]
            if per_key[key_of.get(call_id, "")] == 0:
                trial.lost_steps += 1
                trial.violate("lost_step", f"the result of {call_id} has no effect in the sink")


def _check_model_calls(trial: TrialResult, files: TrialFiles) -> None:
    calls = files.model_calls(trial.run_id)
    trial.model_calls = calls
    committed = {
        int(e.payload["turn"])
        for e in trial.entries[: trial.committed_before_resume]
        if e.kind is EntryKind.MODEL_RESPONSE
    }
    attempts = 2 if trial.crashed else 1
    for e in trial.entries:
        if e.kind is not EntryKind.MODEL_RESPONSE:
            continue
        turn = int(e.payload["turn"])
        allowed = 1 if turn in committed else attempts
        if calls[turn] == 0:
            trial.violate(
                "repeated_model_call", f"turn {turn} is journaled but was never asked for"
            )
        elif calls[turn] > allowed:
            trial.repeated_model_calls += calls[turn] - allowed
            trial.violate(
                "repeated_model_call",
                f"turn {turn} was asked for {calls[turn]} times"
                + (
                    " though its response was committed before the crash"
                    if turn in committed
                    else ""
                ),
            )


# -- a crash trial -------------------------------------------------------------------------------


def crash_trial(
    url: str,
    point: str,
    count: int,
    *,
    reference: Reference,
    directory: Path,
    kit: CrashKit | None = None,
    index: int = 0,
) -> TrialResult:
    """One trial: crash a child at the ``count``-th ``point``, resume in this process, check.

    Call it with no event loop running and no store open (the child is forked).
    """
    kit = kit or CrashKit()
    files = TrialFiles.create(directory)
    run_id = new_run_id()
    child = drive_in_child(url, kit, run_id, files, CrashAt(point, count))
    trial = resume_trial(
        url,
        run_id,
        child=child,
        reference=reference,
        files=files,
        kit=kit,
        point=point,
        count=count,
        index=index,
    )
    if not child.killed:
        trial.violate("child", f"the crash was not triggered: {child}")
    return trial
