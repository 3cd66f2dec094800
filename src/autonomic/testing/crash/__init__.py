"""A crash harness: kill a worker at a random point of a run, resume it, and prove nothing broke.

Each trial forks a child process that starts a run of a small test agent and drives it with
``CrashAt`` armed at a seeded random fault point (``before_commit``, ``after_commit``,
``after_effect`` or ``step_done``) and occurrence. The child is SIGKILLed there; the parent then
resumes the run with a fresh ``Engine`` (the dead child's lease is taken over at once, see
``owner_is_dead``) and checks the invariants against an uncrashed reference run:

* the run ends ``COMPLETED``, or ``WAITING_FOR_HUMAN`` as *in doubt* with the intent as evidence;
* no step is lost: a completed run's tool results equal the reference's, in order; an in-doubt
  run's are a prefix of them, and the in-doubt call is the next reference step;
* no effect is duplicated: the effect sink shows no key applied twice and no operation applied
  twice (under any key);
* no model call is repeated for a turn whose response had been committed before the crash.

The test agent has two tools that write to an *effect sink*, an append-only file of JSON lines
written with ``O_APPEND`` (one ``os.write`` per call, so what a tool did survives SIGKILL):
``keyed_write`` is idempotent and dedups on the idempotency key like a real idempotent API (it
always logs an ``attempt`` and logs ``applied`` only the first time it sees a key);
``blind_write`` is not idempotent and applies every call. The model is a deterministic, stateless
function of the conversation that follows ``PLAN`` and logs one line per call (run id, turn), so the
model calls per turn can be counted afterwards.

Use ``run_trials(url, n, seed)`` for a batch (``python -m autonomic.testing.crash --db URL -n
1000`` prints its report as JSON), or the pieces (``CrashKit``, ``fork_child``, ``drive_in_child``,
``reference_run``, ``crash_trial``) for focused tests. POSIX only: children are made with ``fork``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shutil
import signal
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autonomic.adapters.model.scripted import FunctionModel, assistant_turn
from autonomic.bootstrap import build_store
from autonomic.core.canonical import canonical_json, digest
from autonomic.core.journal import GENESIS_HASH, Entry, EntryKind, chain_hash
from autonomic.core.messages import Message, ModelResponse, Role, ToolCall, ToolSpec
from autonomic.core.run import Run, RunStatus
from autonomic.engine.agent import Agent, AgentRegistry
from autonomic.engine.executor import Engine, new_run_id
from autonomic.engine.faults import STEP_POINTS, CrashAt, Faults
from autonomic.errors import ModelError
from autonomic.ports.model import Model
from autonomic.ports.store import Store
from autonomic.tools.contract import Tool, ToolContext, tool

KEYED = "keyed_write"
"""The idempotent tool: applies an operation once per idempotency key."""
BLIND = "blind_write"
"""The non-idempotent tool: applies every call."""
AGENT_NAME = "crash-harness"
MODEL_SPEC = "function:crash-harness"
CRASH_POINTS: tuple[str, ...] = STEP_POINTS
"""Where trials crash: every fault point of the step protocol."""
IN_DOUBT = "in doubt"


@dataclass(frozen=True, slots=True)
class Step:
    """One tool call of the plan: which tool, which operation (unique in the plan), what value."""

    tool: str
    op: str
    value: int


PLAN: tuple[tuple[Step, ...], ...] = (
    (Step(KEYED, "k1", 3),),
    (Step(BLIND, "b1", 5),),
    (Step(KEYED, "k2", 7), Step(KEYED, "k3", 11)),
    (Step(BLIND, "b2", 13), Step(KEYED, "k4", 17)),
    (Step(KEYED, "k5", 19), Step(BLIND, "b3", 23)),
    (Step(KEYED, "k6", 29),),
    (Step(BLIND, "b4", 31),),
    (Step(KEYED, "k7", 37), Step(KEYED, "k8", 41)),
)
"""The default plan: 12 tool steps in 8 turns (one tool call per turn, or two, mixed both ways),
then a final answer. Operations are unique so a duplicated effect shows whatever key it used."""


# -- files ---------------------------------------------------------------------------------------


def append_jsonl(path: Path, *records: dict[str, Any]) -> None:
    """Append ``records`` as JSON lines with one ``write`` on an ``O_APPEND`` descriptor.

    The bytes are in the kernel when this returns, so they survive a SIGKILL of the writer.
    """
    data = "".join(canonical_json(r) + "\n" for r in records).encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The records of a JSON-lines file; ``[]`` if it does not exist yet."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@dataclass(frozen=True, slots=True)
class TrialFiles:
    """Where one run's side channels live: the effect sink and the model-call log."""

    directory: Path

    @property
    def sink(self) -> Path:
        return self.directory / "effects.jsonl"

    @property
    def model_log(self) -> Path:
        return self.directory / "model-calls.jsonl"

    @classmethod
    def create(cls, directory: Path) -> TrialFiles:
        directory.mkdir(parents=True, exist_ok=True)
        return cls(directory)

    def effects(self) -> list[dict[str, Any]]:
        """The sink's records: ``event`` is ``attempt`` (every call) or ``applied`` (an effect)."""
        return read_jsonl(self.sink)

    def model_calls(self, run_id: str) -> Counter[int]:
        """How many times the model was asked for each turn of ``run_id``."""
        return Counter(int(r["turn"]) for r in read_jsonl(self.model_log) if r["run_id"] == run_id)


# -- the test agent ------------------------------------------------------------------------------


def _sink_of(ctx: ToolContext) -> Path:
    return Path(str(ctx.metadata["sink"]))


def _record(ctx: ToolContext, tool_name: str, op: str, value: int, event: str) -> dict[str, Any]:
    return {
        "event": event,
        "tool": tool_name,
        "op": op,
        "value": value,
        "key": ctx.idempotency_key,
        "run_id": ctx.run_id,
        "call_id": ctx.call_id,
        "pid": os.getpid(),
    }


async def _keyed_write(op: str, value: int, ctx: ToolContext) -> dict[str, Any]:
    """Apply an operation; safe to repeat: an idempotency key already seen applies nothing."""
    sink = _sink_of(ctx)
    seen = any(
        r["event"] == "applied" and r["key"] == ctx.idempotency_key for r in read_jsonl(sink)
    )
    records = [_record(ctx, KEYED, op, value, "attempt")]
    if not seen:
        records.append(_record(ctx, KEYED, op, value, "applied"))
    append_jsonl(sink, *records)
    return {"op": op, "value": value}


async def _blind_write(op: str, value: int, ctx: ToolContext) -> dict[str, Any]:
    """Apply an operation; every call applies it again (not idempotent)."""
    append_jsonl(
        _sink_of(ctx),
        _record(ctx, BLIND, op, value, "attempt"),
        _record(ctx, BLIND, op, value, "applied"),
    )
    return {"op": op, "value": value}


keyed_write: Tool = tool(name=KEYED, idempotent=True)(_keyed_write)
blind_write: Tool = tool(name=BLIND, idempotent=False)(_blind_write)


def _task_of(messages: Sequence[Message]) -> dict[str, Any]:
    for message in messages:
        if message.role is Role.USER and message.content:
            task: dict[str, Any] = json.loads(message.content)
            return task
    raise ModelError("the crash harness model found no task in the conversation")


def plan_policy(
    plan: Sequence[Sequence[Step]],
) -> Callable[[Sequence[Message], Sequence[ToolSpec]], ModelResponse]:
    """A stateless model policy: the turn comes from the conversation, the calls from ``plan``.

    Every call is logged (run id, turn) to the ``model_log`` named in the task.
    """

    def decide(messages: Sequence[Message], tools: Sequence[ToolSpec]) -> ModelResponse:
        task = _task_of(messages)
        turn = assistant_turn(messages) + 1
        append_jsonl(
            Path(task["model_log"]), {"run_id": task["run_id"], "turn": turn, "pid": os.getpid()}
        )
        if turn <= len(plan):
            calls = tuple(
                ToolCall(
                    id=f"call_{turn}_{i}",
                    name=step.tool,
                    arguments=canonical_json({"op": step.op, "value": step.value}),
                )
                for i, step in enumerate(plan[turn - 1], start=1)
            )
            return ModelResponse(content=None, tool_calls=calls)
        if turn == len(plan) + 1:
            values = [_observed_value(m) for m in messages if m.role is Role.TOOL]
            return ModelResponse(
                content=f"applied {len(values)} operations, total {sum(values)}", tool_calls=()
            )
        raise ModelError(f"the plan has {len(plan) + 1} turns and turn {turn} was asked for")

    return decide


def _observed_value(message: Message) -> int:
    try:
        output = json.loads(message.content or "")
    except json.JSONDecodeError:
        return 0
    return int(output.get("value", 0)) if isinstance(output, dict) else 0


@dataclass(frozen=True)
class CrashKit:
    """The test agent, its model and helpers to start and drive its runs."""

    plan: tuple[tuple[Step, ...], ...] = PLAN
    agent: Agent = field(init=False)
    model: Model = field(init=False)

    def __post_init__(self) -> None:
        agent = Agent(
            name=AGENT_NAME,
            instructions="Apply every operation of the plan, then report the total.",
            tools=(keyed_write, blind_write),
            model=MODEL_SPEC,
            max_turns=len(self.plan) + 3,
        )
        object.__setattr__(self, "agent", agent)
        object.__setattr__(self, "model", FunctionModel(plan_policy(self.plan), name=MODEL_SPEC))

    @property
    def steps(self) -> list[Step]:
        """The plan's tool steps in execution order."""
        return [step for turn in self.plan for step in turn]

    def resolve(self, spec: str) -> Model:
        return self.model

    def engine(self, store: Store, **options: Any) -> Engine:
        """An ``Engine`` on ``store`` that knows the test agent (``options`` go to ``Engine``)."""
        return Engine(store, AgentRegistry([self.agent]), self.resolve, **options)

    async def start(self, engine: Engine, run_id: str, files: TrialFiles) -> Run:
        """Create the run ``run_id``, wired to ``files``."""
        task = {"goal": "apply the plan", "run_id": run_id, "model_log": str(files.model_log)}
        return await engine.start(
            AGENT_NAME, task, run_id=run_id, metadata={"sink": str(files.sink)}
        )


# -- child processes -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ChildExit:
    """How a child process ended (or stopped)."""

    pid: int
    code: int | None = None
    signal: int | None = None
    stopped: bool = False

    @property
    def killed(self) -> bool:
        return self.signal == signal.SIGKILL

    def __str__(self) -> str:
        if self.stopped:
            return f"pid {self.pid} stopped"
        if self.signal is not None:
            return f"pid {self.pid} killed by {signal.Signals(self.signal).name}"
        return f"pid {self.pid} exited with {self.code}"


def fork_child(body: Callable[[], int]) -> int:
    """Run ``body`` in a forked child and return the child's pid.

    The child leaves with ``os._exit(body())`` (70 and a traceback on stderr if ``body`` raises): it
    never returns into the caller's stack and runs no finalizers, so objects it inherited (open
    database connections of the parent, say) are left alone. Fork with no event loop running and
    no store open, and build stores inside ``body``. (Python 3.12+ warns when a process that runs
    threads forks; ``asyncio.run`` stops its worker threads when it returns, so fork after it.)
    """
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid != 0:
        return pid
    code = 70
    try:
        code = body()
    except BaseException:
        with contextlib.suppress(BaseException):
            os.write(2, traceback.format_exc().encode())
    finally:
        os._exit(code)


def wait_child(pid: int, *, until_stopped: bool = False) -> ChildExit:
    """Block until ``pid`` exits (or, with ``until_stopped``, stops or exits); no polling."""
    _, status = os.waitpid(pid, os.WUNTRACED if until_stopped else 0)
    if os.WIFSTOPPED(status):
        return ChildExit(pid, stopped=True, signal=os.WSTOPSIG(status))
    if os.WIFSIGNALED(status):
        return ChildExit(pid, signal=os.WTERMSIG(status))
    return ChildExit(pid, code=os.WEXITSTATUS(status))


def spawn_driver(
    url: str,
    kit: CrashKit,
    run_id: str,
    files: TrialFiles,
    faults: Faults,
    **engine_options: Any,
) -> int:
    """Fork a child that starts ``run_id`` and drives it with ``faults`` armed; return its pid.

    The child builds its own store from ``url`` (connections are never shared across ``fork``)
    and exits 0 if the run stopped without the faults ending the process.
    """

    def body() -> int:
        async def go() -> None:
            store = build_store(url)
            try:
                engine = kit.engine(store, faults=faults, **engine_options)
                await kit.start(engine, run_id, files)
                await engine.run_to_end(run_id)
            finally:
                await store.close()

        asyncio.run(go())
        return 0

    return fork_child(body)


def drive_in_child(
    url: str, kit: CrashKit, run_id: str, files: TrialFiles, faults: Faults
) -> ChildExit:
    """``spawn_driver`` and wait for the child to end."""
    return wait_child(spawn_driver(url, kit, run_id, files, faults))


class SimulatedCrash(BaseException):
    """Stands for SIGKILL inside one process: nothing after the fault point runs, nothing the
    engine could catch as an error, and the run stays RUNNING and leased, as a dead worker leaves
    it."""


class RaiseAt(CrashAt):
    """``CrashAt`` that raises ``SimulatedCrash`` instead of SIGKILL: for tests that need only the
    journal a dead worker leaves, without a child process."""

    def fire(self) -> None:
        raise SimulatedCrash(f"{self.point} #{self.count}")


class StopAt:
    """A ``Faults`` that SIGSTOPs this process the ``count``-th time ``point`` is reached.

    The parent sees the stop with ``wait_child(pid, until_stopped=True)``, can let another worker
    take the run over, then SIGCONT the child: a paused worker that wakes up as a zombie. With
    ``events``, the child logs ``stopping`` / ``continued`` and every later point it reaches.
    """

    def __init__(self, point: str, count: int, *, events: Path | None = None) -> None:
        self.point = point
        self.count = count
        self.events = events
        self.continued = False
        self._seen: Counter[str] = Counter()

    def _log(self, event: str, **extra: Any) -> None:
        if self.events is not None:
            append_jsonl(self.events, {"event": event, "pid": os.getpid(), **extra})

    def at(self, point: str) -> None:
        self._seen[point] += 1
        if self.continued:
            self._log("point", point=point)
        if point == self.point and self._seen[point] == self.count:
            self._log("stopping", point=point, count=self.count)
            os.kill(os.getpid(), signal.SIGSTOP)
            self.continued = True
            self._log("continued")


# -- reference and checks ------------------------------------------------------------------------

StepResult = tuple[str, str, bool, str]
"""A tool result as compared across runs: call id, tool, ok, canonical output (or error code)."""


def step_results(entries: Sequence[Entry]) -> list[StepResult]:
    """The journal's tool results in order, without timings and replay flags."""
    results: list[StepResult] = []
    for e in entries:
        if e.kind is EntryKind.TOOL_RESULT:
            p = e.payload
            detail = p.get("output") if p.get("ok") else (p.get("error") or {}).get("code")
            results.append(
                (str(p["call_id"]), str(p["tool"]), bool(p.get("ok")), canonical_json(detail))
            )
    return results


def kinds(entries: Sequence[Entry], *, without_recovery: bool = True) -> list[str]:
    """The kinds of ``entries`` in order (recovery entries left out by default)."""
    return [
        e.kind.value for e in entries if not (without_recovery and e.kind is EntryKind.RECOVERY)
    ]


def chain_problems(entries: Sequence[Entry]) -> list[str]:
    """What is wrong with the journal's sequence numbers and hash chain (``[]`` if nothing)."""
    problems: list[str] = []
    prev = GENESIS_HASH
    for i, e in enumerate(entries, start=1):
        if e.seq != i:
            problems.append(f"entry {i} has seq {e.seq}")
        expected = chain_hash(prev, e.seq, e.kind.value, digest(canonical_json(e.payload).encode()))
        if e.hash != expected:
            problems.append(f"entry {e.seq} breaks the hash chain")
        prev = e.hash
    return problems


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


# -- trials --------------------------------------------------------------------------------------


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
        return not self.failures and self.completed + self.in_doubt == self.trials

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
    return report


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
