"""The planning phase: before its first turn, a run gets a plan - from the plan cache, or from one
call to the agent's (usually small) planning model - and the acting model follows it.

Why a separate phase: most agent tasks in a fleet are the same few kinds of request with other
values. Planning the *kind* once and reusing the plan saves a model call per run, and planning on a
small model while a large one acts saves again on the runs that do plan. So the planner is given
the task's *pattern* (values replaced by placeholders, see ``gateway.plan_cache.task_pattern``),
never the task itself: its plan holds no request's values and is safe to reuse for the next
request of the same kind, by the same agent version, in the same tenant.

The step protocol holds: the plan is a journaled ``plan`` entry (where it came from, the steps,
the call's usage, provider and cost), and the fold appends it to the system prompt. A resumed or
replayed run folds the same prompt without asking the cache or the planner again. A crash before
the entry is committed repeats the lookup or the call - neither has a side effect.

**A plan may be a graph** (Plan-and-Solve as a dependency graph): the planner answers steps with
ids, the tool each uses and the steps each needs first (``GRAPH_PLANNING_INSTRUCTIONS``). The
graph is validated by ``core/graph.py`` against the agent's tools (a cycle, an unknown tool, a
step that waits for a missing one: rejected with the reason, the run goes on unplanned); the
``plan`` entry keeps the graph, and the prompt shows which steps are independent so the model
calls their tools together in one turn. A flat list is a chain and works as before.

**Tree-of-Thoughts** (``Planning(candidates=N)``): N candidate plans are generated, each
committed as a ``plan.candidate`` entry; each usable one is scored (a Python function, or a model)
and its ``plan.score`` committed; then the best (ties: the first) is committed as the ``plan``.
A run resumed anywhere in between folds what is journaled and never generates or scores a
candidate again; the choice is a pure function of the journaled scores.

The plan is model output, so it is untrusted: it must be a short list of short steps, and a plan
the injection screen flags is journaled as rejected and never cached. Planning is an
optimisation: a planner that fails (after the gateway's retries) or answers nonsense leaves the run
unplanned, with the reason journaled - only a budget the planning call would pass stops the run,
like any model call.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from autonomic.core.entries import ModelCall, PlanCandidate, PlanOutcome, PlanScore
from autonomic.core.graph import Signature, parse_graph, validate
from autonomic.core.messages import Message, ModelResponse, Role, ToolSpec
from autonomic.core.run import RunStatus
from autonomic.engine.agent import (
    GRAPH_PLANNING_INSTRUCTIONS,
    PLANNING_INSTRUCTIONS,
    SCORING_INSTRUCTIONS,
    Agent,
    Planning,
)
from autonomic.engine.hooks import exact_estimate, suspend_for_budget
from autonomic.engine.step import Hook, StepProtocol
from autonomic.errors import GraphInvalid, ModelError
from autonomic.gateway.plan_cache import PlanCache, plan_key, task_pattern
from autonomic.governance.injection import screen
from autonomic.governance.provenance import Provenance, Source
from autonomic.governance.runaway.model_budget import ModelBudget
from autonomic.ports.model import ManagedModel, Model

__all__ = [
    "GRAPH_PLANNING_INSTRUCTIONS",
    "PLANNING_INSTRUCTIONS",
    "SCORING_INSTRUCTIONS",
    "PlanReading",
    "Planning",
    "PlanningHook",
    "check_plan",
    "check_steps",
    "parse_plan",
    "read_plan",
]

log = logging.getLogger(__name__)

MAX_STEP_CHARS = 300
MAX_PATTERN_CHARS = 2000
"""Longer tasks are planned from their first characters (and keyed by the whole pattern)."""


def parse_plan(content: str | None, max_steps: int) -> tuple[list[str], str | None]:
    """The steps of a planner's answer, or why it is not a usable plan.

    Accepts ``{"steps": [...]}`` or a bare JSON list (inside a code fence or not), and falls back
    to numbered or bulleted lines - small models drift from the format."""
    text = (content or "").strip()
    if not text:
        return [], "the planner answered with no text"
    fenced = re.fullmatch(r"```(?:json)?\s*(.*?)\s*```", text, re.DOTALL)
    if fenced:
        text = fenced.group(1)
    raw: Any
    try:
        raw = json.loads(text)
    except json.JSONDecodeError:
        raw = [
            m.group(1) for m in re.finditer(r"^\s*(?:\d+[.)]|[-*])\s+(.+?)\s*$", text, re.MULTILINE)
        ]
        if not raw:
            return [], "the planner's answer is neither JSON nor a numbered list"
    return check_steps(raw.get("steps") if isinstance(raw, dict) else raw, max_steps)


def check_steps(raw: Any, max_steps: int) -> tuple[list[str], str | None]:
    """``raw`` as plan steps, or why not (also applied to what the cache returns: shared state)."""
    if not isinstance(raw, list) or not raw:
        return [], 'a plan is a non-empty list of steps: {"steps": ["...", ...]}'
    if len(raw) > max_steps:
        return [], f"the plan has {len(raw)} steps, more than the {max_steps} allowed"
    steps: list[str] = []
    for i, step in enumerate(raw, start=1):
        if not isinstance(step, str) or not step.strip():
            return [], f"step {i} is not a non-empty string"
        if len(step) > MAX_STEP_CHARS:
            return [], f"step {i} is longer than {MAX_STEP_CHARS} characters"
        steps.append(" ".join(step.split()))
    screened = screen("\n".join(steps), Provenance(Source.DOCUMENT, "plan"))
    if screened.tainted:
        codes = ", ".join(sorted({f.code for f in screened.flags}))
        return [], f"the injection screen flagged the plan ({codes})"
    return steps, None


class PlanReading(NamedTuple):
    """A planner's answer read: the steps in order, the graph when it is one, or the problem."""

    steps: tuple[str, ...] = ()
    graph: dict[str, Any] | None = None
    problem: str | None = None


def _json(content: str | None) -> tuple[Any, str | None]:
    text = (content or "").strip()
    if not text:
        return None, "the planner answered with no text"
    fenced = re.fullmatch(r"```(?:json)?\s*(.*?)\s*```", text, re.DOTALL)
    if fenced:
        text = fenced.group(1)
    try:
        return json.loads(text), None
    except json.JSONDecodeError:
        return None, None


def read_plan(content: str | None, max_steps: int, tools: Sequence[ToolSpec]) -> PlanReading:
    """A planner's answer as a plan: a graph of steps (objects with ids) or a list of steps
    (a chain; also numbered lines), checked; or why it is not a usable plan."""
    raw, problem = _json(content)
    if problem is not None:
        return PlanReading(problem=problem)
    if raw is not None and _is_graph(raw):
        return check_plan(raw, max_steps, tools)
    steps, problem = parse_plan(content, max_steps)
    return PlanReading(tuple(steps), None, problem)


def _is_graph(raw: Any) -> bool:
    items = raw.get("nodes", raw.get("steps")) if isinstance(raw, dict) else raw
    return isinstance(items, list) and any(isinstance(i, dict) for i in items)


def check_plan(raw: Any, max_steps: int, tools: Sequence[ToolSpec]) -> PlanReading:
    """``raw`` (a planner's JSON, or what the cache returned - shared state) as a plan: a graph
    validated against the agent's tools, or a list of steps; or why it is not usable."""
    if not _is_graph(raw):
        steps, problem = check_steps(raw, max_steps)
        return PlanReading(tuple(steps), None, problem)
    catalog = {t.name: Signature(t.name, t.parameters, None) for t in tools}
    try:
        graph = parse_graph(raw, max_nodes=max_steps)
        validate(graph, catalog, max_nodes=max_steps)
    except GraphInvalid as exc:
        return PlanReading(problem=f"the plan graph is invalid: {exc.message}")
    order = graph.order()
    texts = [graph.node(i).text or f"use {graph.node(i).uses or i}" for i in order]
    steps, problem = check_steps(texts, max_steps)
    if problem is not None:
        return PlanReading(problem=problem)
    return PlanReading(tuple(steps), graph.to_json(), None)


def planning_messages(
    pinned: Mapping[str, Any], agent: Agent, tools: Sequence[ToolSpec], pattern: str
) -> list[Message]:
    """The planner's prompt: its instructions, the agent's instructions and tools, the pattern."""
    max_steps = int(pinned["max_steps"])
    listing = "\n".join(f"- {t.name}: {t.description}" for t in tools) or "- (no tools)"
    system = (
        str(pinned["instructions"]).replace("{max_steps}", str(max_steps))
        + f"\n\nThe agent's instructions:\n{agent.instructions}\n\nThe agent's tools:\n{listing}"
    )
    return [Message(Role.SYSTEM, system), Message(Role.USER, pattern[:MAX_PATTERN_CHARS])]


class PlanningHook(Hook):
    """Gets a run its plan before its first turn - the cache first, then the planning model - and
    takes the plan of a run that failed following it out of the cache."""

    def __init__(
        self,
        agent: Agent,
        model: Model | None,
        *,
        cache: PlanCache | None,
        budget: ModelBudget | None,
        scorer: Model | None = None,
    ) -> None:
        """``model``: the planner the run pinned, ``None`` for a run that has its plan already;
        ``scorer``: the model that scores Tree-of-Thoughts candidates (default: the planner)."""
        self.agent = agent
        self.model = model
        self.scorer = scorer
        self.cache = cache
        self.budget = budget
        self._estimate = (
            exact_estimate(model) if model is not None and isinstance(model, ManagedModel) else None
        )

    async def before_model_call(self, step: StepProtocol) -> bool:
        state = step.state
        if self.model is None or state.planning is None or state.plan is not None:
            return True
        return await self.plan(step)

    async def plan(self, step: StepProtocol) -> bool:
        """Stage the run's ``plan`` entry; ``False`` once the run left RUNNING (a budget)."""
        assert self.model is not None
        session = step.session
        state = session.state
        pinned = state.planning
        assert pinned is not None
        pattern = task_pattern(session.run.input.get("task"))
        key = plan_key(
            pattern, agent=self.agent.name, version=self.agent.key[1], tenant=session.run.tenant
        )
        outcome = PlanOutcome(key=key, pattern=pattern[:200])
        ttl = pinned.get("cache_ttl")
        max_steps = int(pinned["max_steps"])
        if self.cache is not None and ttl is not None:
            cached, outcome = await self._lookup(key, outcome)
            if cached is not None:
                reading = check_plan(cached, max_steps, step.specs)
                if reading.problem is None:
                    session.stage(
                        outcome._replace(source="cache", steps=reading.steps, graph=reading.graph)
                    )
                    return True
                outcome = outcome._replace(cache_error=f"cached plan refused: {reading.problem}")
        messages = planning_messages(pinned, self.agent, step.specs, pattern)
        if int(pinned.get("candidates", 1)) > 1:
            return await self._tree_of_thoughts(step, messages, outcome, pattern)
        started = time.perf_counter()
        response = await self._ask(step, messages, "the planning call")
        if response is None:
            return False
        if isinstance(response, ModelError):
            reason = f"the planner failed: {response}; the run goes on without a plan"
            session.stage(outcome._replace(source="none", error=reason))
            return True
        outcome = outcome._replace(
            source="model",
            model=response.model or self.model.name,
            call=ModelCall.of_response(response),
            latency_ms=round((time.perf_counter() - started) * 1000, 3),
        )
        reading = read_plan(response.content, max_steps, step.specs)
        if reading.problem is not None:
            session.stage(outcome._replace(rejected=reading.problem))
            return True
        session.stage(outcome._replace(steps=reading.steps, graph=reading.graph))
        await self._cache(key, reading, ttl)
        return True

    async def _ask(
        self, step: StepProtocol, messages: list[Message], call: str, model: Model | None = None
    ) -> ModelResponse | ModelError | None:
        """One planning (or scoring) call under the run's model budget: the answer, the
        planner's failure, or ``None`` once a budget stopped the run."""
        planner = model or self.model
        assert planner is not None
        session = step.session
        reserved = None
        if self.budget is not None:
            decision, reserved = await self.budget.check(
                agent=self.agent.name,
                tenant=session.run.tenant,
                state=session.state,
                tools=[],
                now=session.now(),
                messages=messages,
                estimate=self._estimate,
            )
            if not decision.allowed:
                await suspend_for_budget(step, decision, reserved, call=call)
                return None
        try:
            response = await planner.complete(messages, [])
        except ModelError as exc:
            return exc
        if self.budget is not None and reserved is not None:
            await self.budget.settle(
                reserved,
                tokens=response.usage.input_tokens + response.usage.output_tokens,
                cost=float(response.cost_usd or 0.0),
            )
        return response

    async def _cache(self, key: str, reading: PlanReading, ttl: Any) -> None:
        if self.cache is None or ttl is None:
            return
        plan: Any = reading.graph if reading.graph is not None else list(reading.steps)
        try:
            await self.cache.store(key, plan, ttl=float(ttl))
        except Exception as exc:  # a cache outage must not fail the run
            log.warning("plan cache: could not store a plan: %s", _brief(exc))

    async def _tree_of_thoughts(
        self, step: StepProtocol, messages: list[Message], outcome: PlanOutcome, pattern: str
    ) -> bool:
        """Generate, score and choose among ``candidates`` plans; each candidate and each score
        committed as it is made, so a resumed run redoes neither."""
        session = step.session
        pinned = session.state.planning
        assert pinned is not None
        assert self.model is not None
        count, max_steps = int(pinned["candidates"]), int(pinned["max_steps"])
        for number in range(1, count + 1):
            if number in session.state.candidates:
                continue
            ask = [*messages, Message(Role.USER, _VARIANT.format(n=number, count=count))]
            response = await self._ask(step, ask, f"candidate plan {number}")
            if response is None:
                return False
            if isinstance(response, ModelError):
                session.stage(PlanCandidate(number, rejected=f"the planner failed: {response}"))
            else:
                reading = read_plan(response.content, max_steps, step.specs)
                session.stage(
                    PlanCandidate(
                        number,
                        steps=reading.steps if reading.problem is None else None,
                        graph=reading.graph,
                        rejected=reading.problem,
                        call=ModelCall.of_response(response),
                    )
                )
            await session.flush()
        for number in range(1, count + 1):
            candidate = session.state.candidates[number]
            if candidate.rejected is not None or number in session.state.scores:
                continue
            score = await self._score(step, candidate, pattern)
            if score is None:
                return False
            session.stage(score)
            await session.flush()
        session.fault("plan_scored")
        scored = [
            (session.state.scores[n].score, -n, session.state.candidates[n])
            for n in range(1, count + 1)
            if n in session.state.scores
        ]
        if not scored:
            problems = "; ".join(
                f"{n}: {c.rejected}" for n, c in sorted(session.state.candidates.items())
            )
            session.stage(outcome._replace(rejected=f"no candidate plan was usable ({problems})"))
            return True
        _, _, best = max(scored)
        session.stage(
            outcome._replace(
                source="model",
                model=self.model.name,
                steps=best.steps,
                graph=best.graph,
                chosen=best.candidate,
            )
        )
        await self._cache(
            outcome.key, PlanReading(best.steps or (), _plain(best.graph)), pinned.get("cache_ttl")
        )
        return True

    async def _score(
        self, step: StepProtocol, candidate: PlanCandidate, pattern: str
    ) -> PlanScore | None:
        """One candidate's score: the agent's scoring function, or a scoring model's answer
        (untrusted: an answer that is no score scores 0, with the reason)."""
        planning = self.agent.planning
        steps = candidate.steps or ()
        if planning is not None and planning.scorer is not None:
            value = float(planning.scorer(steps, candidate.graph))
            name = getattr(planning.scorer, "__qualname__", "scorer")
            return PlanScore(candidate.candidate, value, f"function:{name}")
        pinned = step.state.planning or {}
        spec = str(pinned.get("scorer", "")).removeprefix("model:") or None
        model = self.scorer or self.model
        listing = "\n".join(f"- {t.name}: {t.description}" for t in step.specs) or "- (no tools)"
        plan = "\n".join(f"{i}. {s}" for i, s in enumerate(steps, start=1))
        messages = [
            Message(
                Role.SYSTEM,
                f"{SCORING_INSTRUCTIONS}\n\nThe agent's instructions:\n"
                f"{self.agent.instructions}\n\nThe agent's tools:\n{listing}",
            ),
            Message(Role.USER, f"Task pattern:\n{pattern[:MAX_PATTERN_CHARS]}\n\nPlan:\n{plan}"),
        ]
        response = await self._ask(
            step, messages, f"scoring candidate {candidate.candidate}", model
        )
        if response is None:
            return None
        by = f"model:{spec or (model.name if model else '')}"
        if isinstance(response, ModelError):
            return PlanScore(candidate.candidate, 0.0, by, f"the scorer failed: {response}")
        value, reason = _read_score(response.content)
        return PlanScore(
            candidate.candidate, value, by, reason, call=ModelCall.of_response(response)
        )

    async def after_run(self, step: StepProtocol) -> None:
        """A run that failed following a plan takes the plan out of the cache: the next task of
        its kind is planned afresh instead of repeating the failure. (A suspension is a budget or
        a human's matter, not the plan's, so it keeps the plan.)"""
        plan = step.state.plan
        if (
            self.cache is None
            or step.state.status is not RunStatus.FAILED
            or plan is None
            or not plan.steps
        ):
            return
        try:
            await self.cache.forget(plan.key)
        except Exception as exc:  # a cache outage must not turn into a crashed worker
            log.warning(
                "plan cache: could not forget the plan of failed run %s: %s",
                step.session.run.id,
                exc,
            )

    async def _lookup(self, key: str, outcome: PlanOutcome) -> tuple[Any | None, PlanOutcome]:
        assert self.cache is not None
        try:
            return await self.cache.lookup(key), outcome
        except Exception as exc:  # a cache outage is a miss, not a failed run
            log.warning("plan cache: lookup failed, planning instead: %s", _brief(exc))
            return None, outcome._replace(cache_error=f"lookup failed: {_brief(exc)}")


_VARIANT = (
    "This is candidate plan {n} of {count}: make it a sound plan of its own, and if an earlier "
    "candidate would plan it one way, consider another."
)


def _read_score(content: str | None) -> tuple[float, str]:
    """A scoring model's answer as (score, reason); an answer that is no score scores 0."""
    raw, _ = _json(content)
    value = raw.get("score") if isinstance(raw, dict) else None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 10:
        return 0.0, "the scorer's answer is not a score from 0 to 10"
    reason = raw.get("reason") if isinstance(raw, dict) else None
    return float(value), (reason if isinstance(reason, str) else "")[:300]


def _plain(graph: Mapping[str, Any] | None) -> dict[str, Any] | None:
    return dict(graph) if graph is not None else None


def _brief(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc)[:200]}"
