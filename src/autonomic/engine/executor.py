"""The engine: start runs, claim them under a lease, and drive them through their pattern.

Driving a run is: claim (bump the fence) -> fold the journal -> note a recovery if the run was
already RUNNING -> let the pattern take steps -> release the lease. The engine never trusts memory
over the journal: a run is always rebuilt from its entries, in whatever process picks it up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any, Literal

from autonomic import host_process
from autonomic.core.audit import AuditAct, AuditNote
from autonomic.core.canonical import canonical_json
from autonomic.core.compensation import completed_steps
from autonomic.core.entries import (
    Body,
    CompensationStep,
    RunStarted,
    Settlement,
    ToolIntent,
    Transition,
)
from autonomic.core.journal import GENESIS_HASH, Entry, PackedEntry, record
from autonomic.core.run import Lease, Run, RunChanges, RunStatus, check_transition
from autonomic.core.state import RunState, fold
from autonomic.engine.agent import Agent, AgentRegistry
from autonomic.engine.compensation import Compensate
from autonomic.engine.coordinator import Coordinate
from autonomic.engine.delegation import GATE_NAME as DELEGATION_GATE
from autonomic.engine.delegation import Delegation, DelegationGate
from autonomic.engine.failure import Failure, scrub, store_failure
from autonomic.engine.faults import Faults, NoFaults
from autonomic.engine.gatekeeper import Gatekeeper
from autonomic.engine.hooks import (
    BudgetHook,
    CircuitHook,
    CommitCallback,
    CompressionHook,
    ScreeningHook,
    ToolCircuitHook,
    exact_estimate,
)
from autonomic.engine.hot_state import HotState
from autonomic.engine.patterns.react import ReAct
from autonomic.engine.planning import PlanningHook
from autonomic.engine.session import RunInterrupted, RunSession
from autonomic.engine.step import Hook, Hooks, StepProtocol, overrides, run_priority
from autonomic.errors import (
    ConfigError,
    IllegalTransition,
    InvalidInput,
    LeaseLost,
    NotFound,
    StaleVersion,
    UserError,
)
from autonomic.gateway.plan_cache import LocalPlanCache, PlanCache
from autonomic.gateway.split import view_spec
from autonomic.governance.boundary import marker
from autonomic.governance.circuits import GATE_NAME as BREAKER_GATE
from autonomic.governance.circuits import Circuits
from autonomic.governance.gate import Gate, GateChain
from autonomic.governance.provenance_gate import GATE_NAME as PROVENANCE_GATE
from autonomic.governance.provenance_gate import ProvenanceGate, ProvenancePolicy
from autonomic.governance.runaway.budget import pinned_budget
from autonomic.governance.runaway.delegation import DelegationPolicy
from autonomic.governance.runaway.gate import GATE_NAME, Runaway
from autonomic.governance.runaway.model_budget import ModelBudget
from autonomic.ports.credentials import CredentialIssuer
from autonomic.ports.model import ManagedModel, Model, RoutedModel
from autonomic.ports.state_cache import StateCache
from autonomic.ports.store import Claim, Processed, Store

ModelResolver = Callable[[str], Model]

log = logging.getLogger("autonomic.engine")


def new_run_id() -> str:
    return f"run_{uuid.uuid4().hex}"


def worker_id() -> str:
    """``host:pid:nonce:PIDNS-START``: enough to tell whether a lease holder on this host is
    still alive (``owner_is_dead``; the pid namespace and start time: ``autonomic.host_process``)."""
    pid, namespace, start = host_process.identity()
    return f"{socket.gethostname()}:{pid}:{uuid.uuid4().hex[:8]}:{namespace}-{start}"


def owner_is_dead(owner: str | None) -> bool:
    """True if ``owner`` is a worker on this host whose process is dead for certain.

    With its pid namespace and start time (ids since 2026-12-06): dead when it is in this pid
    namespace and its pid is gone or another process's (``host_process.proven_dead``) - a live
    worker in another pid namespace with the same host name (a container sharing the host's
    UTS namespace) is not. An older id names only the pid: dead when no process has it."""
    if not owner:
        return False
    host, _, rest = owner.partition(":")
    pid_text, _, rest = rest.partition(":")
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return False
    named = rest.partition(":")[2]  # PIDNS-START, since 2026-12-06
    if named:
        namespace, _, start = named.partition("-")
        if not (namespace.isdigit() and start.isdigit()):
            return False
        return host_process.proven_dead((pid, int(namespace), int(start)))
    return host_process.gone_or_zombie(pid)


class Engine:
    """Runs agents durably on a store.

    Args:
        store: where runs and journals live.
        agents: the agents this process can run and resume.
        models: builds a model from the spec a run recorded.
        lease_ttl: seconds a lease lasts without renewal; renewed by every commit and a heartbeat.
        clock: seconds since the epoch; tests move it to expire leases without sleeping.
        faults: crash hooks for chaos tests.
        on_commit: told about every committed entry (the CLI's live view).
        hooks: capabilities attached to every run's step protocol (``autonomic.engine.step``:
            before a model call, around a tool's effect, on commit, ...).
        gates: the action gates every proposed tool call passes, in order (risk policy, budgets,
            ...); see ``autonomic.governance.gate``. An agent's workflow adds its own gate first.
        runaway: the runaway guards (loop detection, budgets, taint, injection screening); on by
            default, added as the last gate; ``Runaway(enabled=False)`` turns them off.
        circuits: circuit breakers at tool, agent and workflow level (``autonomic.governance.circuits``);
            on by default, their gate added after ``gates``; per process.
        plan_cache: where planning agents' plans are reused (``autonomic.gateway.plan_cache``);
            in-process by default, ``RedisPlanCache`` to share plans between workers, ``None``
            to plan every run.
        credentials: issues the short-lived scoped credentials tools declare
            (``@tool(credentials=[...])``); ``None``: such calls fail with a clear error.
        provenance: trace the values of consequential tool calls to where they appeared and
            pin calls to the plan (``autonomic.governance.provenance_gate``); its gate is added
            before the runaway guards, and with ``mark`` the model reads tool results inside a
            per-run boundary (``autonomic.governance.boundary``). On by default with
            ``ProvenancePolicy()``: the defence must hold for users who never heard of it.
            ``None``: off (say so on purpose; the adversarial suite shows what that costs).
        delegation: the delegation guards' limits (depth, ping-pong exchanges) checked on every
            hand-off to a child run (``autonomic.engine.delegation``); on with the runaway guards.
        state_cache: where runs' folded state is kept for the worker that resumes them
            (``RedisStateCache``; ``autonomic.engine.hot_state``); ``None`` (the default):
            every claim folds the run's journal.
    """

    def __init__(
        self,
        store: Store,
        agents: AgentRegistry,
        models: ModelResolver,
        *,
        lease_ttl: float = 30.0,
        clock: Callable[[], float] = time.time,
        faults: Faults | None = None,
        owner: str | None = None,
        on_commit: Callable[[Entry], None] | None = None,
        hooks: Sequence[Hook] = (),
        gates: GateChain | Sequence[Gate] = (),
        runaway: Runaway | None = None,
        circuits: Circuits | None = None,
        plan_cache: PlanCache | Literal["default"] | None = "default",
        credentials: CredentialIssuer | None = None,
        provenance: ProvenancePolicy | Literal["default"] | None = "default",
        delegation: DelegationPolicy | None = None,
        state_cache: StateCache | None = None,
    ) -> None:
        self.store = store
        self.hot_state = HotState(state_cache) if state_cache is not None else None
        """Reads and keeps runs' folded state through the state cache, when there is one."""
        self.plan_cache = LocalPlanCache() if plan_cache == "default" else plan_cache
        self.gates = gates if isinstance(gates, GateChain) else GateChain(list(gates))
        self.circuits = circuits if circuits is not None else Circuits()
        if not any(g.name == BREAKER_GATE for g in self.gates.gates):
            self.gates.add(self.circuits.gate())
        self.runaway = runaway if runaway is not None else Runaway()
        if provenance == "default":
            provenance = ProvenancePolicy()
        self.provenance = provenance
        if provenance is not None and not any(g.name == PROVENANCE_GATE for g in self.gates.gates):
            self.gates.add(ProvenanceGate(provenance))
        if self.runaway.enabled and not any(g.name == GATE_NAME for g in self.gates.gates):
            self.gates.add(self.runaway.gate())
        if self.runaway.enabled and not any(g.name == DELEGATION_GATE for g in self.gates.gates):
            self.gates.add(DelegationGate(delegation, self.runaway.gate().embedder))
        self.hooks: list[Hook] = list(hooks)
        """Hooks on every run's step protocol (``autonomic.engine.step.Hook``), before the
        engine's own (breakers, planning, compression, budgets, screening)."""
        if on_commit is not None:
            self.hooks.append(CommitCallback(on_commit))
        self.agents = agents
        self._models = models
        self._model_cache: dict[str, Model] = {}
        self._abilities: dict[int, tuple[Model, ManagedModel | None]] = {}
        self.lease_ttl = lease_ttl
        self.clock = clock
        self.faults = faults or NoFaults()
        self.owner = owner or worker_id()
        self.stopping = asyncio.Event()
        self.credentials = credentials
        self.delegation = Delegation(store, agents, self.start, self.circuits)
        """Hands ``delegate`` calls to child runs and brings their outcomes back."""

    async def aclose(self) -> None:
        """Close the models this engine built (a gateway's connection pools and Redis
        connection); the engine can still build them again afterwards."""
        models = list(self._model_cache.values())
        self._model_cache.clear()
        for model in models:
            close = getattr(model, "aclose", None)
            if close is not None:
                await close()
        if self.plan_cache is not None:
            await self.plan_cache.aclose()
        if self.hot_state is not None:
            await self.hot_state.cache.aclose()

    def model_for(self, spec: str) -> Model:
        """The model for ``spec``, built once per engine. A gateway view
        (``gateway:PATH#provider``) is made from the engine's one gateway for ``gateway:PATH``,
        so the planner's and the actor's calls share its rate-limit buckets and breakers."""
        if spec not in self._model_cache:
            base, providers = view_spec(spec)
            if providers is None:
                self._model_cache[spec] = self._models(spec)
            else:
                parent = self.model_for(base)
                if not isinstance(parent, RoutedModel):
                    raise ConfigError(
                        f"model spec {spec!r}: {base!r} is not a gateway",
                        hint="'#provider' picks providers of a gateway: spec",
                    )
                self._model_cache[spec] = parent.restricted(providers, name=spec)
        return self._model_cache[spec]

    async def start(
        self,
        agent: str | Agent,
        task: Any,
        *,
        model: str | None = None,
        max_turns: int | None = None,
        tenant: str = "default",
        metadata: dict[str, Any] | None = None,
        run_id: str | None = None,
        requester: str | None = None,
        correlation_id: str | None = None,
        processed: Processed | None = None,
        source: str | None = None,
        parent_run_id: str | None = None,
        capability: str | None = None,
        queued: bool = False,
    ) -> Run:
        """Create a PENDING run with its ``run.started`` entry. Any worker may then drive it.

        ``requester`` is who asked for the run; they may not approve its actions.
        ``correlation_id``: the conversation the run belongs to (the event that started it);
        by default its own id. ``processed``: the event that started it, recorded in the inbox
        in the same transaction (``engine/inbox.py``). ``source``: where the task came from when
        not from an operator (``event:TYPE``: another agent's event), journaled in
        ``run.started`` so provenance treats the task as untrusted content. ``parent_run_id``,
        ``capability``, ``queued``: a child run of a delegation (``engine/delegation.py``)."""
        run, entries = self._new_run(
            agent,
            task,
            model,
            max_turns,
            tenant,
            metadata,
            run_id,
            requester,
            claimed=False,
            correlation_id=correlation_id,
            source=source,
        )
        if parent_run_id is not None:
            run = run.replace(parent_run_id=parent_run_id, capability=capability, queued=queued)
        return await self._create(run, entries, self._created(run, requester), processed)

    async def _create(
        self,
        run: Run,
        entries: list[PackedEntry],
        audit: AuditNote,
        processed: Processed | None = None,
    ) -> Run:
        """Insert the run with its first entries, their audit anchor, the events they cause (the
        outbox's ``stage_events`` hooks) and the inbox row, in one transaction."""
        stager = Hooks.of(self.hooks).stager()
        events = stager(run, [p.entry for p in entries]) if stager is not None else []
        extra: dict[str, Any] = {}
        if events:
            extra["outbox"] = events
        if processed is not None:
            extra["processed"] = processed
        return await self.store.create_run(run, entries, audit=audit, **extra)

    async def run(
        self,
        agent: str | Agent,
        task: Any,
        *,
        model: str | None = None,
        max_turns: int | None = None,
        tenant: str = "default",
        metadata: dict[str, Any] | None = None,
        run_id: str | None = None,
        on_created: Callable[[Run], None] | None = None,
        requester: str | None = None,
        correlation_id: str | None = None,
    ) -> Run:
        """Create a run and drive it here, now: ``start`` + ``run_to_end`` in fewer transactions.

        The run is created already RUNNING and leased to this engine (fence 1), so no claim and no
        separate "claimed" commit is needed. If this process dies, the lease expires (or is seen
        to belong to a dead process) and any worker takes the run over as usual.
        """
        run, entries = self._new_run(
            agent,
            task,
            model,
            max_turns,
            tenant,
            metadata,
            run_id,
            requester,
            claimed=True,
            correlation_id=correlation_id,
        )
        run = await self._create(run, entries, self._created(run, requester))
        if on_created is not None:
            on_created(run)  # e.g. tell the user the id before a long run, to resume it by
        driven = await self._pass_on(await self._drive(run, [p.entry for p in entries]))
        return await self._through_children(driven)

    async def _through_children(self, run: Run) -> Run:
        """Drive, here, the children a run waits for (and theirs), then the run again, while
        that makes progress: ``run`` (the CLI's ``autonomic run``) takes a delegating agent to
        its end in one process. Stops where only others can go on (a child waiting for a
        human, a capability's slots held elsewhere); a worker takes it from there."""
        while run.status is RunStatus.WAITING_FOR_CHILD:
            progressed = False
            await self.delegation.admit()
            for child in await self.store.children(run.id):
                if child.status in (RunStatus.PENDING, RunStatus.RUNNING) and not child.queued:
                    claimed = await self.claim(child.id)
                    if claimed is not None:
                        await self._through_children(await self.drive(claimed))
                        progressed = True
            run = await self.store.get_run(run.id)
            if run.status is RunStatus.RUNNING:
                claimed = await self.claim(run.id)
                if claimed is not None:
                    run = await self.drive(claimed)
                    progressed = True
            if not progressed:
                break
        return run

    @staticmethod
    def _created(run: Run, requester: str | None) -> AuditNote:
        """The audit note of a new run: who asked for it, when someone is named."""
        if requester is None:
            return AuditNote()
        return AuditNote(act=AuditAct("run.start", requester, {"agent": run.agent}))

    def _new_run(
        self,
        agent: str | Agent,
        task: Any,
        model: str | None,
        max_turns: int | None,
        tenant: str,
        metadata: dict[str, Any] | None,
        run_id: str | None,
        requester: str | None,
        *,
        claimed: bool,
        correlation_id: str | None = None,
        source: str | None = None,
    ) -> tuple[Run, list[PackedEntry]]:
        definition = agent if isinstance(agent, Agent) else self.agents.get(agent)
        if isinstance(agent, Agent) and not self.agents.has(*agent.key):
            self.agents.add(agent, current=False)  # drive it; new runs by name keep theirs
        if task is None or task == "":
            raise InvalidInput("a run needs a task", hint="pass the task text or JSON input")
        turns = max_turns if max_turns is not None else definition.max_turns
        if turns < 1:
            raise InvalidInput(f"max_turns must be at least 1, got {turns}")
        spec = model or definition.model
        self.model_for(spec)  # fail now, not in a worker, if the spec is wrong
        now = self.clock()
        new_id = run_id or new_run_id()
        run = Run(
            id=new_id,
            agent=definition.name,
            agent_version=definition.key[1],
            model=spec,
            status=RunStatus.RUNNING if claimed else RunStatus.PENDING,
            version=1,
            lease=(
                Lease(owner=self.owner, expires_at=now + self.lease_ttl, fence=1)
                if claimed
                else Lease(owner=None, expires_at=0.0, fence=0)
            ),
            created_at=now,
            updated_at=now,
            tenant=tenant,
            input={"task": task},
            max_turns=turns,
            metadata=metadata or {},
            correlation_id=correlation_id or new_id,
        )
        planning: dict[str, Any] | None = None
        if definition.planning is not None:
            planning = definition.planning.pin(spec)
            self.model_for(planning["model"])  # a bad planner spec fails here too
        run_priority(metadata or {})  # validated here, the entry point: one clear error line
        budget = pinned_budget(definition.budget, (metadata or {}).get("budget"))
        body = RunStarted(
            agent=definition.name,
            agent_version=definition.key[1],
            model=spec,
            instructions=definition.instructions,
            task=task,
            tools=tuple(t.ref for t in definition.tools),
            max_turns=turns,
            tenant=tenant,
            requester=requester,
            planning=planning,
            workflow=definition.workflow.pin() if definition.workflow is not None else None,
            budget=budget or None,
            source=source,
        )
        for hook in self.hooks:
            if overrides(hook, "before_run_started"):
                body = hook.before_run_started(body)
        started = record(run.id, 1, body, prev_hash=GENESIS_HASH, created_at=now)
        if not claimed:
            return run, [started]
        running = record(
            run.id,
            2,
            Transition(
                RunStatus.PENDING.value, RunStatus.RUNNING.value, "claimed", worker=self.owner
            ),
            prev_hash=started.entry.hash,
            created_at=now,
        )
        return run, [started, running]

    async def claim(
        self, run_id: str | None = None, *, take_over_dead: bool = True, current: Run | None = None
    ) -> Run | None:
        """Lease ``run_id`` (or any runnable run). A lease held by a dead local process is taken.

        ``current``: ``run_id`` as the caller just read it, so it is not read again.
        """
        steal: str | None = None
        if run_id is not None and take_over_dead:
            if current is None or current.id != run_id:
                current = await self.store.get_run(run_id)
            if owner_is_dead(current.lease.owner) and current.lease.expires_at > self.clock():
                steal = current.lease.owner
        return await self.store.claim(
            Claim(
                owner=self.owner,
                now=self.clock(),
                ttl=self.lease_ttl,
                run_id=run_id,
                steal_from=steal,
                agents=tuple(self.agents.keys()),
            )
        )

    async def drive(self, run: Run) -> Run:
        """Take a claimed run as far as it goes now; release the lease; return the run as stored.

        A child run whose parent has ended is cancelled instead (its result has nobody to go
        to); a run that ended or waits for a child passes the outcome on (``_pass_on``)."""
        if run.parent_run_id is not None:
            parent = await self.store.get_run(run.parent_run_id)
            if parent.status.terminal:
                await self.store.release_lease(run.id, owner=self.owner, fence=run.lease.fence)
                with contextlib.suppress(IllegalTransition, StaleVersion):
                    return await self.cancel(
                        run.id, f"parent run {parent.id} is {parent.status.value}", by="delegation"
                    )
        return await self._pass_on(await self._drive(run, None))

    async def _pass_on(self, run: Run) -> Run:
        """After driving ``run``: a child that ended (or suspended) reopens its waiting parent;
        a parent that just began to wait is reopened at once if its child ended meanwhile."""
        try:
            if run.status is RunStatus.WAITING_FOR_CHILD:
                await self.delegation.deliver(run.id, self._reopen_parent)
            elif run.parent_run_id is not None and (
                run.status.terminal or run.status is RunStatus.SUSPENDED
            ):
                await self.delegation.deliver(run.parent_run_id, self._reopen_parent)
        except Exception as exc:  # a worker's sweep delivers it later
            if not store_failure(exc):
                raise
            log.warning("run %s: passing its outcome on failed: %s", run.id, scrub(str(exc)))
        return run

    async def _reopen_parent(self, run_id: str, reason: str) -> None:
        """Move a parent waiting for its child back to RUNNING (a no-op if another did)."""
        act = AuditAct("run.reopen", "delegation", {"reason": reason})
        with contextlib.suppress(IllegalTransition):
            await self._operator_transition(
                run_id, RunStatus.RUNNING, reason, by="delegation", act=act
            )

    async def deliver(self, parent_id: str) -> bool:
        """Reopen ``parent_id`` if it waits for a child that has ended (idempotent: what an
        ``autonomic.delegation.completed`` event's consumer calls)."""
        return await self.delegation.deliver(parent_id, self._reopen_parent)

    async def sweep_delegations(self) -> int:
        """Admit queued children of limited capabilities, and reopen parents whose child ended
        while nobody passed it on (a worker died); what it changed."""
        admitted = await self.delegation.admit()
        return admitted + await self.delegation.sweep(self._reopen_parent)

    async def _drive(self, run: Run, fresh: list[Entry] | None) -> Run:
        """``fresh``: the whole journal of a run this engine has just created RUNNING for itself,
        so there is nothing to reload and nothing to recover."""
        session: RunSession | None = None
        heartbeat = asyncio.create_task(self._heartbeat(run, lambda: session))
        try:
            reading = time.perf_counter()
            if fresh is not None:
                state = fold(run.id, fresh)
            elif self.hot_state is not None:
                state = await self.hot_state.read(self.store, run)
            else:
                state = fold(run.id, await self.store.load_journal(run.id))
            session = RunSession(
                self.store,
                run,
                state,
                clock=self.clock,
                faults=self.faults,
                lease_ttl=self.lease_ttl,
                audit_levels=self._audit_levels(run),
            )
            session.read_seconds = time.perf_counter() - reading
            Hooks.of(self.hooks).attach(session)
            taken_over = fresh is None and session.state.status is RunStatus.RUNNING
            if session.state.status is RunStatus.PENDING:
                await session.transition(RunStatus.RUNNING, "claimed", worker=self.owner)
            if session.state.status is RunStatus.RUNNING:
                step = self._steps(session)
                if taken_over:
                    step.begin(self.owner)
                if step.agent.coordination is not None:  # plans, hands off, undoes its own
                    await step.drive(self._coordinate())
                elif session.state.abort is not None:  # aborted: undo, never act again
                    await step.drive(Compensate())
                else:
                    if step.agent.check is not None:
                        step.agent.check(session.run)  # the run's input and metadata, every drive
                    await step.drive(ReAct())
        except LeaseLost as exc:
            log.warning(
                "run %s: this worker (%s) lost its lease at fence %d and drops the run; "
                "the worker that took it over goes on (%s)",
                run.id,
                self.owner,
                run.lease.fence,
                exc,
            )
            return await self.store.get_run(run.id)
        except RunInterrupted:
            return await self.store.get_run(run.id)
        except Exception as exc:
            # A step raised what the protocol does not expect (agent code, a hook, a gate, a
            # policy): the run ends with the reason, never stays RUNNING. The store failing is
            # not the run's fault: re-raised, the run is left for recovery (``failure``).
            if session is None or store_failure(exc):
                raise
            ended = await self._fail(session, exc)
            if ended is None:
                return await self.store.get_run(run.id)
            session = ended
        finally:
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat
        final = session.run if session else run
        if self.hot_state is not None and session is not None and not session.staged:
            # before the lease goes: the worker that claims the run next finds the snapshot
            await self.hot_state.remember(final, session.state)
        if final.lease.owner is not None:  # a transition out of RUNNING has released it already
            await self.store.release_lease(final.id, owner=self.owner, fence=final.lease.fence)
        return final.replace(lease=Lease(owner=None, expires_at=0.0, fence=final.lease.fence))

    async def _fail(self, session: RunSession, exc: Exception) -> RunSession | None:
        """End a run after an unexpected error in one of its steps: SUSPENDED or FAILED with a
        one-line reason and the ``Failure`` as evidence, in one commit (see ``failure``).

        What the step staged before the error (the model's answer, a decision, an idempotent
        call's intent) is committed with the failure when it can be - it shows what led to it;
        when it cannot, the run ends from its committed journal. A non-idempotent call whose
        intent is committed but whose result is not is named: it may have taken effect.
        ``None`` when the run is no longer this worker's."""
        failure = Failure.of(exc)
        log.info(  # the journal holds it; the run's reason says it
            "run %s: unexpected %s in %s (%s): %s [digest %s]",
            session.run.id,
            failure.type,
            failure.function,
            failure.where,
            failure.message,
            failure.digest,
        )
        log.debug("run %s: the failure's traceback", session.run.id, exc_info=exc)
        if session.run.status is not RunStatus.RUNNING:
            return session  # it had left RUNNING already (an after_run hook raised): not stuck
        session.calm()
        if session.state.status is RunStatus.RUNNING:
            try:
                await self._end(session, failure)
                return session
            except (LeaseLost, RunInterrupted):
                return None
            except Exception as again:
                if store_failure(again):
                    raise
                log.error("run %s: staged entries not committable (%r)", session.run.id, again)
        run = await self.store.get_run(session.run.id)
        if run.lease.fence != session.fence:
            return None
        entries = await self.store.load_journal(run.id)
        fresh = RunSession(
            self.store,
            run,
            fold(run.id, entries),
            clock=self.clock,
            faults=NoFaults(),
            lease_ttl=self.lease_ttl,
            outbox=Hooks.of(self.hooks).stager(),
            audit_levels=self._audit_levels(run),
        )
        if fresh.state.status is not RunStatus.RUNNING:
            return fresh
        try:
            await self._end(fresh, failure)
        except (LeaseLost, RunInterrupted):
            return None
        return fresh

    @staticmethod
    async def _end(session: RunSession, failure: Failure) -> None:
        pending = session.state.in_doubt()
        in_doubt = pending.intent if pending is not None else None
        await session.transition(
            failure.status,
            failure.reason(session.run.id, in_doubt),
            error=failure.to_dict(),
            in_doubt=in_doubt,
        )

    def _steps(self, session: RunSession) -> StepProtocol:
        """The step protocol for a run this worker drives now, with every hook it needs."""
        agent = self.agents.get(session.run.agent, session.run.agent_version)
        model = self.model_for(session.run.model)
        state = session.state
        managed = self._managed(model)
        hooks: list[Hook] = [*self.hooks, CircuitHook(self.circuits)]
        if any(t.breaker is not None for t in agent.tools):
            hooks.append(ToolCircuitHook(self.circuits))
        budget: ModelBudget | None = None
        if self.runaway.enabled:
            budget = ModelBudget(self.runaway.ledger)
            if managed is not None:
                budget.estimate = exact_estimate(managed)
        if state.planning is not None:  # plans now (no plan yet) or may forget a failed plan
            planner = None if state.plan is not None else self.model_for(state.planning["model"])
            scorer = str(state.planning.get("scorer", ""))
            hooks.append(
                PlanningHook(
                    agent,
                    planner,
                    cache=self.plan_cache,
                    budget=budget,
                    scorer=(
                        self.model_for(scorer.removeprefix("model:"))
                        if planner is not None and scorer.startswith("model:")
                        else None
                    ),
                )
            )
        if managed is not None:
            hooks.append(CompressionHook(managed))
        if budget is not None:
            hooks.append(BudgetHook(budget))
        if self.runaway.enabled and self.runaway.screen_results:
            hooks.append(ScreeningHook(self.runaway.classifier))
        chain = Hooks(hooks)
        chain.attach(session)
        extra = [agent.workflow.gate()] if agent.workflow is not None else []
        gatekeeper = Gatekeeper(
            self.gates,
            [*extra, *agent.gates],
            read_only=agent.read_only,
            expected=agent.expected_actions,
            contracts={t.name: t for t in agent.tools},
        )
        view = None
        if self.provenance is not None and self.provenance.mark:
            view = marker(session.run.id, {t.name: t.trusted_output for t in agent.tools})
        return StepProtocol(
            session,
            agent,
            model,
            gatekeeper,
            chain,
            stopping=self.stopping.is_set,
            retries_itself=managed is not None and managed.retries_itself,
            credentials=self.credentials,
            view=view,
            delegation=self.delegation,
        )

    def _coordinate(self) -> Coordinate:
        """The coordinator pattern, with the delegation guards this engine runs (if any) and
        its own cancel and abort for the children of an abandoned graph."""
        gate = next((g for g in self.gates.gates if g.name == DELEGATION_GATE), None)
        return Coordinate(
            gate=gate if isinstance(gate, DelegationGate) else None,
            cancel=self.cancel,
            abort=self.abort,
        )

    def _managed(self, model: Model) -> ManagedModel | None:
        """The model as a ``ManagedModel`` if it has those abilities (asked once per model: a
        protocol check reads every attribute of the protocol)."""
        key = id(model)
        if key not in self._abilities:
            self._abilities[key] = (model, model if isinstance(model, ManagedModel) else None)
        return self._abilities[key][1]

    async def _heartbeat(self, run: Run, held: Callable[[], RunSession | None]) -> None:
        """Keep the lease alive while a long step runs; commits also extend it.

        A refused renewal means another worker took the run over (this one was paused, say): say
        so, and mark the session lost, so its next lease check or commit stops at once. A renewal
        granted also keeps the run's committed state in the state cache, if there is one and the
        state moved on (``_keep_state``)."""
        kept = 0  # the seq of the latest snapshot this heartbeat kept
        while True:
            await asyncio.sleep(self.lease_ttl / 3)
            until = self.clock() + self.lease_ttl
            try:
                ok = await self.store.renew_lease(
                    run.id, owner=self.owner, fence=run.lease.fence, expires_at=until
                )
            except Exception as exc:  # the store is down: commits will say so; try again later
                log.warning("run %s: lease renewal failed: %s", run.id, scrub(str(exc)))
                continue
            session = held()
            if ok:
                if session is not None:
                    session.extend(until)
                kept = await self._keep_state(session, kept)
                continue
            if session is not None and session.run.lease.owner is None:
                return  # released by this worker's own transition out of RUNNING
            reason = (
                f"run {run.id}: lease renewal refused at fence {run.lease.fence}: another "
                "worker has taken the run over"
            )
            log.warning("%s; this worker (%s) drops the run", reason, self.owner)
            if session is not None:
                session.lost(reason)
            return

    async def _keep_state(self, session: RunSession | None, kept: int) -> int:
        """From the heartbeat: keep the run's state in the state cache if it moved on since the
        last snapshot and nothing is staged (so it is all committed), for the worker that takes
        the run over if this one dies. Returns the seq of the latest snapshot."""
        if self.hot_state is None or session is None or session.staged:
            return kept
        if session.state.last_seq <= kept:
            return kept
        await self.hot_state.remember(session.run, session.state)
        return session.state.last_seq

    async def run_to_end(self, run_id: str) -> Run:
        """Claim ``run_id`` and drive it; the CLI's ``run`` and ``resume``."""
        pinned = await self.store.get_run(run_id)
        if not pinned.status.terminal:
            self.agents.get(pinned.agent, pinned.agent_version)  # NotFound: which, and the fix
        run = await self.claim(run_id, current=pinned)  # one read of the run, not two
        if run is None:
            current = await self.store.get_run(run_id)
            raise UserError(
                f"run {run_id} cannot be resumed now: it is {current.status}"
                + (f", leased by {current.lease.owner}" if current.lease.owner else ""),
                hint=_resume_hint(current, self.clock()),
            )
        return await self.drive(run)

    def _audit_levels(self, run: Run) -> dict[str, str]:
        """What the audit log keeps of each of the run's tools' calls (their ``audit_level``)."""
        try:
            tools = self.agents.get(run.agent, run.agent_version).tools
        except NotFound:
            return {}
        return {t.name: t.audit.value for t in tools}

    async def reopen(
        self,
        run_id: str,
        reason: str,
        *,
        budget: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
        by: str = "operator",
        agent_version: str | None = None,
    ) -> Run:
        """Move a SUSPENDED or WAITING_FOR_HUMAN run back to RUNNING so a worker can take it.

        ``budget`` raises (or sets) run budget limits, key by key, in the same transition entry;
        ``metadata`` sets run metadata keys (what a run suspended for a missing or wrong input
        needs), journaled in that entry too. ``by`` is who reopened it (the service passes the
        caller's principal), journaled as the transition's ``by``. ``agent_version`` moves the
        run onto that version of its agent (registered in this process: it is checked here),
        journaled as ``{"from": OLD, "to": NEW}`` in the same entry: the way out for a run whose
        version is deployed nowhere any more."""
        extra: dict[str, Any] = {}
        if agent_version is not None:
            current = await self.store.get_run(run_id)
            self.agents.get(current.agent, agent_version)  # NotFound names what is registered
            if agent_version != current.agent_version:
                extra["agent_version"] = {"from": current.agent_version, "to": agent_version}
                reason = (
                    f"{reason} (moved from {current.agent}@{current.agent_version} to "
                    f"{current.agent}@{agent_version})"
                )
        if budget:
            extra["budget"] = pinned_budget(None, budget)
        if metadata:
            run_priority(metadata)  # a bad priority is refused here, not in a worker
            extra["metadata"] = dict(metadata)
        detail: dict[str, Any] = {"reason": reason, **extra}
        if agent_version is not None:
            detail["agent_version"] = agent_version
        act = AuditAct("budget.raise" if budget else "run.reopen", by, detail)
        return await self._operator_transition(
            run_id, RunStatus.RUNNING, reason, by=by, act=act, **extra
        )

    async def announce(self) -> None:
        """Tell the store which agent versions this process drives (``worker_agents``): a run
        pinned to a version nobody announces is suspended after the grace period. A store
        without a worker registry is told nothing."""
        now = self.clock()
        try:
            await self.store.announce_agents(
                self.owner, self.agents.keys(), now=now, forget_before=now - FORGET_WORKERS_AFTER
            )
        except NotImplementedError:
            return

    async def suspend_unserved(self, grace: float) -> list[Run]:
        """Suspend every runnable run whose agent version no worker has announced for longer
        than ``grace`` seconds, with a reason that names the version and the two ways out; the
        runs suspended. Anyone may call it (a worker does, when idle): the commit is guarded by
        the run's version, and a run claimed meanwhile is left alone."""
        try:
            stranded = await self.store.unserved_runs(now=self.clock(), grace=grace)
        except NotImplementedError:
            return []
        suspended: list[Run] = []
        for found in stranded:
            version = found.agent_version

            def still(run: Run, state: RunState, version: str = version) -> tuple[list[Body], str]:
                waiting = run.status is RunStatus.PENDING or (
                    run.status is RunStatus.RUNNING and run.lease.expires_at < self.clock()
                )
                if not waiting or run.agent_version != version:
                    raise _Claimed()
                return [], unserved_reason(run, grace)

            try:
                suspended.append(
                    await self._operator_transition(
                        found.id,
                        RunStatus.SUSPENDED,
                        "",
                        before=still,
                        by="fleet",
                        act=AuditAct("run.suspend", "fleet", {"missing_version": version}),
                        agent_version={"missing": version},
                    )
                )
            except _Claimed:
                continue
            log.warning("run %s: %s", found.id, suspended[-1].status_reason)
        return suspended

    async def abort(
        self, run_id: str, reason: str, *, compensate: bool = True, by: str = "operator"
    ) -> Run:
        """Abort a run. Without ``compensate`` it is ``cancel``. With it, a ``compensation``
        entry ``requested`` is journaled and the run goes (back) to RUNNING for a worker, which
        undoes its completed steps newest first and ends it CANCELLED (``engine/compensation.py``);
        ``drive`` it, or let a worker claim it. A run that is RUNNING under another worker's
        lease is taken once that lease ends (the worker stops at its next commit). A run with
        nothing to undo is cancelled at once."""
        if not compensate:
            return await self.cancel(run_id, reason, by=by)
        act = AuditAct("run.abort", by, {"reason": reason, "compensate": True})
        request = CompensationStep("requested", by=by, reason=reason)

        def requested(why: str) -> Callable[[Run, RunState], tuple[list[Body], str]]:
            return lambda _run, _state: ([request], why)

        for _ in range(10):
            run = await self.store.get_run(run_id)
            state = fold(run_id, await self.store.load_journal(run_id))
            if run.status.terminal:
                raise InvalidInput(
                    f"run {run_id} is {run.status.value}: a finished run cannot be aborted",
                    hint="`autonomic show RUN` displays how it ended",
                )
            if state.abort is not None:
                return run  # already aborting: the request stands
            if not completed_steps(state):
                why = f"aborted by {by}: {reason}; nothing to undo"
                return await self._operator_transition(
                    run_id, RunStatus.CANCELLED, why, before=requested(why), by=by, act=act
                )
            if run.status is not RunStatus.RUNNING:
                why = f"aborted by {by}: {reason}; compensating its completed steps"
                return await self._operator_transition(
                    run_id, RunStatus.RUNNING, why, before=requested(why), by=by, act=act
                )
            now = self.clock()
            packed = [
                record(
                    run_id, state.last_seq + 1, request, prev_hash=state.last_hash, created_at=now
                )
            ]
            try:
                await self.store.commit(
                    run_id,
                    expected_version=run.version,
                    fence=None,
                    entries=packed,
                    changes=RunChanges(),
                    now=now,
                    audit=AuditNote(levels=self._audit_levels(run), act=act),
                )
            except StaleVersion:
                continue
            return await self.store.get_run(run_id)
        raise StaleVersion(f"run {run_id} kept changing; try again")

    async def cancel(
        self, run_id: str, reason: str = "cancelled by operator", *, by: str = "operator"
    ) -> Run:
        """Cancel a run from outside; a worker holding it stops at its next commit. ``by`` is
        who cancelled it, journaled as the transition's ``by`` and in the audit log."""
        act = AuditAct("run.cancel", by, {"reason": reason})
        run = await self._operator_transition(run_id, RunStatus.CANCELLED, reason, by=by, act=act)
        await self._cancel_children(run_id, by)
        return run

    async def _cancel_children(self, run_id: str, by: str) -> None:
        """Cancel what a cancelled run delegated (and what those delegated, down the tree)."""
        try:
            children = await self.store.children(run_id)
        except NotImplementedError:
            return
        for child in children:
            if child.status.terminal:
                await self._cancel_children(child.id, by)
                continue
            with contextlib.suppress(IllegalTransition):
                await self.cancel(child.id, f"parent run {run_id} was cancelled", by=by)

    async def settle(
        self,
        run_id: str,
        *,
        executed: bool,
        by: str,
        reason: str,
        output: Any = None,
    ) -> Run:
        """Record a human's finding about the call a run is *in doubt* about, and let it go on.

        A run is in doubt when a non-idempotent call started (its intent is journaled) and its
        result was never recorded: nobody knows whether the effect happened, so the engine waits
        for a person (WAITING_FOR_HUMAN). They find out and say:

        * ``executed=True``: it took effect; ``output`` is the result they found. The run records
          it as the call's result - untrusted tool output, screened like any, marked ``settled``
          - and goes on without running the call again.
        * ``executed=False``: it did not; the call runs again as a new attempt (a new intent and
          key, committed before the effect), once.

        One commit: a ``settlement`` entry (who, why, the finding) and the transition back to
        RUNNING without a lease, so ``resume`` or any worker drives it at once. Refused (a
        ``UserError`` saying why) when the run is not in doubt."""
        if not reason.strip():
            raise InvalidInput(
                "settling needs a reason", hint='say how you found out: --reason "checked the ..."'
            )
        if not by.strip():
            raise InvalidInput("settling needs who settles it", hint="--as NAME")
        verdict = "executed" if executed else "not executed (it runs again)"

        def finding(run: Run, state: RunState) -> tuple[list[Body], str]:
            pending = state.in_doubt() if run.status is RunStatus.WAITING_FOR_HUMAN else None
            if pending is None or pending.intent is None:
                raise UserError(
                    f"run {run_id} is not in doubt: it is {run.status.value}"
                    + (f" ({run.status_reason})" if run.status_reason else ""),
                    hint="settle records what happened to a call a run is in doubt about; "
                    f"`autonomic show {run_id}` shows where the run is",
                )
            intent = pending.intent
            if executed:
                self._check_settled_output(run, intent, output)
            settlement = Settlement(
                call_id=intent.call_id,
                tool=intent.tool,
                key=intent.key,
                executed=executed,
                by=by,
                reason=reason,
                output=output if executed else None,
                position=pending.position,
            )
            why = f"settled by {by}: {intent.tool} call {intent.call_id} {verdict} - {reason}"
            return [settlement], why

        act = AuditAct("run.settle", by, {"executed": executed, "reason": reason})
        return await self._operator_transition(
            run_id, RunStatus.RUNNING, "", before=finding, by=by, act=act
        )

    def _check_settled_output(self, run: Run, intent: ToolIntent, output: Any) -> None:
        """A result given for a call must fit the tool's output contract, when this process
        knows the tool (a wrong shape would only fail the run later)."""
        try:
            tool = self.agents.get(run.agent, run.agent_version).registry.resolve(intent.ref)
        except NotFound:
            return
        try:
            canonical_json(output)
            tool.validate_output(output)
        except (TypeError, ValueError, InvalidInput) as exc:
            raise InvalidInput(
                f"the result given for {intent.ref} does not fit its output contract: {exc}",
                hint="give the result as the tool would have returned it (JSON)",
            ) from None

    async def _operator_transition(
        self,
        run_id: str,
        target: RunStatus,
        reason: str,
        *,
        before: Callable[[Run, RunState], tuple[list[Body], str]] | None = None,
        by: str = "operator",
        act: AuditAct | None = None,
        **extra: Any,
    ) -> Run:
        """Commit an operator's change of a run's status (and ``before``'s entries ahead of the
        transition, with the reason it gives), under the run's version: retried while the run
        changes under us. ``before`` may refuse (raise) before anything is written."""
        for _ in range(10):
            run = await self.store.get_run(run_id)
            entries = await self.store.load_journal(run_id)
            state = fold(run_id, entries)
            bodies, why = before(run, state) if before is not None else ([], reason)
            check_transition(run.id, run.status, target)
            now = self.clock()
            bodies.append(Transition(run.status.value, target.value, why, by=by, **extra))
            packed: list[PackedEntry] = []
            seq, prev = state.last_seq, state.last_hash
            for body in bodies:
                seq += 1
                packed.append(record(run_id, seq, body, prev_hash=prev, created_at=now))
                prev = packed[-1].entry.hash
            metadata = extra.get("metadata")
            moved = extra.get("agent_version") or {}
            try:
                version = await self.store.commit(
                    run_id,
                    expected_version=run.version,
                    fence=None,
                    entries=packed,
                    changes=RunChanges(
                        status=target,
                        status_reason=why,
                        metadata={**run.metadata, **metadata} if metadata else None,
                        agent_version=moved.get("to"),
                    ),
                    now=now,
                    audit=AuditNote(levels=self._audit_levels(run), act=act),
                )
            except StaleVersion:
                continue
            changed = run.replace(status=target, status_reason=why, version=version)
            if moved.get("to"):
                changed = changed.replace(agent_version=moved["to"])
            if metadata:
                changed = changed.replace(metadata={**run.metadata, **metadata})
            self._committed(changed, state, [p.entry for p in packed])
            return changed
        raise StaleVersion(f"run {run_id} kept changing; try again")

    def _committed(self, run: Run, state: RunState, entries: Sequence[Entry]) -> None:
        """Tell the commit hooks about a commit made outside a worker (an operator's cancel,
        reopen or settlement, from the CLI or the API), as a worker's session tells them about
        its own: the tracing hook ends the root span of a run this commit ends, so every run's
        root is ended once, by whichever process ends the run. The commit is durable already: a
        hook that fails is logged, never raised to the operator."""
        session = RunSession(  # held here: the committer holds it weakly
            self.store,
            run,
            state,
            clock=self.clock,
            faults=NoFaults(),
            lease_ttl=self.lease_ttl,
        )
        hooks = Hooks.of(self.hooks)
        committer, transitioner = hooks.committer(session), hooks.transitioner(session)
        if committer is None and transitioner is None:
            return
        try:
            for entry in entries:
                state.apply(entry)
            if committer is not None:
                committer(entries)
            if transitioner is not None:
                transitioner(entries)
        except Exception:  # the commit stands; telemetry is not worth an operator's error
            log.exception("a commit hook failed after an operator's commit to run %s", run.id)


FORGET_WORKERS_AFTER = 7 * 24 * 3600.0
"""Seconds after which a worker's announcement of its agent versions is deleted (it is gone)."""


class _Claimed(Exception):
    """A run found unserved was claimed (or moved) before it could be suspended."""


def unserved_reason(run: Run, grace: float) -> str:
    """Why a run whose version no worker has is suspended, and the two ways out."""
    return (
        f"no worker has agent {run.agent} version {run.agent_version} (none announced it for "
        f"{grace:.0f}s): deploy a worker that registers {run.agent}@{run.agent_version}, or move "
        f"the run onto a version a worker has: autonomic resume {run.id} --force "
        "--agent-version VERSION"
    )


def _resume_hint(run: Run, now: float) -> str:
    if run.status.terminal:
        return "finished runs cannot be resumed; `autonomic show` displays the outcome"
    if run.status in (RunStatus.SUSPENDED, RunStatus.WAITING_FOR_HUMAN):
        return "a human must decide first: `autonomic resume RUN --force` reopens it"
    if run.lease.owner and run.lease.expires_at > now:
        return f"another worker holds it for {run.lease.expires_at - now:.0f}s more; let it finish"
    return "try again"
