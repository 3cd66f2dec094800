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
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any, NamedTuple

from autonomic.core.canonical import canonical_json
from autonomic.core.coordination import TASK
from autonomic.core.entries import CompensationStep, SubtaskStep, ToolIntent, ToolResult
from autonomic.core.graph import parse_graph
from autonomic.core.journal import Entry
from autonomic.core.run import Run, RunStatus
from autonomic.core.state import RunState
from autonomic.engine.agent import Agent, AgentRegistry
from autonomic.engine.health import Health
from autonomic.errors import EventRejected, InvalidInput, NotFound, RunExists
from autonomic.governance.action import ActionKind, Hop, ProposedAction
from autonomic.governance.circuits import Circuits, agent_key
from autonomic.governance.decision import Decision
from autonomic.governance.runaway.delegation import DelegationGuard, DelegationPolicy
from autonomic.governance.runaway.normalise import normalise_text
from autonomic.governance.runaway.state import GuardState
from autonomic.governance.runaway.state import Handoff as GuardHandoff
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


class Handoff(NamedTuple):
    """One hand-off to a child run, whoever journaled it: a ``delegate`` call's intent, a
    coordinator's subtask ``dispatch``, or a coordinator's compensation ``intent``. ``key`` names
    the child (``child_run_id``)."""

    key: str
    agent: str
    capability: str | None
    task: Any
    call_id: str

    @staticmethod
    def of_intent(intent: ToolIntent) -> Handoff:
        args = intent.arguments
        cap = args.get("capability")
        return Handoff(
            intent.key, str(args.get("agent", "")), str(cap) if cap else None, args.get("task"),
            intent.call_id,
        )  # fmt: skip

    @staticmethod
    def of_subtask(dispatch: SubtaskStep) -> Handoff:
        """A coordinator's ``dispatch`` entry as a hand-off."""
        return Handoff(
            str(dispatch.key), str(dispatch.agent), dispatch.capability, dispatch.task,
            f"subtask:{dispatch.node}:{dispatch.attempt}",
        )  # fmt: skip


class Outcome(NamedTuple):
    """How a child run ended, as its parent reads it: ``ok`` with the ``output`` (checked
    against the capability's output schema), or the error ``code`` and ``message``."""

    ok: bool
    output: Any = None
    code: str = ""
    message: str = ""


def handoffs(entries: Sequence[Entry]) -> dict[str, Handoff]:
    """Every hand-off a parent's journal holds, by key."""
    out: dict[str, Handoff] = {}
    for entry in entries:
        body = entry.body
        if isinstance(body, ToolIntent) and body.tool == DELEGATE_TOOL:
            out[body.key] = Handoff.of_intent(body)
        elif isinstance(body, SubtaskStep) and body.phase == "dispatch" and body.key:
            out[body.key] = Handoff.of_subtask(body)
        elif (
            isinstance(body, CompensationStep)
            and body.phase == "intent"
            and body.key
            and body.agent
        ):
            out[body.key] = Handoff(
                body.key, body.agent, body.tool, dict(body.arguments or {}), f"undo:{body.step}"
            )
    return out


def waiting_for(state: RunState) -> list[str]:
    """The keys of the hand-offs a parent has made and not yet recorded the end of: pending
    ``delegate`` calls, subtasks in flight, compensations in flight."""
    keys = [
        item.intent.key
        for item in state.pending_calls()
        if item.intent is not None and item.intent.tool == DELEGATE_TOOL
    ]
    for steps in state.subtasks.values():
        if steps[-1].phase == "dispatch" and steps[-1].key:
            keys.append(steps[-1].key)
    for comp in state.compensations.values():
        if comp.phase == "intent" and comp.agent and comp.key:
            keys.append(comp.key)
    return keys


def handoffs_in_flight(state: RunState) -> int:
    """How many hand-offs a parent has in flight at once: those it waits for, and the
    ``delegate`` calls of its latest turn not yet handed off (a fan-out is made call by call)."""
    waited = waiting_for(state)
    fresh = sum(
        1
        for item in state.pending_calls()
        if item.intent is None and item.call.name == DELEGATE_TOOL
    )
    return max(1, len(waited) + fresh)


def wakes(
    state: RunState,
    keys: Sequence[str],
    ended: Mapping[str, Run],
    succeeded: Callable[[Run], bool] = lambda run: run.status is RunStatus.COMPLETED,
) -> bool:
    """Whether the children of ``ended`` (by hand-off key; ``keys`` are all the parent waits
    for) give a waiting parent something to do (``succeeded``: whether a child's end is its
    subtask's success). A ``delegate`` turn's results are read by the
    model together, so its parent wakes when the last of them ends; a coordinator wakes when a
    subtask failed (its policy acts now), when a subtask it has not started becomes ready, or
    when nothing is left in flight; a compensation wakes it at once. Waking a parent for
    nothing costs a claim and a commit per child, which a fan-out of many would pay in full."""
    if len(ended) == len(keys):
        return True
    if any(c.phase == "intent" and c.key in ended for c in state.compensations.values()):
        return True
    if state.graph is None or state.graph.graph is None:
        return False
    by_key = {
        steps[-1].key: node
        for node, steps in state.subtasks.items()
        if steps[-1].phase == "dispatch" and steps[-1].key
    }
    done = set(state.subtasks_done)
    for key, child in ended.items():
        if key not in by_key:
            continue
        if not succeeded(child):
            return True
        done.add(by_key[key])
    graph = parse_graph(state.graph.graph, max_nodes=10_000, given=frozenset({TASK}))
    return any(node not in state.subtasks for node in graph.ready(done))


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
        self._checked: dict[str, tuple[int, int]] = {}
        """Waiting parents the sweep looked at and left, with their (version, ended children)
        then: looked at again only once one changes."""
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

    def _choose(
        self,
        to: str,
        *,
        exclude: Sequence[str] = (),
        health: Mapping[str, Health] | None = None,
    ) -> Route:
        """The agent named ``to``, or the best agent with capability ``to``: not one of
        ``exclude``, not behind an open circuit; agents that have been failing (``health``: by
        agent, over their recent runs for this capability) after the others; then the cheapest,
        then the fastest (measured median when known, else declared), then by name."""
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
        left = [(cap, a) for cap, a in offering if a.name not in exclude]
        if not left:
            raise InvalidInput(
                f"every agent with capability {to!r} has been tried "
                f"({', '.join(a.name for _, a in offering)})",
                hint="add another agent with the capability, or retry later",
            )
        healthy = [
            (cap, a) for cap, a in left if not self.circuits.state(agent_key(a.name)).refusing
        ]
        if not healthy:
            raise InvalidInput(
                f"every agent with capability {to!r} has an open circuit "
                f"({', '.join(a.name for _, a in left)})",
                hint="try again later, or hand the task to another capability",
            )
        seen = health or {}

        def rank(ca: tuple[Capability, Agent]) -> tuple[bool, float, float, str]:
            cap, a = ca
            h = seen.get(a.name)
            failing = h is not None and h.ended >= 4 and (h.success_rate or 0.0) < 0.5
            latency = h.p50 if h is not None and h.p50 is not None else cap.latency
            return failing, cap.cost, latency, a.name

        cap, best = min(healthy, key=rank)
        return Route(best, cap)

    def route_capability(
        self,
        capability: str,
        task: Any,
        *,
        exclude: Sequence[str] = (),
        health: Mapping[str, Health] | None = None,
    ) -> Route:
        """A coordinator's routing of one subtask: the best agent with ``capability`` (see
        ``_choose``) with ``task`` checked against the capability's input schema;
        ``InvalidInput`` with the reason otherwise."""
        chosen = self._choose(capability, exclude=exclude, health=health)
        if chosen.capability is None or chosen.capability.name != capability:
            raise InvalidInput(f"no agent declares capability {capability!r}")
        chosen.capability.check_input(task)
        return chosen

    def capability(self, name: str) -> Capability | None:
        """The capability ``name`` as the first agent declaring it declares it."""
        for agent_name in self.agents.names():
            found = self.agents.get(agent_name).capability(name)
            if found is not None:
                return found
        return None

    # -- act ------------------------------------------------------------------------------------

    async def child(self, parent: Run, state: RunState, handoff: Handoff) -> Run | None:
        """The step's side of the hand-off: its child, created now without a bus; on a bus,
        the child if the event's consumer has created it already (else ``None``)."""
        if not self.via_bus:
            return await self.hand_off(parent, state, handoff)
        try:
            return await self.store.get_run(child_run_id(parent.id, handoff.key))
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
        handoff = handoffs(entries).get(key)
        if handoff is None:
            raise EventRejected(f"run {parent_id} journaled no hand-off with key {key!r}")
        if data.get("child_run_id") != child_run_id(parent.id, key):
            raise EventRejected(f"delegation event names the wrong child for {parent_id}:{key}")
        try:
            await self.store.get_run(child_run_id(parent.id, key))
            return None
        except NotFound:
            pass
        return await self.hand_off(parent, state, handoff, processed=processed)

    async def hand_off(
        self,
        parent: Run,
        state: RunState,
        handoff: Handoff,
        *,
        processed: Processed | None = None,
    ) -> Run:
        """Create the child of ``handoff`` (once: a second call finds the first's child)."""
        child_id = child_run_id(parent.id, handoff.key)
        try:
            return await self.store.get_run(child_id)
        except NotFound:
            pass
        target = self.agents.get(handoff.agent)
        capability = target.capability(handoff.capability) if handoff.capability else None
        task = handoff.task
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
                "call_id": handoff.call_id,
            }
        }
        share = self._budget(state.budget, together=handoffs_in_flight(state))
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

    def _budget(self, budget: Mapping[str, Any] | None, *, together: int = 1) -> dict[str, Any]:
        """The child's share of the parent's budget: ``budget_share`` of its wall clock, and of
        its tokens and cost split between the ``together`` hand-offs in flight at once (a
        fan-out of ten children shares one half, it does not get ten)."""
        if not budget:
            return {}
        out: dict[str, Any] = {}
        for key in _SHARED:
            value = budget.get(key)
            if isinstance(value, int | float) and not isinstance(value, bool):
                shared = value * self.budget_share
                if key != "wall_seconds":  # children in parallel each have the time
                    shared /= max(1, together)
                out[key] = int(shared) if isinstance(value, int) else shared
        return out

    def ended(self, child: Run) -> Outcome | None:
        """What the child's state means to its parent; ``None`` while it still works (pending,
        queued, running, waiting for a human or for its own child)."""
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
                        return Outcome(
                            False, None, "capability_output_invalid",
                            f"{name} answered, but {exc.message}; the subtask failed",
                        )  # fmt: skip
            return Outcome(True, output)
        if status in (RunStatus.FAILED, RunStatus.CANCELLED):
            return Outcome(
                False, None, f"delegation_{status.value.lower()}",
                f"{name} {status.value}: {child.status_reason or 'no reason given'}",
            )  # fmt: skip
        if status is RunStatus.SUSPENDED:
            return Outcome(
                False, None, "delegation_suspended",
                f"{name} SUSPENDED: {child.status_reason or 'no reason given'}; it waits for an "
                "operator - hand the subtask elsewhere or report it",
            )  # fmt: skip
        return None

    def outcome(self, child: Run, call: ToolIntent) -> ToolResult | None:
        """What the child's state means to its parent's ``delegate`` call (``ended``)."""
        end = self.ended(child)
        if end is None:
            return None
        if end.ok:
            return ToolResult(
                call.call_id,
                DELEGATE_TOOL,
                ok=True,
                output={"child": child.id, "agent": child.agent, "output": end.output},
            )
        return ToolResult.failed(call.call_id, DELEGATE_TOOL, end.code, end.message)

    # -- the way back ---------------------------------------------------------------------------

    async def deliver(self, parent_id: str, reopen: Callable[[str, str], Awaitable[Any]]) -> bool:
        """Reopen ``parent_id`` if it waits for children and what has ended of them lets it
        act (``wakes``); ``True`` if it did. Idempotent: a parent not waiting, or waiting for
        children whose ends change nothing yet, is left."""
        try:
            parent = await self.store.get_run(parent_id)
        except NotFound:
            return False
        if parent.status is not RunStatus.WAITING_FOR_CHILD:
            return False
        from autonomic.core.state import fold

        state = fold(parent.id, await self.store.load_journal(parent.id))
        keys = waiting_for(state)
        if not keys:
            return False
        children = {c.id: c for c in await self.store.children(parent.id)}
        ended: dict[str, Run] = {}
        for key in keys:
            child = children.get(child_run_id(parent.id, key))
            if child is not None and (child.status.terminal or child.status is RunStatus.SUSPENDED):
                ended[key] = child  # (on a bus a child may not exist yet: its event makes it)
        if not ended or not wakes(state, keys, ended, self._succeeded):
            return False
        child = next(iter(ended.values()))
        more = f" (and {len(ended) - 1} more)" if len(ended) > 1 else ""
        await reopen(parent_id, f"child run {child.id} is {child.status.value}{more}")
        return True

    def _succeeded(self, child: Run) -> bool:
        end = self.ended(child)
        return end is not None and end.ok

    async def sweep(self, reopen: Callable[[str, str], Awaitable[Any]], *, limit: int = 200) -> int:
        """Deliver to every waiting parent whose child has ended (the recovery path: a worker
        that died between the child's end and the parent's reopening); how many it reopened."""
        reopened = 0
        waiting = await self.store.parents_to_resume(limit=limit)
        seen = {w.run_id for w in waiting}
        for gone in [k for k in self._checked if k not in seen]:
            del self._checked[gone]
        for parent in waiting:
            mark = (parent.version, parent.ended)
            if self._checked.get(parent.run_id) == mark:
                continue  # looked at as it is now: nothing ended since
            if await self.deliver(parent.run_id, reopen):
                reopened += 1
            else:
                self._checked[parent.run_id] = mark
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
                GuardHandoff(seq, a["agent"], b["agent"], normalise_text(b["subject"]), vector)
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
