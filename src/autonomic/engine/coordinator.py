"""The coordinator: a task as a dependency graph of subtasks, each a child run of an agent with the
capability it needs, the independent ones in parallel, their results aggregated.

A loop over the step protocol's session, like every pattern (``engine/patterns``); the agent's
declaration is ``core/coordination.py``. Every decision is journaled (``subtask`` entries) before
what it causes, so a coordinator taken over after a crash goes on from its journal and never
plans, routes or hands off twice:

1. **Plan.** The agent's model is asked for a graph over the capabilities the coordinator may use
   (their schemas in the prompt). The proposal is untrusted input: parsed and validated
   (``core/graph.py``: no cycle, every node a known capability, literal inputs fit the
   capability's input schema, each output wired to an input fits it). One that does not validate
   - or a model that fails - is replaced by the declared template, and the reason is journaled
   with the ``graph`` entry. Nothing runs that the journaled graph does not contain.
2. **Dispatch.** Every node whose dependencies completed is routed (``Delegation
   .route_capability``: agents with the capability, open circuits skipped, failing agents after
   healthy ones, then cost and latency), its inputs resolved and checked against the
   capability's input schema, and the delegation guards asked (depth, cycle, ping-pong). The
   ``dispatch`` entries of all ready nodes are **committed in one commit** before any child
   exists; then each child run is created under an id derived from the dispatch's key
   (``RUN:subtask:NODE:ATTEMPT``), so creating it again after a crash finds it. The coordinator
   then waits as a row (WAITING_FOR_CHILD), holding no worker; any child's end reopens it.
3. **Collect.** A child that ended is the subtask's ``result``: its output checked against the
   capability's output schema (an answer that breaks it - garbage - fails the subtask), or the
   child's failure, cancellation or suspension.
4. **Fail.** A failed subtask follows its failure policy: retried on the same agent, then
   reassigned to the next agent with the capability, then ``abort`` (the children in flight are
   cancelled; the run fails naming the subtask), ``compensate`` (the children in flight are
   aborted with compensation, then each completed subtask is undone by a child run of its
   capability's ``compensation``, newest first, each journaled as ``compensation`` intent and
   result: exactly once, also when the coordinator crashes in between) or ``continue`` (the
   subtask and all that need it are ``skipped``).
5. **Aggregate.** When every node completed or was skipped, the outputs are aggregated and checked
   against the workflow's output schema; the run completes with them, or fails saying where they
   break it.

An operator's ``autonomic abort RUN --compensate`` on a coordinator undoes its completed subtasks
the same way and ends it CANCELLED.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from autonomic.core.canonical import canonical_json
from autonomic.core.compensation import Compensator, completed_steps, undo_plan
from autonomic.core.coordination import TASK, Coordination, OnFailure
from autonomic.core.entries import CompensationStep, ModelCall, SubtaskStep
from autonomic.core.graph import Graph, Signature, choose, fallback, parse_graph
from autonomic.core.messages import Message, Role
from autonomic.core.run import Run, RunStatus
from autonomic.core.state import RunState
from autonomic.engine.delegation import (
    Delegation,
    DelegationGate,
    Handoff,
    Outcome,
    child_run_id,
)
from autonomic.engine.health import Health, health
from autonomic.engine.step import StepProtocol, deadline, run_priority
from autonomic.errors import AutonomicError, GraphInvalid, InvalidInput, ModelError, NotFound
from autonomic.governance.action import ActionKind, ProposedAction
from autonomic.ports.model import call_context
from autonomic.tools.capability import Capability
from autonomic.tools.delegate import DELEGATE_TOOL

__all__ = ["NO_RETRY", "Coordinate", "planning_prompt"]

log = logging.getLogger(__name__)

NO_RETRY = frozenset({"subtask_refused", "subtask_input_invalid", "subtask_unroutable"})
"""Failures another attempt cannot mend: a refusal by the delegation guards, inputs that break
the capability's schema, no agent to route to."""

HEALTH_WINDOW = 200
"""Recent runs of the coordinator's tenant that routing reads agents' health from."""

_FENCE = re.compile(r"^```(?:json)?\s*|\s*```$", re.MULTILINE)

Cancel = Callable[..., Awaitable[Run]]

_PROMPT = """You coordinate other agents. Decompose the task into a dependency graph of \
subtasks, each done by one of the capabilities below, and answer with JSON only:
{"nodes": [{"id": "a", "uses": "CAPABILITY", "inputs": {...}, "after": [], "do": "what"}]}
An input may take another node's output, {"$ref": "NODE"} or {"$ref": "NODE.FIELD"}, or the \
task itself, {"$ref": "task"}. Nodes that do not wait for each other run in parallel. \
Use at most MAX nodes.

Capabilities:
CATALOG"""


def planning_prompt(capabilities: Sequence[Capability], max_nodes: int) -> str:
    """The coordinator's planning instructions: the capabilities it may use, with schemas."""
    catalog = "\n".join(
        f"- {c.name}: {c.description or '(no description)'}; input "
        f"{canonical_json(c.input_schema or {})}; output {canonical_json(c.output_schema or {})}"
        for c in capabilities
    )
    return _PROMPT.replace("MAX", str(max_nodes)).replace("CATALOG", catalog)


class Coordinate:
    """The coordinator's loop (see the module docstring)."""

    def __init__(
        self,
        *,
        gate: DelegationGate | None = None,
        cancel: Cancel | None = None,
        abort: Cancel | None = None,
    ) -> None:
        """``gate``: the delegation guards (``None``: runaway guards off). ``cancel`` and
        ``abort``: the engine's, for the children in flight when the graph is abandoned."""
        self.gate = gate
        self.cancel = cancel
        self.abort = abort

    async def __call__(self, step: StepProtocol) -> None:
        coordination = step.agent.coordination
        delegation = step.delegation
        assert coordination is not None
        assert delegation is not None
        work = _Work(step, coordination, delegation, self)
        await work.drive()


class _Work:
    """One drive of one coordinator run."""

    def __init__(
        self,
        step: StepProtocol,
        coordination: Coordination,
        delegation: Delegation,
        pattern: Coordinate,
    ) -> None:
        self.step = step
        self.session = step.session
        self.coordination = coordination
        self.delegation = delegation
        self.pattern = pattern
        self._health: dict[str, Health] | None = None

    @property
    def state(self) -> RunState:
        return self.session.state

    @property
    def run(self) -> Run:
        return self.session.run

    # -- the loop -------------------------------------------------------------------------------

    async def drive(self) -> None:
        if self.state.graph is None and not await self._plan():
            return
        graph = self._graph()
        while self.state.status is RunStatus.RUNNING:
            if self.state.abort is not None:
                await self._unwind(graph, None)
                return
            if self.step.stopping():
                await self.step.commit()
                return
            collected = await self._collect()
            before = self.state.last_seq
            given_up = await self._failures(graph)
            decided = self.state.last_seq != before  # a retry, a refusal, a skip
            if given_up is not None:
                await self._unwind(graph, given_up)
                return
            dispatched = await self._dispatch(graph)
            statuses = {n: self._status(n) for n in graph.ids}
            if all(s in ("done", "skipped") for s in statuses.values()):
                await self._finish(graph)
                return
            if collected or dispatched or decided:
                continue
            if any(s == "running" for s in statuses.values()):
                await self._wait(graph)
                return
            if not any(s == "failed" for s in statuses.values()):  # pragma: no cover - guard
                await self.step.stop(
                    RunStatus.SUSPENDED,
                    "the coordinator cannot make progress: no subtask is ready, in flight or "
                    "failed (a graph the validation should have refused); `autonomic show` "
                    "lists its subtasks",
                )
                return

    def _status(self, node: str) -> str:
        steps = self.state.subtasks.get(node)
        if not steps:
            return "new"
        last = steps[-1]
        if last.phase == "dispatch":
            return "running"
        if last.phase == "skipped":
            return "skipped"
        return "done" if last.ok else "failed"

    # -- 1. plan --------------------------------------------------------------------------------

    def _capabilities(self) -> dict[str, Capability]:
        """The capabilities this coordinator may use: those it ``delegates_to``, or every one
        a registered agent declares."""
        agents = self.delegation.agents
        allowed = set(self.step.agent.delegates_to)
        out: dict[str, Capability] = {}
        for name in agents.names():
            for cap in agents.get(name).capabilities:
                if (not allowed or cap.name in allowed) and cap.name not in out:
                    out[cap.name] = cap
        return out

    async def _plan(self) -> bool:
        """Journal the graph the run follows; ``False`` once the run left RUNNING."""
        coordination = self.coordination
        capabilities = self._capabilities()
        catalog = {
            c.name: Signature(c.name, c.input_schema, c.output_schema)
            for c in capabilities.values()
        }
        raw: Any = None
        call: ModelCall | None = None
        rejected: str | None = None
        if coordination.plan:
            messages = [
                Message(
                    Role.SYSTEM,
                    planning_prompt(list(capabilities.values()), coordination.max_nodes),
                ),
                Message(Role.USER, _text(self.run.input.get("task"))),
            ]
            try:
                with call_context(  # the gateway's tenant, priority and deadline apply to it
                    priority=run_priority(self.run.metadata),
                    deadline=deadline(self.state, self.session.now()),
                    run_id=self.run.id,
                    tenant=self.run.tenant,
                ):
                    response = await self.step.model.complete(messages, [])
                call = ModelCall.of_response(response)
                raw = _json(response.content or "")
                if raw is None:
                    rejected = "the planning model's answer is not JSON"
            except ModelError as exc:
                rejected = f"the planning model failed: {exc}"
        else:
            rejected = "planning by model is off"
        given = frozenset({TASK})
        try:
            if rejected is None:
                chosen = choose(
                    raw,
                    catalog,
                    template=coordination.template_graph,
                    max_nodes=coordination.max_nodes,
                    require_uses=True,
                    given=given,
                )
            else:
                chosen = fallback(
                    rejected,
                    catalog,
                    template=coordination.template_graph,
                    max_nodes=coordination.max_nodes,
                    require_uses=True,
                )
        except GraphInvalid as exc:
            self.session.stage(SubtaskStep("graph", source="none", rejected=exc.message, call=call))
            await self.step.stop(
                RunStatus.FAILED,
                f"no graph to follow: {exc.message}",
                error={"code": "graph_invalid", "message": exc.message},
            )
            return False
        source = "model" if chosen.source == "proposed" else "template"
        self.session.stage(
            SubtaskStep(
                "graph",
                graph=chosen.graph.to_json(),
                source=source,
                rejected=chosen.rejected if source == "template" else None,
                call=call,
            )
        )
        await self.session.flush()
        return True

    def _graph(self) -> Graph:
        entry = self.state.graph
        assert entry is not None
        assert entry.graph is not None
        return parse_graph(entry.graph, max_nodes=10_000, given=frozenset({TASK}))

    # -- 2. dispatch ----------------------------------------------------------------------------

    async def _dispatch(self, graph: Graph) -> bool:
        """Hand every ready node to a child run: all dispatches in one commit, then the
        children; ``True`` if it staged anything (a dispatch, or a subtask's refusal)."""
        done = [n for n in graph.ids if self._status(n) == "done"]
        ready = [n for n in graph.ready(done) if self._status(n) == "new"]
        if not ready:
            return False
        outputs = self._outputs()
        staged: list[Handoff] = []
        for node_id in ready:
            node = graph.node(node_id)
            handoff = await self._route(graph, node_id, str(node.uses), outputs, exclude=())
            if handoff is not None:
                staged.append(handoff)
        await self.session.flush()  # write-ahead: the hand-offs are durable before any child
        await self._create(staged)
        return True

    async def _route(
        self,
        graph: Graph,
        node_id: str,
        capability: str,
        outputs: Mapping[str, Any],
        *,
        exclude: Sequence[str],
        agent: str | None = None,
    ) -> Handoff | None:
        """Stage the dispatch of ``node_id`` (its next attempt), or its refusal as a failed
        result; the hand-off when dispatched."""
        attempt = 1 + sum(1 for s in self.state.subtasks.get(node_id, ()) if s.phase == "dispatch")
        try:
            task = graph.resolve(node_id, outputs)
        except KeyError as exc:
            return self._refuse(
                node_id, capability, "subtask_input_invalid",
                f"subtask {node_id}: input {exc.args[0]} is not in the output it references",
            )  # fmt: skip
        try:
            if agent is not None:
                chosen = self.delegation.agents.get(agent)
                cap = chosen.capability(capability)
                if cap is None:
                    raise InvalidInput(f"agent {agent} no longer declares {capability!r}")
                cap.check_input(task)
            else:
                route = self.delegation.route_capability(
                    capability, task, exclude=exclude, health=await self._healths()
                )
                agent = route.agent.name
        except NotFound as exc:
            return self._refuse(node_id, capability, "subtask_unroutable", exc.message)
        except InvalidInput as exc:
            code = "subtask_input_invalid" if "breaks its" in exc.message else "subtask_unroutable"
            return self._refuse(node_id, capability, code, f"subtask {node_id}: {exc.message}")
        refusal = await self._guard(agent, task)
        if refusal is not None:
            return self._refuse(node_id, capability, "subtask_refused", refusal)
        dispatch = SubtaskStep(
            "dispatch", node=node_id, attempt=attempt, agent=agent, capability=capability,
            task=task, key=f"{self.run.id}:subtask:{node_id}:{attempt}",
        )  # fmt: skip
        self.session.stage(dispatch)
        return Handoff.of_subtask(dispatch)

    def _refuse(self, node: str, capability: str, code: str, message: str) -> Handoff | None:
        """Stage ``node``'s refusal as its failed result (its policy decides next round)."""
        self.session.stage(
            SubtaskStep(
                "result", node=node, capability=capability, ok=False,
                error={"code": code, "message": message},
            )
        )  # fmt: skip
        return None

    async def _guard(self, agent: str, task: Any) -> str | None:
        """The delegation guards' objection to handing ``task`` to ``agent``, if any."""
        gate = self.pattern.gate
        if gate is None:
            return None
        action = ProposedAction(
            ActionKind.DELEGATE,
            agent=self.run.agent,
            tool=DELEGATE_TOOL,
            arguments={"agent": agent, "task": task},
            target=agent,
            tenant=self.run.tenant,
            run=self.run,
            state=self.state,
        )
        decision = await gate.check(action)
        if decision is None or decision.allowed:
            return None
        return f"refused by the delegation guards: {decision.explanation}"

    async def _healths(self) -> dict[str, Health]:
        """Agents' health over the tenant's recent runs (read once per drive)."""
        if self._health is None:
            try:
                runs = await self.delegation.store.list_runs(
                    tenant=self.run.tenant, limit=HEALTH_WINDOW
                )
            except NotImplementedError:  # pragma: no cover - every store lists runs
                runs = []
            self._health = {}
            for row in health(runs):
                known = self._health.get(row.agent)
                if known is None or row.ended > known.ended:
                    self._health[row.agent] = row
        return self._health

    async def _create(self, handoffs: Sequence[Handoff]) -> None:
        """Create the children of journaled hand-offs (each once: the ids are derived)."""
        self.session.fault("before_effect")
        await self.session.check_lease()
        for handoff in handoffs:
            await self.delegation.child(self.run, self.state, handoff)
        self.session.fault("after_effect")

    # -- 3. collect -----------------------------------------------------------------------------

    async def _collect(self) -> bool:
        """Record the end of every subtask whose child ended; ``True`` if any did. A dispatch
        whose child does not exist yet (a crash between the commit and the child) makes it."""
        found = False
        for node, steps in list(self.state.subtasks.items()):
            last = steps[-1]
            if last.phase != "dispatch" or not last.key:
                continue
            child = await self.delegation.child(self.run, self.state, Handoff.of_subtask(last))
            end = self.delegation.ended(child) if child is not None else None
            if end is None:
                continue
            self._record(node, last, end)
            found = True
        if found:
            await self.session.flush()
        return found

    def _record(self, node: str, dispatch: SubtaskStep, end: Outcome) -> None:
        self.session.stage(
            SubtaskStep(
                "result", node=node, attempt=dispatch.attempt, agent=dispatch.agent,
                capability=dispatch.capability, key=dispatch.key, ok=end.ok,
                output=end.output if end.ok else None,
                error=None if end.ok else {"code": end.code, "message": end.message},
            )
        )  # fmt: skip

    # -- 4. fail --------------------------------------------------------------------------------

    def _policy(self, capability: str | None) -> OnFailure:
        declared = self.delegation.capability(capability) if capability else None
        return self.coordination.failure_policy(
            capability, declared.on_failure if declared is not None else None
        )

    async def _failures(self, graph: Graph) -> SubtaskStep | None:
        """Apply the failure policy to every failed subtask: retry or reassign it (staged and
        created here), skip it and its dependants (``continue``), or return its failure when
        the graph must be abandoned (``abort`` / ``compensate``)."""
        staged: list[Handoff] = []
        outputs: Mapping[str, Any] | None = None
        for node_id in graph.ids:
            if self._status(node_id) != "failed":
                continue
            steps = self.state.subtasks[node_id]
            failure = steps[-1]
            capability = str(graph.node(node_id).uses)
            policy = self._policy(capability)
            code = str((failure.error or {}).get("code", ""))
            dispatches = [s for s in steps if s.phase == "dispatch"]
            if code not in NO_RETRY and dispatches:
                last_agent = dispatches[-1].agent
                on_agent = sum(1 for s in dispatches if s.agent == last_agent)
                outputs = outputs if outputs is not None else self._outputs()
                handoff: Handoff | None = None
                # retries on the agent first routed to; then one attempt on each other agent
                if last_agent == dispatches[0].agent and on_agent <= policy.retries:
                    delay = policy.wait(on_agent + 1)
                    if delay > 0:
                        await asyncio.sleep(delay)
                    handoff = await self._route(
                        graph, node_id, capability, outputs, exclude=(), agent=last_agent
                    )
                elif policy.reassign:
                    tried = sorted({str(s.agent) for s in dispatches})
                    if self._another(capability, tried):
                        handoff = await self._route(
                            graph, node_id, capability, outputs, exclude=tried
                        )
                if handoff is not None:
                    staged.append(handoff)
                    continue
                if self._status(node_id) != "failed" or self.state.subtasks[node_id][-1] != failure:
                    continue  # a refusal of the new attempt was staged: decided next round
            if policy.then == "continue":
                self._skip(graph, node_id, failure)
                continue
            await self.session.flush()
            await self._create(staged)
            return failure
        await self.session.flush()
        await self._create(staged)
        return None

    def _another(self, capability: str, tried: Sequence[str]) -> bool:
        agents = self.delegation.agents
        return any(
            name not in tried and agents.get(name).capability(capability) is not None
            for name in agents.names()
        )

    def _skip(self, graph: Graph, node_id: str, failure: SubtaskStep) -> None:
        """Leave ``node_id`` and every node that needs it (transitively) out of the graph."""
        why = str((failure.error or {}).get("message", "failed"))
        out = {node_id}
        changed = True
        while changed:
            changed = False
            for node in graph.nodes:
                if node.id not in out and node.needs & out:
                    out.add(node.id)
                    changed = True
        for skipped in graph.ids:
            if skipped in out and self._status(skipped) in ("new", "failed"):
                reason = (
                    f"failed and its policy continues without it: {why}"
                    if skipped == node_id
                    else f"needs subtask {node_id}, which was left out"
                )
                self.session.stage(
                    SubtaskStep(
                        "skipped", node=skipped, error={"code": "skipped", "message": reason}
                    )
                )

    # -- 5. finish ------------------------------------------------------------------------------

    def _outputs(self) -> dict[str, Any]:
        out: dict[str, Any] = {TASK: self.run.input.get("task")}
        for node in self.state.subtasks_done:
            out[node] = self.state.subtasks[node][-1].output
        return out

    async def _finish(self, graph: Graph) -> None:
        outputs = {
            n: self.state.subtasks[n][-1].output for n in graph.ids if self._status(n) == "done"
        }
        skipped = [n for n in graph.ids if self._status(n) == "skipped"]
        try:
            value = self.coordination.output(outputs, graph)
        except InvalidInput as exc:
            await self.step.stop(
                RunStatus.FAILED,
                f"{exc.message}; {len(outputs)} subtask(s) completed",
                error={"code": "output_invalid", "message": exc.message},
            )
            return
        except Exception as exc:  # the developer's aggregate raised: the run says so, not stuck
            await self.step.stop(
                RunStatus.FAILED,
                f"the coordination's aggregate raised {type(exc).__name__}: {str(exc)[:200]}",
                error={"code": "aggregate_failed", "message": str(exc)[:500]},
            )
            return
        left = f", {len(skipped)} left out ({', '.join(skipped)})" if skipped else ""
        await self.step.finish(value, f"{len(outputs)} subtask(s) completed{left}")

    async def _wait(self, graph: Graph) -> None:
        running = [n for n in graph.ids if self._status(n) == "running"]
        await self.step.stop(
            RunStatus.WAITING_FOR_CHILD,
            f"waiting for {len(running)} subtask(s): {', '.join(running)}",
        )

    # -- abandon: abort or compensate -----------------------------------------------------------

    async def _unwind(self, graph: Graph, failure: SubtaskStep | None) -> None:
        """Abandon the graph: ``failure`` is the subtask whose policy gave up (``None``: the run
        is being aborted - by an operator, or by this coordinator on an earlier drive). Children
        in flight are cancelled (with compensation: aborted with compensation, and waited for);
        then, with compensation, completed subtasks are undone newest first, one child run
        each, waiting as a row between them."""
        session = self.session
        request = self.state.abort
        if failure is None and request is not None and request.by == "coordinator":
            failure = self._failure_of(str(request.step))
        compensate = request is not None or (
            failure is not None and self._policy(failure.capability).then == "compensate"
        )
        if compensate and request is None and failure is not None:
            why = (failure.error or {}).get("message", "failed")
            session.stage(
                CompensationStep(
                    "requested", step=failure.node, by="coordinator",
                    reason=f"subtask {failure.node} failed: {why}",
                )
            )  # fmt: skip
            await session.flush()
        in_flight = [n for n in graph.ids if self._status(n) == "running"]
        if in_flight:
            await self._stop_children(in_flight, compensate=compensate)
            await self._collect()  # a cancelled child's end is journaled now
            if compensate and any(self._status(n) == "running" for n in graph.ids):
                await self._wait(graph)  # aborted children undo their own steps first
                return
        if compensate and not await self._compensate():
            return
        await self._end(failure)

    def _failure_of(self, node: str) -> SubtaskStep | None:
        """The failed result that made this coordinator abandon its graph."""
        steps: list[SubtaskStep] = self.state.subtasks.get(node) or []
        failed = [s for s in steps if s.phase == "result" and s.ok is False]
        return failed[-1] if failed else None

    async def _stop_children(self, nodes: Sequence[str], *, compensate: bool) -> None:
        stop = self.pattern.abort if compensate else self.pattern.cancel
        if stop is None:
            return
        for node in nodes:
            last = self.state.subtasks[node][-1]
            child_id = child_run_id(self.run.id, str(last.key))
            reason = f"coordinator {self.run.id} abandoned its graph"
            try:
                if compensate:
                    await stop(child_id, reason, compensate=True, by="coordinator")
                else:
                    await stop(child_id, reason, by="coordinator")
            except AutonomicError as exc:  # it ended meanwhile, or was never created
                log.debug("run %s: stopping child %s: %s", self.run.id, child_id, exc)

    async def _compensate(self) -> bool:
        """Undo the completed subtasks newest first; ``False`` while waiting for one, or once
        the run left RUNNING (a compensation failed)."""
        session = self.session
        plan = undo_plan(
            [c for c in completed_steps(self.state) if c.step in self.state.subtasks],
            self._compensators(),
        )
        for undo in plan:
            seen = self.state.compensations.get(undo.step)
            if (
                seen is not None
                and seen.phase in ("skipped", "result")
                and (seen.phase == "skipped" or seen.ok)
            ):
                continue
            if undo.tool is None:
                session.stage(
                    CompensationStep(
                        "skipped", step=undo.step, of=undo.of,
                        reason=f"capability {undo.of} declares no compensation",
                    )
                )  # fmt: skip
                await session.flush()
                continue
            attempt = 1  # a compensation that failed is tried again by a new child run
            if seen is not None and seen.phase == "result" and not seen.ok:
                attempt = _attempt_of(str(seen.key)) + 1
            key = f"{self.run.id}:undo:{undo.step}" + (f":{attempt}" if attempt > 1 else "")
            if seen is None or seen.phase != "intent":
                try:
                    route = self.delegation.route_capability(
                        undo.tool, dict(undo.arguments), health=await self._healths()
                    )
                except InvalidInput as exc:
                    await self._compensation_failed(undo.step, undo.of, undo.tool, exc.message)
                    return False
                seen = CompensationStep(
                    "intent", step=undo.step, tool=undo.tool, of=undo.of,
                    arguments=dict(undo.arguments), key=key, agent=route.agent.name,
                )  # fmt: skip
                session.stage(seen)
                await session.flush()  # write-ahead: durable before the child exists
            key = str(seen.key)
            handoff = Handoff(
                key, str(seen.agent), undo.tool, dict(seen.arguments or {}), f"undo:{undo.step}"
            )
            session.fault("before_effect")
            await session.check_lease()
            child = await self.delegation.child(self.run, self.state, handoff)
            session.fault("after_effect")
            end = self.delegation.ended(child) if child is not None else None
            if end is None:
                await self.step.stop(
                    RunStatus.WAITING_FOR_CHILD,
                    f"compensating subtask {undo.step} ({undo.of}) with {undo.tool}",
                )
                return False
            session.stage(
                CompensationStep(
                    "result", step=undo.step, tool=undo.tool, of=undo.of, key=key,
                    agent=seen.agent, ok=end.ok, output=end.output if end.ok else None,
                    error=None if end.ok else end.message,
                )
            )  # fmt: skip
            session.fault("compensated")
            await session.flush()
            if not end.ok:
                await self._compensation_failed(undo.step, undo.of, undo.tool, end.message)
                return False
        return True

    async def _compensation_failed(self, node: str, of: str, tool: str, why: str) -> None:
        await self.step.stop(
            RunStatus.SUSPENDED,
            f"compensating subtask {node} ({of}) with {tool} failed: {why}; "
            f"`autonomic resume {self.run.id} --force` tries it again",
            error={"code": "compensation_failed", "step": node, "message": why},
        )

    def _compensators(self) -> dict[str, Compensator]:
        out: dict[str, Compensator] = {}
        for name in self._capabilities():
            cap = self.delegation.capability(name)
            if cap is None or cap.compensation is None:
                continue
            undo = self.delegation.capability(cap.compensation)
            params = tuple((undo.input_schema or {}).get("properties") or {}) if undo else ()
            out[name] = Compensator(cap.compensation, params)
        return out

    async def _end(self, failure: SubtaskStep | None) -> None:
        undone = sum(1 for c in self.state.compensations.values() if c.phase == "result" and c.ok)
        not_undone = sum(1 for c in self.state.compensations.values() if c.phase == "skipped")
        undo = f"; compensated {undone} subtask(s)" if self.state.abort is not None else ""
        if not_undone:
            undo += f", {not_undone} without a compensation"
        request = self.state.abort
        if request is not None and request.by != "coordinator":
            await self.step.stop(
                RunStatus.CANCELLED, f"aborted by {request.by}: {request.reason}{undo}"
            )
            return
        node = failure.node if failure is not None else "?"
        error = dict(failure.error or {}) if failure is not None else {}
        what = f"{node} ({failure.capability})" if failure is not None else node
        await self.step.stop(
            RunStatus.FAILED,
            f"subtask {what} failed and its policy gives up: "
            f"{error.get('message', 'failed')}; the graph was abandoned{undo}",
            error={**error, "code": "subtask_failed", "node": node},
        )


def _attempt_of(key: str) -> int:
    """The attempt a compensation's key names (``RUN:undo:NODE`` is the first, ``...:N`` the
    N-th; node ids hold no colon)."""
    last = key.rsplit(":", 1)[-1]
    return int(last) if key.count(":") >= 3 and last.isdigit() else 1


def _text(task: Any) -> str:
    return task if isinstance(task, str) else canonical_json(task)


def _json(text: str) -> Any:
    """The JSON in a model's answer (fences stripped); ``None`` when there is none."""
    body = _FENCE.sub("", text.strip())
    try:
        return json.loads(body)
    except json.JSONDecodeError:
        start, end = body.find("{"), body.rfind("}")
        if 0 <= start < end:
            try:
                return json.loads(body[start : end + 1])
            except json.JSONDecodeError:
                return None
        return None
