"""ReAct: ask the model, run the tools it proposes, feed back observations, until it answers.

An agent with ``planning`` gets its plan first (``autonomic.engine.planning``: from the plan cache
or one call to its planning model), journaled as a ``plan`` entry and folded into the system
prompt, so every turn after follows it.

Each turn follows the step protocol. The model's response, the tool intents and the results are
staged; a non-idempotent tool's intent is committed *before* it runs (write-ahead) and its result
right after, while idempotent tools ride in one commit per turn, because repeating them with the same
idempotency key is safe by contract. On resume, the calls of the latest response that have no result
are finished first: idempotent ones re-run with their key, a non-idempotent one that had started
sends the run to a human as *in doubt*.

Before a new call's intent, the ``Guard`` consults the action gates (risk, workflow, ...) and
journals their decision; see ``autonomic.engine.gatekeeper``. A call runs only against the tool version
the run pinned at start; a worker without that version suspends the run instead. The contract's
timeout and retry policy are enforced here, and results are checked against its output schema.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from autonomic.core.journal import EntryKind
from autonomic.core.messages import ModelResponse, ToolCall
from autonomic.core.run import RunStatus
from autonomic.core.state import PendingCall, observation_text
from autonomic.engine.agent import Agent
from autonomic.engine.gatekeeper import Go, Guard
from autonomic.engine.model_call import (
    as_gateway,
    compress,
    context_for,
    exact_estimate,
    response_fields,
)
from autonomic.engine.planning import Planner
from autonomic.engine.session import RunSession, suspend_for_budget
from autonomic.errors import (
    AutonomicError,
    InvalidInput,
    ModelError,
    NotFound,
    ToolArgumentsInvalid,
    ToolVersionMissing,
)
from autonomic.gateway.plan_cache import PlanCache
from autonomic.governance.action import ProposedAction as GuardAction
from autonomic.governance.circuits import Circuits
from autonomic.governance.gate import GateChain
from autonomic.governance.runaway.gate import ModelBudget, Runaway, screen_result
from autonomic.ports.model import Model
from autonomic.tools.contract import Tool, ToolContext

MODEL_RETRIES = 3
MODEL_BACKOFF = 0.2


class ReAct:
    """The observe-think-act loop with a turn budget."""

    def __init__(
        self,
        agent: Agent,
        model: Model,
        *,
        stopping: Callable[[], bool],
        gates: GateChain | None = None,
        runaway: Runaway | None = None,
        circuits: Circuits | None = None,
        planning_model: Model | None = None,
        plan_cache: PlanCache | None = None,
    ) -> None:
        """``planning_model``: the model of the planning phase, for a run whose agent plans and
        that has no plan yet (``autonomic.engine.planning``)."""
        self.agent = agent
        self.circuits = circuits
        self.model = model
        self._stopping = stopping
        self._specs = [t.spec() for t in agent.tools]
        extra = [agent.workflow.gate()] if agent.workflow is not None else []
        self.guard = Guard(gates or GateChain(), [*extra, *agent.gates], read_only=agent.read_only)
        self.runaway = runaway if runaway is not None and runaway.enabled else None
        self.budget = ModelBudget(self.runaway.ledger) if self.runaway is not None else None
        self.gateway = as_gateway(model)
        """Set when the model is the gateway: it retries, counts exactly, prices and compresses."""
        if self.budget is not None and self.gateway is not None:
            self.budget.estimate = exact_estimate(self.gateway)
        self.planner = (
            Planner(agent, planning_model, cache=plan_cache, budget=self.budget)
            if planning_model is not None
            else None
        )

    async def run(self, session: RunSession) -> None:
        """Drive the run until it finishes, waits for a human, or the worker is asked to stop."""
        state = session.state
        while state.status is RunStatus.RUNNING:
            pending = state.pending_calls()
            if pending:
                if not await self._finish_calls(session, pending):
                    return
                await session.flush()
                continue
            if state.finished_turn:
                workflow = self.agent.workflow
                if workflow is not None and not workflow.may_finish(state.workflow):
                    await session.transition(
                        RunStatus.SUSPENDED,
                        f"workflow {workflow.name}: the model answered in state {state.workflow}, "
                        f"which is not a final state ({', '.join(workflow.final_states())})",
                    )
                    return
                await session.transition(
                    RunStatus.COMPLETED, "the model gave a final answer", output=_final(state)
                )
                return
            if self._stopping():
                await session.flush()
                return
            if state.turns >= state.max_turns:
                await session.transition(
                    RunStatus.FAILED,
                    f"turn budget exhausted: {state.turns} of {state.max_turns} model turns used "
                    "without a final answer (raise max_turns or fix the agent's instructions)",
                )
                return
            with context_for(
                metadata=session.run.metadata,
                state=state,
                tenant=session.run.tenant,
                now=session.now(),
            ):
                if (
                    self.planner is not None
                    and state.planning is not None
                    and state.plan is None
                    and not await self.planner.plan(session, self._specs)
                ):
                    return
                if self.gateway is not None and not await self._compress(session):
                    return
                reserved = await self._check_budget(session)
                if reserved is None:
                    return
                response = await self._ask_model(session)
            if response is None:
                return
            session.stage(EntryKind.MODEL_RESPONSE, response)
            if self.budget is not None and isinstance(reserved, GuardAction):
                usage = response["usage"]
                await self.budget.settle(
                    reserved,
                    tokens=int(usage["input_tokens"]) + int(usage["output_tokens"]),
                    cost=float(response.get("cost_usd") or 0.0),
                )

    async def _compress(self, session: RunSession) -> bool:
        """Compress the conversation if the next prompt would pass 75 % of the window; journal
        the result as a ``summary`` entry (folded at once). ``False`` once the run was suspended
        because the summarisation call failed after the gateway's own retries."""
        assert self.gateway is not None
        try:
            summary = await compress(self.gateway, session.state.messages, self._specs)
        except ModelError as exc:
            target = RunStatus.SUSPENDED if exc.retryable else RunStatus.FAILED
            await session.transition(
                target, f"context compression: model error: {exc}", error=exc.to_dict()
            )
            return False
        if summary is not None:
            session.stage(EntryKind.SUMMARY, summary)
        return True

    async def _check_budget(self, session: RunSession) -> GuardAction | bool | None:
        """The budget hook before a model call: the run's budgets, then the tenant's daily budget.

        Returns the reserved action (to settle afterwards), ``True`` when no budget applies, or
        ``None`` once the run was suspended because the call would pass a limit."""
        if self.budget is None:
            return True
        verdict, action = await self.budget.check(
            agent=self.agent.name,
            tenant=session.run.tenant,
            state=session.state,
            tools=self._specs,
            now=session.now(),
        )
        if verdict.allowed:
            return action
        await suspend_for_budget(session, verdict, action)
        return None

    async def _ask_model(self, session: RunSession) -> dict[str, Any] | None:
        """Call the model (retrying transient errors); ``None`` once the run has been stopped.

        A gateway retries (with backoff, Retry-After and fallback) itself: its failure is final
        for this attempt and a retryable one suspends the run at once."""
        delay = MODEL_BACKOFF
        retries = 1 if self.gateway is not None else MODEL_RETRIES
        for attempt in range(1, retries + 1):
            started = time.perf_counter()
            try:
                response = await self.model.complete(session.state.messages, self._specs)
            except ModelError as exc:
                if exc.retryable and attempt < retries:
                    await asyncio.sleep(delay)
                    delay *= 2
                    continue
                target = RunStatus.SUSPENDED if exc.retryable else RunStatus.FAILED
                await session.transition(
                    target, f"model error: {exc}", error=exc.to_dict(), attempts=attempt
                )
                return None
            payload = _response_payload(
                response, session.state.turns + 1, (time.perf_counter() - started) * 1000
            )
            return payload | response_fields(response)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _finish_calls(self, session: RunSession, pending: list[PendingCall]) -> bool:
        """Run the pending calls in order; ``False`` if the run left RUNNING on the way."""
        for item in pending:
            call = item.call
            try:
                tool = self._tool_for(session, call.name)
            except ToolVersionMissing as exc:
                await session.transition(
                    RunStatus.SUSPENDED, str(exc), error=exc.to_dict(), call_id=call.id
                )
                return False
            except NotFound as exc:
                session.stage(EntryKind.TOOL_RESULT, _error_result(call, "unknown_tool", str(exc)))
                continue
            if item.intent is not None:
                if not tool.idempotent:
                    await session.transition(
                        RunStatus.WAITING_FOR_HUMAN,
                        f"in doubt: {tool.ref} call {call.id} started but its result was never "
                        "recorded, and the tool is not idempotent",
                        in_doubt=item.intent,
                    )
                    return False
                arguments: dict[str, Any] = item.intent["arguments"]
                key = str(item.intent["key"])
                replayed = True
            else:
                try:
                    arguments = tool.parse_arguments(call.arguments)
                except ToolArgumentsInvalid as exc:
                    session.stage(
                        EntryKind.TOOL_RESULT, _error_result(call, exc.code, str(exc), tool)
                    )
                    continue
                go = await self.guard.before_call(session, tool, call, arguments)
                if go is Go.STOP:
                    return False
                if go is Go.SKIP:
                    continue
                key = f"{session.run.id}:{session.next_seq}"
                intent: dict[str, Any] = {
                    "call_id": call.id,
                    "tool": tool.name,
                    "version": tool.version,
                    "arguments": arguments,
                    "key": key,
                    "idempotent": tool.idempotent,
                }
                if tool.name in self.agent.read_only:
                    intent["read_only"] = True
                if tool.cost_estimate:
                    intent["cost"] = tool.cost_estimate
                session.stage(EntryKind.TOOL_INTENT, intent)
                replayed = False
                if not tool.idempotent:
                    await session.flush()
            result = await self._invoke(session, tool, call, arguments, key)
            result["replayed"] = replayed
            if self.runaway is not None and self.runaway.screen_results:
                screen_result(result, observation_text(result))
            session.fault("after_effect")
            session.stage(EntryKind.TOOL_RESULT, result)
            if not tool.idempotent:
                await session.flush()
        return True

    def _tool_for(self, session: RunSession, name: str) -> Tool:
        """The tool version this run pinned when it started."""
        for ref in session.state.tools:
            if ref.partition("@")[0] == name:
                try:
                    return self.agent.registry.resolve(ref)
                except NotFound:
                    have = ", ".join(sorted(self.agent.registry.refs(name))) or "none"
                    raise ToolVersionMissing(
                        f"this run pinned {ref} but this worker has not registered it "
                        f"(registered: {have}); refusing to run another version",
                        hint=f"run a worker that registers {ref}, or cancel the run",
                    ) from None
        known = ", ".join(sorted(t.name for t in self.agent.tools)) or "none"
        raise NotFound(f"unknown tool {name!r}; this agent's tools are: {known}")

    async def _invoke(
        self, session: RunSession, tool: Tool, call: ToolCall, arguments: dict[str, Any], key: str
    ) -> dict[str, Any]:
        ctx = ToolContext(
            run_id=session.run.id,
            call_id=call.id,
            idempotency_key=key,
            tenant=session.run.tenant,
            metadata=session.run.metadata,
        )
        started = time.perf_counter()
        attempts = tool.retry.attempts if tool.idempotent else 1

        async def tries() -> tuple[dict[str, Any], bool]:
            for attempt in range(1, attempts + 1):
                result = await self._attempt(tool, call, arguments, ctx)
                retryable = bool(result.pop("retryable", False))
                if "error" not in result or attempt == attempts or not retryable:
                    break
                await asyncio.sleep(tool.retry.delay(attempt))
            if attempts > 1:
                result["attempts"] = attempt
            return result, "error" in result and retryable  # raises and timeouts: unhealthy

        if self.circuits is not None:
            result = await self.circuits.call(tool, tries)
            result.setdefault("call_id", call.id)
        else:
            result = (await tries())[0]
        result["latency_ms"] = round((time.perf_counter() - started) * 1000, 3)
        return result

    async def _attempt(
        self, tool: Tool, call: ToolCall, arguments: dict[str, Any], ctx: ToolContext
    ) -> dict[str, Any]:
        """One try; an error result carries ``retryable`` (raises and timeouts are, bad output
        and refusals by the tool's own validation are not)."""
        try:
            output = await tool.invoke(arguments, ctx)
        except TimeoutError:
            failed = _error_result(
                call, "tool_timeout", f"{tool.ref} timed out after {tool.timeout}s", tool
            )
            return failed | {"retryable": True}
        except AutonomicError as exc:
            return _error_result(call, exc.code, str(exc), tool) | {"retryable": exc.retryable}
        except Exception as exc:
            failed = _error_result(call, "tool_error", f"{type(exc).__name__}: {exc}", tool)
            return failed | {"retryable": True}
        try:
            tool.validate_output(output)
        except InvalidInput as exc:
            return _error_result(call, "tool_output_invalid", str(exc), tool) | {"retryable": False}
        return {"call_id": call.id, "tool": tool.name, "ok": True, "output": output}


def _response_payload(response: ModelResponse, turn: int, latency_ms: float) -> dict[str, Any]:
    return {
        "turn": turn,
        "content": response.content,
        "tool_calls": [c.to_dict() for c in response.tool_calls],
        "model": response.model,
        "usage": response.usage.to_dict(),
        "finish_reason": response.finish_reason,
        "latency_ms": round(latency_ms, 3),
    }


def _error_result(
    call: ToolCall, code: str, message: str, tool: Tool | None = None
) -> dict[str, Any]:
    return {
        "call_id": call.id,
        "tool": tool.name if tool else call.name,
        "ok": False,
        "error": {"code": code, "message": message},
    }


def _final(state: Any) -> Any:
    """The run's output: the final assistant message's text."""
    return state.messages[-1].content if state.messages else None
