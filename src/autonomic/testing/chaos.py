"""Chaos for users' agents: tool failures, latency spikes, malformed or hallucinated model
output and worker crashes injected into any agent, by configuration, and the completion and
recovery rates measured against the product's targets (``autonomic chaos``).

The faults (``--fault NAME=VALUE``, each at most once):

* ``tool_error=P`` - a tool call fails before it runs with probability ``P`` (a retryable
  ``chaos_tool_error``: an idempotent tool with a retry policy retries it, any other call gets
  the error as its result and the model decides);
* ``latency=pQ:DURATION`` - the slowest ``100 - Q`` % of tool calls (``p99``: 1 %) wait
  ``DURATION`` (``2s``, ``150ms``) before running; ``latency=P:DURATION`` gives the share as a
  probability instead;
* ``model_garbage=P`` - a model answer is replaced, with probability ``P``, by a malformed one
  (tool-call arguments that are not JSON) or a hallucinated one (a call to a tool the agent does
  not have); the engine answers either with an error result and asks again;
* ``crash=P`` - a run's worker process is SIGKILLed, with probability ``P`` per run, at a
  seeded fault point of the step protocol (``engine/faults.py``); another worker takes the run
  over when its lease expires.

Every draw is a hash of the seed and the call's place (run, idempotency key, attempt), so the
same seed injects the same faults. The runs happen in a throwaway SQLite database driven by
worker subprocesses (``testing/chaos_worker.py``), replaced as they are killed; the trial stops
by itself when every run has stopped moving, or at its timeout (the runs left are cancelled and
count as not completed).

Measured (as ``observability/kpis.py`` defines them): **completion rate** - COMPLETED over all
runs; **recovery rate** - of the runs that met an injected fault, the share that COMPLETED. The
targets are the product's: at least 95 % and 90 %.
"""

from __future__ import annotations

import asyncio
import contextvars
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from autonomic.core.messages import Message, ModelResponse, Role, ToolCall, ToolSpec
from autonomic.core.run import RunStatus
from autonomic.engine.agent import Agent
from autonomic.engine.faults import STEP_POINTS
from autonomic.engine.step import Hook
from autonomic.errors import ConfigError, ToolError
from autonomic.ports.model import Model
from autonomic.tools.contract import Tool, ToolContext

__all__ = [
    "COMPLETION_TARGET",
    "RECOVERY_TARGET",
    "ChaosReport",
    "FaultPlan",
    "run_chaos",
]

COMPLETION_TARGET = 0.95
RECOVERY_TARGET = 0.90
FAULTS = ("tool_error", "latency", "model_garbage", "crash")
MAX_LATENCY = 60.0
MAX_RUNS = 10_000
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s)$")
_PERCENTILE = re.compile(r"^p(\d+(?:\.\d+)?)$")


class InjectedToolError(ToolError):
    """A tool failure chaos injected before the tool ran: transient by construction."""

    code = "chaos_tool_error"
    retryable = True


def _probability(name: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 <= value <= 1.0:
        raise ConfigError(
            f"--fault {name}={text}: the probability must be a number from 0 to 1",
            hint=f"e.g. --fault {name}=0.1",
        )
    return value


def _duration(spec: str, text: str) -> float:
    match = _DURATION.match(text.strip())
    if not match:
        raise ConfigError(f"--fault {spec}: {text!r} is not a duration", hint="write 2s or 150ms")
    seconds = float(match[1]) / (1000 if match[2] == "ms" else 1)
    if not 0 < seconds <= MAX_LATENCY:
        raise ConfigError(
            f"--fault {spec}: the delay must be above 0 and at most {MAX_LATENCY:.0f}s"
        )
    return seconds


@dataclass(frozen=True, slots=True)
class FaultPlan:
    """What to inject, and how often (see the module's docstring)."""

    tool_error: float = 0.0
    latency_share: float = 0.0
    latency_seconds: float = 0.0
    model_garbage: float = 0.0
    crash: float = 0.0

    @classmethod
    def parse(cls, specs: Sequence[str]) -> FaultPlan:
        """From ``--fault`` values; a clear one-line error for each mistake."""
        seen: dict[str, str] = {}
        for spec in specs:
            name, eq, value = spec.partition("=")
            name = name.strip()
            if not eq or not value.strip():
                raise ConfigError(
                    f"--fault {spec!r}: write NAME=VALUE",
                    hint="e.g. --fault tool_error=0.2 --fault latency=p99:2s",
                )
            if name not in FAULTS:
                raise ConfigError(
                    f"--fault {spec!r}: unknown fault {name!r}",
                    hint=f"use one of {', '.join(FAULTS)}",
                )
            if name in seen:
                raise ConfigError(f"--fault {name} given twice ({seen[name]} and {value})")
            seen[name] = value.strip()
        latency_share = latency_seconds = 0.0
        if "latency" in seen:
            spec = f"latency={seen['latency']}"
            share, colon, delay = seen["latency"].partition(":")
            if not colon:
                raise ConfigError(
                    f"--fault {spec}: write latency=pQ:DURATION or latency=P:DURATION",
                    hint="e.g. latency=p99:2s (1 % of tool calls wait 2 s)",
                )
            percentile = _PERCENTILE.match(share.strip())
            if percentile:
                q = float(percentile[1])
                if not 0 < q < 100:
                    raise ConfigError(f"--fault {spec}: the percentile must be between p0 and p100")
                latency_share = (100 - q) / 100
            else:
                latency_share = _probability("latency", share)
            latency_seconds = _duration(spec, delay)
        return cls(
            tool_error=_probability("tool_error", seen["tool_error"])
            if "tool_error" in seen
            else 0.0,
            latency_share=latency_share,
            latency_seconds=latency_seconds,
            model_garbage=(
                _probability("model_garbage", seen["model_garbage"])
                if "model_garbage" in seen
                else 0.0
            ),
            crash=_probability("crash", seen["crash"]) if "crash" in seen else 0.0,
        )

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def roll(seed: int, *parts: object) -> float:
    """A uniform draw in [0, 1) fixed by the seed and the place it is drawn for."""
    digest = hashlib.sha256(json.dumps([seed, *map(str, parts)]).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


# -- inside a worker ---------------------------------------------------------------------------


@dataclass
class RunChaos:
    """The run a worker is driving now, and its crash plan (from its metadata)."""

    run_id: str
    crash_point: str | None = None
    crash_count: int = 0
    seen: Counter[str] = field(default_factory=Counter)


CURRENT: contextvars.ContextVar[RunChaos | None] = contextvars.ContextVar(
    "autonomic_chaos_run", default=None
)


class ChaosHook(Hook):
    """Tells the faults which run this task drives (a context variable, so concurrent runs in
    one worker keep theirs); a run's crash plan arms only for its first owner (fence 1): the
    worker that takes it over after the crash is there to recover it."""

    async def around_run(self, step: Any, drive: Any) -> None:
        run = step.session.run
        plan = (run.metadata.get("chaos") or {}).get("crash") or {}
        first = step.session.fence == 1
        token = CURRENT.set(
            RunChaos(
                run.id,
                crash_point=plan.get("point") if first else None,
                crash_count=int(plan.get("count") or 0),
            )
        )
        try:
            await drive()
        finally:
            CURRENT.reset(token)


class CrashFaults:
    """The engine's fault hook in a chaos worker: SIGKILL at the current run's planned point."""

    def at(self, point: str) -> None:
        current = CURRENT.get()
        if current is None or current.crash_point != point:
            return
        current.seen[point] += 1
        if current.seen[point] == current.crash_count:
            Injections.note(current.run_id, "crash")
            os.kill(os.getpid(), signal.SIGKILL)


class Injections:
    """Where workers note what they injected (a JSON-lines file, one ``O_APPEND`` write each, so
    a line written before a SIGKILL stays)."""

    path: Path | None = None

    @classmethod
    def note(cls, run_id: str, kind: str) -> None:
        if cls.path is None:
            return
        line = (json.dumps({"run": run_id, "fault": kind}) + "\n").encode()
        fd = os.open(cls.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)


class ChaosTools:
    """Wraps an agent's tools: a latency spike, then maybe an injected failure, then the tool."""

    def __init__(self, plan: FaultPlan, seed: int) -> None:
        self.plan = plan
        self.seed = seed
        self.attempts: Counter[str] = Counter()

    def agent(self, agent: Agent) -> Agent:
        return agent.with_tools([self.wrap(t) for t in agent.tools])

    def wrap(self, tool: Tool) -> Tool:
        plan, seed = self.plan, self.seed

        async def chaotic(ctx: ToolContext, **arguments: Any) -> Any:
            self.attempts[ctx.idempotency_key] += 1
            place = (ctx.run_id, ctx.idempotency_key, self.attempts[ctx.idempotency_key])
            if plan.latency_share and roll(seed, "latency", *place) < plan.latency_share:
                Injections.note(ctx.run_id, "latency")
                await asyncio.sleep(plan.latency_seconds)
            if plan.tool_error and roll(seed, "tool_error", *place) < plan.tool_error:
                Injections.note(ctx.run_id, "tool_error")
                raise InjectedToolError(f"chaos: injected failure of {tool.name} (transient)")
            return await tool.invoke(arguments, ctx)

        return replace(tool, fn=chaotic)


class ChaosModel:
    """A model whose answers are, now and then, malformed or hallucinated."""

    def __init__(self, inner: Model, plan: FaultPlan, seed: int) -> None:
        self.inner = inner
        self.plan = plan
        self.seed = seed
        self.calls: Counter[tuple[str, int]] = Counter()

    @property
    def name(self) -> str:
        return self.inner.name

    async def complete(
        self, messages: Sequence[Message], tools: Sequence[ToolSpec]
    ) -> ModelResponse:
        current = CURRENT.get()
        run_id = current.run_id if current is not None else "?"
        turn = sum(1 for m in messages if m.role is Role.ASSISTANT)
        self.calls[(run_id, turn)] += 1
        place = (run_id, turn, self.calls[(run_id, turn)])
        if (
            self.plan.model_garbage
            and roll(self.seed, "model_garbage", *place) < self.plan.model_garbage
        ):
            Injections.note(run_id, "model_garbage")
            if tools and roll(self.seed, "garbage_kind", *place) < 0.5:
                call = ToolCall(f"chaos{turn}", tools[0].name, '{"unterminated": ')
            else:
                call = ToolCall(f"chaos{turn}", "hallucinated_tool", "{}")
            return ModelResponse(content="", tool_calls=(call,), model=self.name)
        return await self.inner.complete(messages, tools)


# -- the trial ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChaosReport:
    """What ``autonomic chaos`` prints."""

    runs: int
    plan: FaultPlan
    seed: int
    statuses: dict[str, int]
    completed: int
    faulted: int
    recovered: int
    injected: dict[str, int]
    worker_kills: int
    timed_out: bool
    completion_rate: float
    recovery_rate: float | None

    @property
    def ok(self) -> bool:
        return self.completion_rate >= COMPLETION_TARGET and (
            self.recovery_rate is None or self.recovery_rate >= RECOVERY_TARGET
        )

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["plan"] = self.plan.to_dict()
        out["targets"] = {"completion": COMPLETION_TARGET, "recovery": RECOVERY_TARGET}
        out["ok"] = self.ok
        return out


def _crash_plan(seed: int, index: int, probability: float) -> dict[str, Any] | None:
    if not probability or roll(seed, "crash", index) >= probability:
        return None
    points = STEP_POINTS
    point = points[int(roll(seed, "crash_point", index) * len(points))]
    return {"point": point, "count": 1 + int(roll(seed, "crash_count", index) * 2)}


async def run_chaos(
    agent_path: str,
    plan: FaultPlan,
    *,
    tasks: Sequence[str],
    runs: int = 100,
    seed: int = 0,
    workers: int = 2,
    limit_s: float = 600.0,
    lease_ttl: float = 2.0,
    directory: Path | None = None,
) -> ChaosReport:
    """Run ``runs`` runs of the agent at ``agent_path`` (``module:attribute``) under ``plan``,
    the tasks taken in turn from ``tasks``; return the report. Bounded by ``limit_s`` seconds."""
    from autonomic.bootstrap import build_model, build_store, load_object
    from autonomic.engine.agent import AgentRegistry
    from autonomic.engine.executor import Engine

    if not 1 <= runs <= MAX_RUNS:
        raise ConfigError(f"--runs must be 1 to {MAX_RUNS}, got {runs}")
    if not 1 <= workers <= 16:
        raise ConfigError(f"--workers must be 1 to 16, got {workers}")
    if not tasks:
        raise ConfigError("no tasks to run", hint="give --task TEXT (repeatable)")
    agent = load_object(agent_path)
    if not isinstance(agent, Agent):
        raise ConfigError(f"{agent_path} is not an Agent", hint="point at an autonomic Agent")
    with tempfile.TemporaryDirectory(prefix="autonomic-chaos-") as tmp:
        where = directory or Path(tmp)
        db = f"sqlite:///{where}/chaos.db"
        store = build_store(db)
        await store.migrate()
        engine = Engine(store, AgentRegistry([agent]), build_model)
        try:
            ids = []
            for i in range(runs):
                meta: dict[str, Any] = {}
                crash = _crash_plan(seed, i, plan.crash)
                if crash is not None:
                    meta["chaos"] = {"crash": crash}
                # The run id is derived from the seed and the run's index: every draw is keyed
                # by it, so the same seed injects the same faults in every trial.
                run_id = "run_" + hashlib.sha256(f"chaos:{seed}:{i}".encode()).hexdigest()[:32]
                run = await engine.start(agent, tasks[i % len(tasks)], metadata=meta, run_id=run_id)
                ids.append(run.id)
            config = where / "chaos.json"
            config.write_text(
                json.dumps(
                    {
                        "db": db,
                        "agent": agent_path,
                        "plan": plan.to_dict(),
                        "seed": seed,
                        "lease_ttl": lease_ttl,
                        "stop": str(where / "stop"),
                        "injections": str(where / "injections.jsonl"),
                        "cwd": os.getcwd(),
                    }
                )
            )
            kills, timed_out = await _drive(store, ids, config, workers, limit_s)
            if timed_out:
                for run_id in ids:
                    run = await store.get_run(run_id)
                    if not run.status.terminal:
                        await engine.cancel(run_id, reason="chaos trial timed out", by="chaos")
            return await _report(
                store, ids, plan, seed, where / "injections.jsonl", kills, timed_out
            )
        finally:
            await engine.aclose()
            await store.close()


_LOGS: dict[int, Path] = {}
"""Each worker's stderr file, by pid (a file, not a pipe: a chatty worker must never block)."""


def _spawn(config: Path) -> subprocess.Popen[bytes]:
    log = config.parent / f"worker-{len(_LOGS)}-{time.monotonic_ns()}.log"
    with log.open("wb") as err:
        proc = subprocess.Popen(  # noqa: S603 - this interpreter, our module, our file
            [sys.executable, "-m", "autonomic.testing.chaos_worker", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
            start_new_session=True,
        )
    _LOGS[proc.pid] = log
    return proc


def _failed(proc: subprocess.Popen[bytes]) -> ConfigError:
    """A worker that died of something other than chaos's SIGKILL: its last line, as the error
    (restarting it would only fail again until the timeout)."""
    log = _LOGS.get(proc.pid)
    err = log.read_text(errors="replace") if log is not None and log.exists() else ""
    lines = [line for line in err.splitlines() if line.strip()]
    return ConfigError(
        f"a chaos worker failed (exit {proc.returncode}): "
        + (lines[-1] if lines else "no message"),
        hint="run the agent with `autonomic run` first to see it work without faults",
    )


MOVING = (RunStatus.PENDING, RunStatus.RUNNING)


def _stop(config: Path) -> None:
    """Tell the workers to finish: they exit once no run is left to claim."""
    Path(json.loads(config.read_text())["stop"]).touch()


def _notes(injections: Path) -> tuple[dict[str, set[str]], Counter[str]]:
    """The faults the workers noted: per run, and counted per kind."""
    notes: dict[str, set[str]] = {}
    counts: Counter[str] = Counter()
    if injections.exists():
        for line in injections.read_text().splitlines():
            if line.strip():
                note = json.loads(line)
                notes.setdefault(note["run"], set()).add(note["fault"])
                counts[note["fault"]] += 1
    return notes, counts


async def _drive(
    store: Any, ids: list[str], config: Path, workers: int, limit_s: float
) -> tuple[int, bool]:
    """Keep ``workers`` workers alive (a killed one is replaced) until no run moves; the kills."""
    procs = [_spawn(config) for _ in range(workers)]
    kills = 0
    deadline = time.monotonic() + limit_s
    timed_out = False
    try:
        while True:
            for i, proc in enumerate(procs):
                code = proc.poll()
                if code is not None:
                    if code != -signal.SIGKILL:
                        raise _failed(proc)
                    kills += 1
                    procs[i] = _spawn(config)
            moving = 0
            for run_id in ids:
                if (await store.get_run(run_id)).status in MOVING:
                    moving += 1
                    break
            if not moving:
                return kills, False
            if time.monotonic() > deadline:
                timed_out = True
                return kills, True
            await asyncio.sleep(0.1)  # a monitor's poll, not a test's synchronisation
    finally:
        _stop(config)
        for proc in procs:
            try:
                proc.wait(timeout=10 if not timed_out else 1)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


async def _report(
    store: Any,
    ids: list[str],
    plan: FaultPlan,
    seed: int,
    injections: Path,
    kills: int,
    timed_out: bool,
) -> ChaosReport:
    notes, counts = _notes(injections)
    statuses: Counter[str] = Counter()
    completed = faulted = recovered = 0
    for run_id in ids:
        run = await store.get_run(run_id)
        statuses[run.status.value] += 1
        done = run.status is RunStatus.COMPLETED
        completed += done
        if notes.get(run_id):
            faulted += 1
            recovered += done
    return ChaosReport(
        runs=len(ids),
        plan=plan,
        seed=seed,
        statuses=dict(statuses),
        completed=completed,
        faulted=faulted,
        recovered=recovered,
        injected=dict(counts),
        worker_kills=kills,
        timed_out=timed_out,
        completion_rate=round(completed / len(ids), 4),
        recovery_rate=round(recovered / faulted, 4) if faulted else None,
    )
