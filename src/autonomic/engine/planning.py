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
from typing import Any

from autonomic.core.entries import ModelCall, PlanOutcome
from autonomic.core.messages import Message, Role, ToolSpec
from autonomic.core.run import RunStatus
from autonomic.engine.agent import PLANNING_INSTRUCTIONS, Agent, Planning
from autonomic.engine.hooks import exact_estimate, suspend_for_budget
from autonomic.engine.step import Hook, StepProtocol
from autonomic.errors import ModelError
from autonomic.gateway.plan_cache import PlanCache, plan_key, task_pattern
from autonomic.governance.injection import screen
from autonomic.governance.provenance import Provenance, Source
from autonomic.governance.runaway.model_budget import ModelBudget
from autonomic.ports.model import ManagedModel, Model

__all__ = ["PLANNING_INSTRUCTIONS", "Planning", "PlanningHook", "check_steps", "parse_plan"]

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
    ) -> None:
        """``model``: the planner the run pinned, ``None`` for a run that has its plan already."""
        self.agent = agent
        self.model = model
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
                steps, problem = check_steps(cached, max_steps)
                if problem is None:
                    session.stage(outcome._replace(source="cache", steps=tuple(steps)))
                    return True
                outcome = outcome._replace(cache_error=f"cached plan refused: {problem}")
        messages = planning_messages(pinned, self.agent, step.specs, pattern)
        reserved = None
        if self.budget is not None:
            decision, reserved = await self.budget.check(
                agent=self.agent.name,
                tenant=session.run.tenant,
                state=state,
                tools=[],
                now=session.now(),
                messages=messages,
                estimate=self._estimate,
            )
            if not decision.allowed:
                await suspend_for_budget(step, decision, reserved, call="the planning call")
                return False
        started = time.perf_counter()
        try:
            response = await self.model.complete(messages, [])
        except ModelError as exc:
            reason = f"the planner failed: {exc}; the run goes on without a plan"
            session.stage(outcome._replace(source="none", error=reason))
            return True
        outcome = outcome._replace(
            source="model",
            model=response.model or self.model.name,
            call=ModelCall.of_response(response),
            latency_ms=round((time.perf_counter() - started) * 1000, 3),
        )
        if self.budget is not None and reserved is not None:
            await self.budget.settle(
                reserved,
                tokens=response.usage.input_tokens + response.usage.output_tokens,
                cost=float(response.cost_usd or 0.0),
            )
        steps, problem = parse_plan(response.content, max_steps)
        if problem is not None:
            session.stage(outcome._replace(rejected=problem))
            return True
        session.stage(outcome._replace(steps=tuple(steps)))
        if self.cache is not None and ttl is not None:
            try:
                await self.cache.store(key, steps, ttl=float(ttl))
            except Exception as exc:  # a cache outage must not fail the run
                log.warning("plan cache: could not store a plan: %s", _brief(exc))
        return True

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


def _brief(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc)[:200]}"
