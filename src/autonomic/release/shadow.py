"""Shadow mode: live runs of an agent mirrored to a candidate version, with side effects off.

The candidate gets the live run's task, tenant and metadata and runs for real - its own model,
its own policy, its own gates - but every tool it calls is a **shadow stub** with the same
contract:

* a **write** (any tool not in the candidate's ``read_only``, or not declared ``idempotent``)
  never executes: the stub answers with what the live run's journal recorded for the same tool
  and arguments (so the candidate sees the world the live run saw), or with a
  ``{"shadow": "suppressed"}`` marker when the live run never made that call;
* a **read** is served from the live run's journal the same way (``reads="journal"``, the
  default: no load on the systems read, and the candidate sees exactly what the live run saw);
  with ``reads="run"`` a read-only, idempotent tool the live run never called with these
  arguments runs for real.

Shadow runs live in a **separate store** (``Shadow`` refuses the live store): they never appear
among the live store's runs, KPIs, approvals or workers' claims, and a live worker can never
resume one with the live version's real tools. Each is marked ``metadata["shadow"] = {"of": live
run id, "version": candidate version}``, keeps the live run's tenant, and has the id
``shadow_<live run id>`` (mirroring twice is a no-op). A shadow run that stops for a human (its
gates asked for an approval) is cancelled with that reason: no one approves shadow work.

``ShadowHook`` mirrors from the live engine: its ``after_run`` only queues the ended run's id
(a bounded queue, dropped and counted when full), so the live run's steps pay nothing but that;
``Shadow.drain`` (or ``autonomic shadow mirror``) runs the mirrors elsewhere.
``compare``/``report`` put the pairs side by side per task type: output, path (the tool
sequence), steps, cost, latency (``autonomic shadow report``).
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal

from autonomic.core.canonical import canonical_json
from autonomic.core.entries import ModelTurn, ToolIntent, ToolResult
from autonomic.core.journal import Entry
from autonomic.core.run import Run, RunStatus
from autonomic.core.state import fold
from autonomic.engine.agent import Agent, AgentRegistry
from autonomic.engine.step import Hook
from autonomic.errors import ConfigError, InvalidInput, NotFound, ToolError
from autonomic.tools.contract import Tool, ToolContext

if TYPE_CHECKING:
    from autonomic.engine.executor import Engine, ModelResolver
    from autonomic.engine.step import StepProtocol
    from autonomic.ports.store import Store

__all__ = [
    "SUPPRESSED",
    "Shadow",
    "ShadowHook",
    "ShadowPair",
    "compare",
    "pairs",
    "report",
    "shadow_id",
]

log = logging.getLogger("autonomic.shadow")

Reads = Literal["journal", "run"]
SUPPRESSED = "suppressed"
"""The ``shadow`` field of a stub's answer for a write the live run never made."""
NOT_RECORDED = "not recorded"
"""The ``shadow`` field of a stub's answer for a read the live run never made (``reads="journal"``)."""
ENDED = (RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED)


def shadow_id(live_run_id: str) -> str:
    return f"shadow_{live_run_id}"


def executes(tool: Tool, agent: Agent) -> bool:
    """Whether a shadow may run ``tool`` for real: a declared read that is also idempotent."""
    return tool.name in agent.read_only and tool.idempotent


@dataclass
class _Answers:
    """What the live run's journal recorded, by (tool, canonical arguments), in call order."""

    results: dict[tuple[str, str], collections.deque[ToolResult]] = field(default_factory=dict)
    suppressed: int = 0
    served: int = 0
    executed: int = 0

    @classmethod
    def of(cls, entries: Sequence[Entry]) -> _Answers:
        intents: dict[str, ToolIntent] = {}
        answers = cls()
        for entry in entries:
            body = entry.body
            if isinstance(body, ToolIntent):
                intents[body.call_id] = body
            elif isinstance(body, ToolResult) and body.call_id in intents:
                key = (body.tool, canonical_json(intents[body.call_id].arguments))
                answers.results.setdefault(key, collections.deque()).append(body)
        return answers

    def take(self, tool: str, arguments: dict[str, Any]) -> ToolResult | None:
        queue = self.results.get((tool, canonical_json(arguments)))
        return queue.popleft() if queue else None


class Shadow:
    """Mirror live runs of ``candidate.name`` to ``candidate``, side effects off.

    Args:
        live_store: where the live runs are (read only: nothing is written there).
        shadow_store: where shadow runs go; must not be the live store.
        candidate: the version under test (same agent name as the live runs).
        models: builds the candidate's model from its spec (as for an ``Engine``).
        reads: ``journal`` (default) serves reads from the live run's journal; ``run`` runs a
            read-only, idempotent tool whose call the live run never made.
        engine_options: passed to the shadow's ``Engine`` (gates, runaway, ...).
    """

    def __init__(
        self,
        live_store: Store,
        shadow_store: Store,
        candidate: Agent,
        models: ModelResolver,
        *,
        reads: Reads = "journal",
        **engine_options: Any,
    ) -> None:
        if live_store is shadow_store or (
            getattr(live_store, "url", None) is not None
            and getattr(live_store, "url", None) == getattr(shadow_store, "url", None)
        ):
            raise ConfigError(
                "the shadow store is the live store: shadow runs would count as real work",
                hint="give shadow runs a database of their own (--shadow-db)",
            )
        if reads not in ("journal", "run"):
            raise InvalidInput(f"shadow reads must be 'journal' or 'run', got {reads!r}")
        from autonomic.engine.executor import Engine

        self.live_store = live_store
        self.shadow_store = shadow_store
        self.reads = reads
        self.candidate = candidate
        self._answers: dict[str, _Answers] = {}
        self.agent = candidate.with_tools([self._stub(t) for t in candidate.tools])
        self.engine: Engine = Engine(
            shadow_store, AgentRegistry([self.agent]), models, **engine_options
        )

    def _stub(self, tool: Tool) -> Tool:
        runs_for_real = self.reads == "run" and executes(tool, self.candidate)

        async def stub(ctx: ToolContext, **arguments: Any) -> Any:
            answers = self._answers.get(ctx.run_id)
            if answers is None:  # a shadow run this process did not start: never act
                raise ToolError(
                    f"shadow run {ctx.run_id}: no live journal to answer {tool.name} from",
                    hint="shadow runs are driven only by the Shadow that started them",
                )
            recorded = answers.take(tool.name, arguments)
            if recorded is not None:
                answers.served += 1
                if not recorded.ok:
                    error = recorded.error or {}
                    raise ToolError(str(error.get("message") or "the live call failed"))
                return recorded.output
            if runs_for_real:
                answers.executed += 1
                return await tool.invoke(arguments, ctx)
            if executes(tool, self.candidate) or tool.name in self.candidate.read_only:
                return {"shadow": NOT_RECORDED, "tool": tool.name}
            answers.suppressed += 1
            return {"shadow": SUPPRESSED, "tool": tool.name}

        # keyword arguments pass through ``**arguments``; ``ctx`` marks it as wanting context
        return replace(tool, fn=stub)

    async def mirror(self, live_run_id: str) -> Run | None:
        """Run the candidate on an ended live run's task; the shadow run (``None`` if the live
        run has not ended or is another agent's). Mirroring a run twice returns the first."""
        live = await self.live_store.get_run(live_run_id)
        if live.agent != self.candidate.name:
            raise InvalidInput(
                f"run {live_run_id} is of agent {live.agent}, the candidate is "
                f"{self.candidate.name}"
            )
        if live.status not in ENDED:
            return None
        sid = shadow_id(live.id)
        try:
            existing: Run | None = await self.shadow_store.get_run(sid)
        except NotFound:
            existing = None
        if existing is not None and existing.status.terminal:
            return existing
        entries = await self.live_store.load_journal(live.id)
        self._answers[sid] = _Answers.of(entries)
        try:
            if existing is not None:  # a shadow process died mid-run: finish it here
                claimed = await self.engine.claim(sid)
                if claimed is None:
                    return None  # another shadow process holds it
                return await self._settle(await self.engine.drive(claimed))
            metadata = {
                **live.metadata,
                "shadow": {"of": live.id, "version": self.candidate.version},
            }
            run = await self.engine.run(
                self.agent,
                live.input.get("task"),
                tenant=live.tenant,
                metadata=metadata,
                run_id=sid,
                max_turns=live.max_turns,
            )
            return await self._settle(run)
        finally:
            self._answers.pop(sid, None)

    async def _settle(self, run: Run) -> Run:
        """A shadow run that stopped for a human is cancelled: nobody acts on shadow work."""
        if run.status in (RunStatus.WAITING_FOR_HUMAN, RunStatus.SUSPENDED):
            return await self.engine.cancel(
                run.id,
                reason=f"shadow run stopped ({run.status_reason}): nobody acts on shadow work",
                by="shadow",
            )
        return run

    async def drain(self, queue: asyncio.Queue[str]) -> int:
        """Mirror every run id waiting in ``queue`` (from a ``ShadowHook``); how many."""
        done = 0
        while not queue.empty():
            run_id = queue.get_nowait()
            try:
                if await self.mirror(run_id) is not None:
                    done += 1
            finally:
                queue.task_done()
        return done

    async def aclose(self) -> None:
        await self.engine.aclose()


class ShadowHook(Hook):
    """On the live engine: queue the id of every run of ``agent`` that ended, for a ``Shadow``.

    Costs the live run one ``put_nowait`` after its last step; a full queue drops the id (counted
    in ``dropped``) rather than slow the live run down."""

    def __init__(self, agent: str, *, maxsize: int = 10_000) -> None:
        self.agent = agent
        self.queue: asyncio.Queue[str] = asyncio.Queue(maxsize)
        self.dropped = 0

    async def after_run(self, step: StepProtocol) -> None:
        run = step.session.run
        if run.agent != self.agent or run.status not in ENDED:
            return
        try:
            self.queue.put_nowait(run.id)
        except asyncio.QueueFull:
            self.dropped += 1


@dataclass(frozen=True, slots=True)
class ShadowPair:
    """A live run and its shadow side by side."""

    live_run: str
    shadow_run: str
    task_type: str
    tenant: str
    live_status: str
    shadow_status: str
    output_match: bool
    path_match: bool
    arguments_match: bool
    live_path: tuple[str, ...]
    shadow_path: tuple[str, ...]
    live_steps: int
    shadow_steps: int
    live_cost: float
    shadow_cost: float
    live_latency: float
    shadow_latency: float
    writes_suppressed: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _facts(
    run: Run, entries: Sequence[Entry]
) -> tuple[Any, list[tuple[str, str]], int, float, int]:
    output = fold(run.id, entries).output
    path: list[tuple[str, str]] = []
    steps = writes = 0
    cost = 0.0
    for entry in entries:
        body = entry.body
        if isinstance(body, ToolIntent):
            path.append((body.tool, canonical_json(body.arguments)))
            writes += not body.read_only
        elif isinstance(body, ModelTurn):
            steps += 1
            cost += float(body.call.cost or 0.0)
        elif isinstance(body, ToolResult):
            steps += 1
    return output, path, steps, cost, writes


def compare(
    live: Run,
    live_entries: Sequence[Entry],
    shadow: Run,
    shadow_entries: Sequence[Entry],
) -> ShadowPair:
    """The pair's differences, from the two journals."""
    out_a, path_a, steps_a, cost_a, _ = _facts(live, live_entries)
    out_b, path_b, steps_b, cost_b, writes = _facts(shadow, shadow_entries)
    return ShadowPair(
        live_run=live.id,
        shadow_run=shadow.id,
        task_type=str(live.metadata.get("task_type") or "default"),
        tenant=live.tenant,
        live_status=live.status.value,
        shadow_status=shadow.status.value,
        output_match=canonical_json(out_a) == canonical_json(out_b),
        path_match=[t for t, _ in path_a] == [t for t, _ in path_b],
        arguments_match=path_a == path_b,
        live_path=tuple(t for t, _ in path_a),
        shadow_path=tuple(t for t, _ in path_b),
        live_steps=steps_a,
        shadow_steps=steps_b,
        live_cost=cost_a,
        shadow_cost=cost_b,
        live_latency=max(0.0, live.updated_at - live.created_at),
        shadow_latency=max(0.0, shadow.updated_at - shadow.created_at),
        writes_suppressed=writes,
    )


async def pairs(
    live_store: Store,
    shadow_store: Store,
    *,
    agent: str | None = None,
    tenant: str | None = None,
    limit: int = 1_000,
) -> list[ShadowPair]:
    """The latest ``limit`` shadow runs (of ``agent``, of ``tenant``) with their live runs."""
    found: list[ShadowPair] = []
    before: tuple[float, str] | None = None
    while len(found) < limit:
        page = await shadow_store.page_runs(tenant=tenant, agent=agent, before=before, limit=200)
        if not page:
            break
        for shadow in page:
            mark = shadow.metadata.get("shadow")
            if not isinstance(mark, dict) or shadow.status not in ENDED:
                continue
            try:
                live = await live_store.get_run(str(mark.get("of")))
            except NotFound:
                continue
            found.append(
                compare(
                    live,
                    await live_store.load_journal(live.id),
                    shadow,
                    await shadow_store.load_journal(shadow.id),
                )
            )
        before = (page[-1].created_at, page[-1].id)
    return found[:limit]


def report(found: Sequence[ShadowPair]) -> list[dict[str, Any]]:
    """Per task type: pairs, output/path/arguments match rates, mean steps, cost and latency of
    each side, completions of each side, writes suppressed."""
    by_type: dict[str, list[ShadowPair]] = {}
    for pair in found:
        by_type.setdefault(pair.task_type, []).append(pair)
    rows = []
    for task_type in sorted(by_type):
        group = by_type[task_type]
        n = len(group)

        def mean(values: Sequence[float], n: int = n) -> float:
            return round(sum(values) / n, 6)

        rows.append(
            {
                "task_type": task_type,
                "pairs": n,
                "output_match": round(sum(p.output_match for p in group) / n, 4),
                "path_match": round(sum(p.path_match for p in group) / n, 4),
                "arguments_match": round(sum(p.arguments_match for p in group) / n, 4),
                "live_completed": sum(p.live_status == "COMPLETED" for p in group),
                "shadow_completed": sum(p.shadow_status == "COMPLETED" for p in group),
                "live_steps": mean([p.live_steps for p in group]),
                "shadow_steps": mean([p.shadow_steps for p in group]),
                "live_cost": mean([p.live_cost for p in group]),
                "shadow_cost": mean([p.shadow_cost for p in group]),
                "live_latency": mean([p.live_latency for p in group]),
                "shadow_latency": mean([p.shadow_latency for p in group]),
                "writes_suppressed": sum(p.writes_suppressed for p in group),
            }
        )
    return rows
