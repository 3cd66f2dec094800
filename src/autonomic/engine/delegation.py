"""Durable delegation: a step hands a subtask to another agent as a child run, and waits as a row.

The ``delegate`` tool (``tools/delegate.py``) is taken by the step protocol like any call, with
three differences, all here:

1. **Route.** ``Delegation.route`` resolves whom the model named: an agent (which must be one the
   delegating agent ``delegates_to``) or a capability (the agents declaring it, skipping those whose
   circuit is open, the cheapest then the fastest first), checks the task against the
   capability's input schema, and writes the chosen agent into the call's arguments - so the
   ``tool.intent`` records it and a replay never routes again. A bad hand-off (unknown agent, a
   task breaking the schema) is the call's error result, with the reason; no child exists.
2. **Decide.** ``DelegationGate`` runs the runaway library's delegation guards (depth, cycle,
   ping-pong: ``governance/runaway/delegation.py``) over the chain the run carries in
   ``metadata["delegation"]``; its decision is journaled like every gate's, before any effect.
3. **Act.** The intent is committed (the hand-off is durable before the child exists), then the
   child is created under a run id derived from (parent, step) - ``child_run_id`` - so creating it
   again after a crash finds it (``RunExists``) instead of making a second one. The child gets the
   parent's tenant and correlation id, ``parent_run_id``, its depth and chain, a share of the
   parent's budget, and its capability (a child over the capability's fleet-wide concurrency
   limit is created *queued*: no worker claims it until ``Store.admit`` gives it a slot). The
   parent then moves to WAITING_FOR_CHILD, holding no worker.

**The way back.** When the child ends (or suspends) ``deliver`` reopens the parent (WAITING_FOR_CHILD
-> RUNNING, version-checked, a no-op when it is not waiting): idempotent, so the child's worker, a
worker's sweep of waiting parents (``sweep``, the recovery path after a crash) and a bus consumer
may all try. The parent's next drive finds its delegate call started without a result: the replay
rule re-runs the hand-off (finding the child), reads the child's outcome (``outcome``) and records
it as the call's result through the protocol's hooks (screened: a child's answer is untrusted) -
exactly once, in the parent's own fenced commit. A completed child's answer is checked against the
capability's output schema (a violation fails the subtask); a failed, cancelled or suspended child
is an error result the parent's model reads and can act on. A child waiting for a human keeps its
parent waiting.

Cancelling a parent cancels its children (``Engine.cancel``), and a worker that claims a child
whose parent has ended cancels it instead of driving it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

from autonomic.core.canonical import canonical_json
from autonomic.core.entries import ToolIntent, ToolResult
from autonomic.core.run import Run, RunStatus
from autonomic.core.state import RunState
from autonomic.engine.agent import Agent, AgentRegistry
from autonomic.errors import EventRejected, InvalidInput, NotFound, RunExists
from autonomic.governance.action import ActionKind, Hop, ProposedAction
from autonomic.governance.circuits import Circuits, agent_key
from autonomic.governance.decision import Decision
from autonomic.governance.runaway.delegation import DelegationGuard, DelegationPolicy
from autonomic.governance.runaway.normalise import normalise_text
from autonomic.governance.runaway.state import GuardState, Handoff
from autonomic.ports.embedder import Embedder
from autonomic.ports.store import Processed, Store
from autonomic.tools.capability import Capability
from autonomic.tools.delegate import DELEGATE_TOOL

KEY = "delegation"
"""The run metadata key a child carries: parent, depth, chain, capability, the call."""
BUDGET_SHARE = 0.5
"""The share of the parent's token, cost and wall-clock budget a child gets by default."""
GATE_NAME = "delegation"
_SHARED = ("tokens", "cost", "wall_seconds")

Start = Callable[..., Awaitable[Run]]


def child_run_id(parent_id: str, key: str) -> str:
    """The child's run id, derived from the parent and the hand-off's idempotency key
    (``run_id:seq``): the same hand-off always names the same child."""
    return "run_" + hashlib.sha256(f"{parent_id}|{key}".encode()).hexdigest()[:32]


def subject(task: Any) -> str:
    """What a hand-off is about, as the guards compare it."""
    return task if isinstance(task, str) else canonical_json(task)


def chain_of(run: Run, task: Any) -> list[dict[str, str]]:
    """The delegation chain that led to ``run``, root first (a root run: itself and its task)."""
    held = run.metadata.get(KEY)
    if isinstance(held, Mapping) and isinstance(held.get("chain"), list):
        return [dict(h) for h in held["chain"]]
    return [{"agent": run.agent, "subject": subject(task)}]


def depth_of(run: Run) -> int:
    """How many hand-offs from the root run led to ``run`` (0 for a root run)."""
    held = run.metadata.get(KEY)
    return int(held.get("depth", 0)) if isinstance(held, Mapping) else 0


@dataclass(frozen=True)
class Route:
    """Whom a hand-off goes to."""

    agent: Agent
    capability: Capability | None


class Delegation:
    """The engine's side of the ``delegate`` tool (see the module docstring)."""

    def __init__(
        self,
        store: Store,
        agents: AgentRegistry,
        start: Start,
        circuits: Circuits,
        *,
        budget_share: float = BUDGET_SHARE,
    ) -> None:
        if not 0 < budget_share <= 1:
            raise InvalidInput(f"delegation budget_share must be in (0, 1], got {budget_share}")
        self.store = store
        self.agents = agents
        self.start = start
        self.circuits = circuits
        self.budget_share = budget_share
        self.via_bus = False
        """Set by a worker on a bus: the child is created by whoever consumes the hand-off's
        ``autonomic.delegation.requested`` event (``requested``), not by the step itself."""

    # -- route ----------------------------------------------------------------------------------

    def route(self, agent: Agent, arguments: dict[str, Any]) -> dict[str, Any]:
        """The call's arguments with the agent chosen (``agent``) and its capability; raises
        ``InvalidInput`` saying what is wrong with the hand-off and how to fix it."""
        to, task = str(arguments.get("to", "")), arguments.get("task")
        if to not in agent.delegates_to:
            raise InvalidInput(
                f"{agent.name} may not delegate to {to!r}",
                hint=f"it delegates to: {', '.join(agent.delegates_to) or 'nobody'}",
            )
        chosen = self._choose(to)
        if task is None or task == "" or task == {}:
            raise InvalidInput("a delegated task is empty", hint="give the subtask to do")
        if chosen.capability is not None:
            chosen.capability.check_input(task)
        return {
            **arguments,
            "agent": chosen.agent.name,
            "capability": chosen.capability.name if chosen.capability else None,
        }

    def _choose(self, to: str) -> Route:
        if to in self.agents.names():
            target = self.agents.get(to)
            return Route(target, target.capabilities[0] if len(target.capabilities) == 1 else None)
        offering = [
            (cap, a)
            for a in (self.agents.get(n) for n in self.agents.names())
            if (cap := a.capability(to)) is not None
        ]
        if not offering:
            known = ", ".join(self.agents.names()) or "none"
            raise InvalidInput(
                f"no agent or capability named {to!r} is registered (agents: {known})",
                hint="register the agent with this worker (--agent / AUTONOMIC_AGENTS)",
            )
        healthy = [
            (cap, a) for cap, a in offering if not self.circuits.state(agent_key(a.name)).refusing
        ]
        if not healthy:
            raise InvalidInput(
                f"every agent with capability {to!r} has an open circuit "
                f"({', '.join(a.name for _, a in offering)})",
                hint="try again later, or hand the task to another capability",
            )
        cap, best = min(healthy, key=lambda ca: (ca[0].cost, ca[0].latency, ca[1].name))
        return Route(best, cap)

    # -- act ------------------------------------------------------------------------------------

    async def child(self, parent: Run, state: RunState, intent: ToolIntent) -> Run | None:
        """The step's side of the hand-off: the child of ``intent``, created now without a bus;
        on a bus, the child if the event's consumer has created it already (else ``None``)."""
        if not self.via_bus:
            return await self.hand_off(parent, state, intent)
        try:
            return await self.store.get_run(child_run_id(parent.id, intent.key))
        except NotFound:
            return None

    async def requested(self, data: Mapping[str, Any], processed: Processed) -> Run | None:
        """Create the child an ``autonomic.delegation.requested`` event asks for, with the event
        in the inbox in the same transaction. The event is untrusted: only a hand-off its
        parent's journal holds is made, from the journal's arguments; ``EventRejected``
        otherwise. ``None`` when the child exists already (a redelivery)."""
        from autonomic.core.state import fold

        parent_id, key = str(data.get("parent_run_id", "")), str(data.get("key", ""))
        try:
            parent = await self.store.get_run(parent_id)
        except NotFound:
            raise EventRejected(f"delegation event for unknown run {parent_id!r}") from None
        entries = await self.store.load_journal(parent.id)
        state = fold(parent.id, entries)
        intent = next(
            (e.body for e in entries if isinstance(e.body, ToolIntent) and e.body.key == key),
            None,
        )
        if intent is None or intent.tool != DELEGATE_TOOL:
            raise EventRejected(f"run {parent_id} journaled no hand-off with key {key!r}")
        if data.get("child_run_id") != child_run_id(parent.id, key):
            raise EventRejected(f"delegation event names the wrong child for {parent_id}:{key}")
        try:
            await self.store.get_run(child_run_id(parent.id, key))
            return None
        except NotFound:
            pass
        return await self.hand_off(parent, state, intent, processed=processed)

    async def hand_off(
        self,
        parent: Run,
        state: RunState,
        intent: ToolIntent,
        *,
        processed: Processed | None = None,
    ) -> Run:
        """Create the child of ``intent`` (once: a second call finds the first's child)."""
        child_id = child_run_id(parent.id, intent.key)
        try:
            return await self.store.get_run(child_id)
        except NotFound:
            pass
        args = intent.arguments
        target = self.agents.get(str(args["agent"]))
        capability = target.capability(str(args["capability"])) if args.get("capability") else None
        task = args["task"]
        chain = [
            *chain_of(parent, parent.input.get("task")),
            {"agent": target.name, "subject": subject(task)},
        ]
        metadata: dict[str, Any] = {
            KEY: {
                "parent": parent.id,
                "depth": depth_of(parent) + 1,
                "chain": chain,
                "capability": capability.name if capability else None,
                "call_id": intent.call_id,
            }
        }
        share = self._budget(state.budget)
        if share:
            metadata["budget"] = share
        try:
            child = await self.start(
                target,
                task,
                tenant=parent.tenant,
                run_id=child_id,
                correlation_id=parent.correlation_id or parent.id,
                metadata=metadata,
                parent_run_id=parent.id,
                capability=capability.name if capability else None,
                queued=capability is not None and capability.concurrency is not None,
                processed=processed,
            )
        except RunExists:
            return await self.store.get_run(child_id)
        if capability is not None and capability.concurrency is not None:
            await self.store.admit(capability.name, capability.concurrency)
            child = await self.store.get_run(child_id)
        return child

    def _budget(self, budget: Mapping[str, Any] | None) -> dict[str, Any]:
        """The child's share of the parent's budget (tokens, cost, wall clock)."""
        if not budget:
            return {}
        out: dict[str, Any] = {}
        for key in _SHARED:
            value = budget.get(key)
            if isinstance(value, int | float) and not isinstance(value, bool):
                shared = value * self.budget_share
                out[key] = int(shared) if isinstance(value, int) else shared
        return out

    def outcome(self, child: Run, call: ToolIntent) -> ToolResult | None:
        """What the child's state means to its parent's call; ``None`` while it still works
        (pending, queued, running, waiting for a human or for its own child)."""
        status = child.status
        name = f"child run {child.id} ({child.agent})"
        if status is RunStatus.COMPLETED:
            output = child.output
            if child.capability is not None:
                try:
                    cap = self.agents.get(child.agent).capability(child.capability)
                except NotFound:
                    cap = None
                if cap is not None:
                    try:
                        output = cap.output(child.output)
                    except InvalidInput as exc:
                        return ToolResult.failed(
                            call.call_id, DELEGATE_TOOL, "capability_output_invalid",
                            f"{name} answered, but {exc.message}; the subtask failed",
                        )  # fmt: skip
            return ToolResult(
                call.call_id,
                DELEGATE_TOOL,
                ok=True,
                output={"child": child.id, "agent": child.agent, "output": output},
            )
        if status in (RunStatus.FAILED, RunStatus.CANCELLED):
            return ToolResult.failed(
                call.call_id, DELEGATE_TOOL, f"delegation_{status.value.lower()}",
                f"{name} {status.value}: {child.status_reason or 'no reason given'}",
            )  # fmt: skip
        if status is RunStatus.SUSPENDED:
            return ToolResult.failed(
                call.call_id, DELEGATE_TOOL, "delegation_suspended",
                f"{name} SUSPENDED: {child.status_reason or 'no reason given'}; it waits for an "
                "operator - hand the subtask elsewhere or report it",
            )  # fmt: skip
        return None

    # -- the way back ---------------------------------------------------------------------------

    async def deliver(self, parent_id: str, reopen: Callable[[str, str], Awaitable[Any]]) -> bool:
        """Reopen ``parent_id`` if it waits for a child that has an outcome now; ``True`` if it
        did. Idempotent: a parent not waiting, or waiting for a child still at work, is left."""
        try:
            parent = await self.store.get_run(parent_id)
        except NotFound:
            return False
        if parent.status is not RunStatus.WAITING_FOR_CHILD:
            return False
        waited = await self._waited_for(parent)
        if waited is None:
            return False
        try:
            child = await self.store.get_run(waited)
        except NotFound:  # on a bus, not created yet: the hand-off's event will
            return False
        if not (child.status.terminal or child.status is RunStatus.SUSPENDED):
            return False
        await reopen(parent_id, f"child run {child.id} is {child.status.value}")
        return True

    async def _waited_for(self, parent: Run) -> str | None:
        """The child run the parent's last transition says it waits for."""
        from autonomic.core.state import fold

        state = fold(parent.id, await self.store.load_journal(parent.id))
        for item in state.pending_calls():
            if item.intent is not None and item.intent.tool == DELEGATE_TOOL:
                return child_run_id(parent.id, item.intent.key)
        return None

    async def sweep(self, reopen: Callable[[str, str], Awaitable[Any]], *, limit: int = 200) -> int:
        """Deliver to every waiting parent whose child has ended (the recovery path: a worker
        that died between the child's end and the parent's reopening); how many it reopened."""
        reopened = 0
        for parent_id in await self.store.parents_to_resume(limit=limit):
            if await self.deliver(parent_id, reopen):
                reopened += 1
        return reopened

    async def admit(self) -> int:
        """Admit queued children of every limited capability this process knows."""
        admitted = 0
        for name in self.agents.names():
            for cap in self.agents.get(name).capabilities:
                if cap.concurrency is not None:
                    admitted += await self.store.admit(cap.name, cap.concurrency)
        return admitted


class DelegationGate:
    """The delegation guards (depth, cycle, ping-pong) as a gate on every ``delegate`` call."""

    name = GATE_NAME

    def __init__(
        self, policy: DelegationPolicy | None = None, embedder: Embedder | None = None
    ) -> None:
        self.guard = DelegationGuard(policy)
        self.embedder = embedder

    async def check(self, action: ProposedAction) -> Decision | None:
        if action.tool != DELEGATE_TOOL or action.run is None or action.state is None:
            return None
        run = action.run
        target = str(action.arguments.get("agent") or action.arguments.get("to", ""))
        task = action.arguments.get("task")
        chain = chain_of(run, run.input.get("task"))
        history = GuardState(self.embedder)
        for seq, (a, b) in enumerate(pairwise(chain), start=1):
            vector = _vector(history, b["subject"])
            history.handoffs.append(
                Handoff(seq, a["agent"], b["agent"], normalise_text(b["subject"]), vector)
            )
        proposed = ProposedAction(
            ActionKind.DELEGATE,
            agent=run.agent,
            target=target,
            subject=subject(task),
            chain=tuple(Hop(h["agent"], h["subject"]) for h in chain),
            tenant=run.tenant,
        )
        findings = self.guard.check(proposed, history)
        if not findings:
            return None
        decided = Decision.of_findings(findings, gate=GATE_NAME)
        return Decision(
            decided.verdict,
            decided.explanation,
            gate=GATE_NAME,
            evidence={
                "code": decided.code,
                "finding": dict(decided.findings[0].evidence),
                # every guard that objected (a ping-pong in a nested chain is also a cycle)
                "findings": [{"code": f.code, "reason": f.reason} for f in decided.findings],
            },
            findings=decided.findings,
        )


def _vector(state: GuardState, text: str) -> Any:
    norm = normalise_text(text)
    return state.embedder.embed([norm])[0] if norm else None
