"""The step protocol: the one place a step of a run happens.

A run advances in steps - a model turn, or one tool call the model proposed - and every step, in
every pattern, goes through this module. The order is the guarantee; the rest of the engine and
every capability attaches around it through named hooks, never by copying it.

**A tool call** (``StepProtocol.tool_calls``), inside the lease of a ``RunSession``:

1. **Fold.** The run's state is the fold of its journal (``core/state.py``). A call that already
   has a recorded result is never redone; a recorded model turn is never asked again. A call is
   keyed by its position in the run (turn, index; ``core/calls.py``), never by the id the model
   server gave it, which servers repeat, reuse or leave out.
2. **Decide.** The gatekeeper (``engine/gatekeeper.py``) asks governance about the one proposed
   action and stages the ``decision`` *before any effect*; on resume the journaled decision is
   replayed, never re-asked. Allowed, it goes on; refused, a refusal is the call's result; a human
   needed, the run waits as a row, holding no worker.
3. **Intend.** The ``tool.intent`` is staged: tool version (the one the run pinned), validated
   arguments, idempotency key ``run_id:seq`` (the run's own position, the same on a redo). A
   non-idempotent tool's intent is **committed** now (write-ahead); an idempotent tool's intent
   rides with its result - one commit per step, because repeating it with the same key is safe by
   contract.
4. **Act.** A non-idempotent effect starts only once the lease is checked again, right before it
   (``RunSession.check_lease``): a worker that was paused past its lease and taken over raises
   ``LeaseLost`` instead of acting as a zombie. The effect runs under the contract: its timeout,
   its retries (idempotent tools only), its circuit breaker (a hook); the tool gets the run's
   fencing token (``ctx.fence``) for systems that can refuse a stale writer. The output is
   checked against the contract's output schema.
5. **Record.** The ``tool.result`` is staged (screened by a hook before the model reads it) and a
   non-idempotent tool's result is **committed** at once - or, when the next call of the same
   turn is a new non-idempotent one, with that call's decision and intent: one commit instead
   of two, and no model call or effect comes between (``_next_writes_ahead``).

**A turn's calls together.** The calls of one model turn are independent (the model proposed them
at once): those of idempotent tools are decided and intended in the model's order, then acted
concurrently, and their results recorded in the model's order (``Agent.parallel_tools``; a call
of a non-idempotent tool, a ``delegate`` call or a settled one first lets the acted ones finish,
then runs alone). Nothing leaves RUNNING with such a call acted but unrecorded: a transition
finishes them first (``RunSession.before_transition``).

**The replay rule.** On resume, a call whose intent is journaled but whose result is not is re-run
only if its tool is idempotent, with its original key. **The in-doubt rule.** Otherwise nobody
knows whether the effect happened: the run moves to WAITING_FOR_HUMAN "in doubt", with the intent
as evidence, for a human to settle (``autonomic settle``, a ``settlement`` entry): executed, and
the result they found is recorded as the call's result (screened like any tool output); or not
executed, and the call runs again as a new attempt under the write-ahead rule. A crash before a
commit loses only the uncommitted step: the model is asked again for that turn (it was never
recorded) and an idempotent tool is re-run with the same key.

**A model turn** (``StepProtocol.model_turn``): the ``before_model_call`` hooks run (planning,
context compression, the budget check - any of them may stop the run), then the model is asked
(retrying transient errors, unless the model retries itself), and the answer is staged as one
``model.response`` delta; it commits with the next step's commit.

**Hooks** (``Hook``): ``around_run``, ``before_model_call``, ``after_model_call`` and
``after_model_turn``, ``around_tool_effect``, ``before_tool_effect`` and ``after_tool_effect``,
``after_tool_result``, ``after_step`` (a model turn or a tool result was staged),
``stage_events`` (the events a commit causes, written in its transaction: the outbox),
``on_commit`` (entries are durable), ``on_transition`` (a status change is durable) and
``after_run``. Planning, compression, budgets,
breakers and screening are hooks (``engine/hooks.py``, ``engine/planning.py``); tracing, the outbox
and the audit chain attach the same way. A hook that does not override a method costs nothing.

A hook that only *observes* uses the synchronous points: ``after_model_turn`` (rather than the
awaited ``after_model_call``), the ``before_tool_effect`` / ``after_tool_effect`` pair
(rather than wrapping the effect in ``around_tool_effect``) and ``on_transition`` (rather than
``on_commit``, called on every commit). An awaited point costs a step a coroutine and its
wrapping closures whatever the hook does; a synchronous one, a call - tracing and metrics are
observers, and a durable SQLite step is short enough for the difference to count
(``docs/observability.md``).

Patterns (``engine/patterns``) are loops over this protocol: they decide *which* step comes next,
never how a step is taken.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, cast

from autonomic.core.calls import Position
from autonomic.core.entries import (
    ModelCall,
    ModelTurn,
    Recovery,
    RunStarted,
    ToolIntent,
    ToolResult,
    Transition,
)
from autonomic.core.events import Event
from autonomic.core.journal import Entry
from autonomic.core.messages import Message, ModelResponse, ToolCall
from autonomic.core.reasoning import extract
from autonomic.core.run import Run, RunStatus
from autonomic.core.state import PendingCall, RunState
from autonomic.engine.agent import Agent
from autonomic.engine.delegation import Delegation, Handoff, child_run_id
from autonomic.engine.failure import Failure
from autonomic.engine.gatekeeper import Gatekeeper, Go
from autonomic.engine.session import RunSession
from autonomic.errors import (
    AutonomicError,
    InvalidInput,
    ModelError,
    NotFound,
    ToolArgumentsInvalid,
    ToolVersionMissing,
)
from autonomic.ports.credentials import (
    CredentialIssuer,
    CredentialScope,
    ScopedCredential,
    redact,
)
from autonomic.ports.model import Model, Priority, call_context
from autonomic.tools.contract import Tool, ToolContext
from autonomic.tools.delegate import DELEGATE_TOOL

MODEL_RETRIES = 3
MODEL_BACKOFF = 0.2

Effect = Callable[[], Awaitable[tuple[ToolResult, bool]]]
"""A tool call's effect under its contract: the result, and whether it failed for health reasons
(a raise or a timeout after the retries - what a circuit breaker counts)."""


class Hook:
    """A capability attached to the step protocol. Override what you need; every default does
    nothing (and a method left at its default is never called)."""

    def before_run_started(self, started: RunStarted) -> RunStarted:
        """A new run's ``run.started`` before it is written: add what the hook keeps there
        (tracing: the trace context every process driving the run joins)."""
        return started

    async def around_run(self, step: StepProtocol, drive: Callable[[], Awaitable[None]]) -> None:
        """Wrap driving the run (a circuit that may refuse it, say)."""
        await drive()

    async def before_model_call(self, step: StepProtocol) -> bool:
        """Before each model turn; ``False`` once the hook took the run out of RUNNING."""
        return True

    async def after_model_call(self, step: StepProtocol, turn: ModelTurn) -> None:
        """The turn's answer is staged."""

    def after_model_turn(self, step: StepProtocol, turn: ModelTurn) -> None:
        """The turn's answer is staged (synchronous, after the ``after_model_call`` hooks: for
        a hook that only observes the turn)."""

    async def around_tool_effect(
        self, step: StepProtocol, tool: Tool, call: ToolCall, effect: Effect
    ) -> tuple[ToolResult, bool]:
        """Wrap one tool call's effect (a breaker that may refuse it, say); return what
        ``effect`` returns (or a refusal, and ``False``)."""
        return await effect()

    def before_tool_effect(
        self, step: StepProtocol, tool: Tool, call: ToolCall, intent: ToolIntent
    ) -> Any:
        """Right before one tool call's effect (``intent``: its journaled intent - key,
        arguments, position), outside every ``around_tool_effect`` and in the task that runs
        the effect (a context variable set here is seen by the tool); what it returns is handed
        to ``after_tool_effect``. Synchronous: for a hook that observes the call rather than
        wraps it. Override both."""
        return None

    def after_tool_effect(
        self, began: Any, result: ToolResult | None, error: BaseException | None
    ) -> None:
        """The effect is over: its ``result`` (``error`` is ``None``), or the exception that left
        it (a cancellation, say; ``result`` is ``None``, and the exception goes on after the
        hooks). ``began``: what ``before_tool_effect`` returned for this call."""

    def after_tool_result(self, step: StepProtocol, result: ToolResult) -> ToolResult:
        """The result before it is recorded (and read by the model): screen it, say."""
        return result

    def after_step(self, step: StepProtocol, entry: Entry) -> None:
        """A step's last entry (a model turn, a tool result) was staged."""

    def stage_events(self, run: Run, entries: Sequence[Entry]) -> Sequence[Event]:
        """The events a commit of ``entries`` causes (a run completed, an agent's message):
        written in the *same transaction* as the entries - the transactional outbox
        (``engine/outbox.py``) - so a committed step always has its events and an aborted one
        never does. Called right before each commit of the run, and for a new run's first
        entries; keep it pure and quick."""
        return ()

    def on_commit(self, session: RunSession, entries: Sequence[Entry]) -> None:
        """``entries`` are durable (called from the commit itself, so keep it quick; the
        session is all there is when a worker has just claimed the run)."""

    def on_transition(self, session: RunSession, transition: Transition, at: float) -> None:
        """A status change is durable (``session.run`` has the new status; ``at``: when it was
        journaled). Called only for the commits that carry one - a step's commit does not pay
        for it, as it pays for ``on_commit`` - including an operator's (a cancel, a reopen)."""

    async def after_run(self, step: StepProtocol) -> None:
        """The worker stopped driving the run (whatever state it is in now)."""


def overrides(hook: Hook, name: str) -> bool:
    """Whether ``hook`` overrides the hook method ``name`` (only those are called)."""
    return _overrides(hook, name)


def _overrides(hook: Hook, name: str) -> bool:
    return name in _points_of(type(hook))


def _points_of(kind: type[Hook]) -> frozenset[str]:
    """The hook points ``kind`` overrides, kept by class (``Hooks`` is made a few times a run,
    and asks each hook about each point). The pair ``before_tool_effect`` / ``after_tool_effect``
    counts as both when either is overridden: the two are called together."""
    found = _OVERRIDDEN.get(kind)
    if found is None:
        names = {
            name
            for name, default in vars(Hook).items()
            if callable(default) and not name.startswith("_") and getattr(kind, name) is not default
        }
        if names & _PAIR:
            names |= _PAIR
        found = _OVERRIDDEN[kind] = frozenset(names)
    return found


_PAIR = frozenset({"before_tool_effect", "after_tool_effect"})


_OVERRIDDEN: dict[type, frozenset[str]] = {}

_POINTS = (
    "around_run",
    "before_model_call",
    "after_model_call",
    "after_model_turn",
    "around_tool_effect",
    "before_tool_effect",
    "after_tool_result",
    "after_step",
    "on_commit",
    "on_transition",
    "after_run",
    "stage_events",
)
"""The points ``Hooks`` holds, in the order of its attributes."""

_PLANS: dict[tuple[type, ...], tuple[tuple[int, ...], ...]] = {}
_MADE: dict[tuple[int, ...], Hooks] = {}


def _plan_of(kinds: tuple[type, ...]) -> tuple[tuple[int, ...], ...]:
    """For hooks of these classes, in this order, the positions of those that override each
    point of ``_POINTS``: kept by the classes' tuple (``Hooks`` is made a few times a run, with
    the same classes every run; a few combinations per engine, bounded all the same)."""
    plan = _PLANS.get(kinds)
    if plan is None:
        if len(_PLANS) >= 256:
            _PLANS.clear()
        overridden = [_points_of(kind) for kind in kinds]
        plan = _PLANS[kinds] = tuple(
            tuple(i for i, points in enumerate(overridden) if name in points) for name in _POINTS
        )
    return plan


class Hooks:
    """The hooks of one run, in order; each point holds only the hooks that override it
    (``tool_effect``: those of the ``before_tool_effect`` / ``after_tool_effect`` pair)."""

    def __init__(self, hooks: Sequence[Hook] = ()) -> None:
        self.all = all_ = tuple(hooks)
        plan = _plan_of(tuple(map(type, all_)))
        (
            self.around_run,
            self.before_model_call,
            self.after_model_call,
            self.after_model_turn,
            self.around_tool_effect,
            self.tool_effect,
            self.after_tool_result,
            self.after_step,
            self.on_commit,
            self.on_transition,
            self.after_run,
            self.stage_events,
        ) = [tuple([all_[i] for i in at]) if at else () for at in plan]

    @staticmethod
    def of(hooks: Sequence[Hook]) -> Hooks:
        """``Hooks(hooks)``, made once for the same hook objects in the same order (the engine
        asks for its hooks' commit and outbox callbacks a few times a run). Kept by the objects'
        ids, which cannot be reused while the kept ``Hooks`` holds the objects."""
        key = tuple(map(id, hooks))
        made = _MADE.get(key)
        if made is None:
            if len(_MADE) >= 64:
                _MADE.clear()
            made = _MADE[key] = Hooks(hooks)
        return made

    def stager(self) -> Callable[[Run, Sequence[Entry]], list[Event]] | None:
        """The session's outbox callback: the events the ``stage_events`` hooks give for a
        commit (``None`` when no hook stages any, so a commit pays nothing)."""
        hooks = self.stage_events
        if not hooks:
            return None

        def staged(run: Run, entries: Sequence[Entry]) -> list[Event]:
            return [event for hook in hooks for event in hook.stage_events(run, entries)]

        return staged

    def committer(self, session: RunSession) -> Callable[[Sequence[Entry]], None] | None:
        """The session's commit callback: the ``on_commit`` hooks (``None`` when there are
        none, so a commit pays nothing)."""
        hooks = self.on_commit
        if not hooks:
            return None
        # the session holds this callback: a reference back to it would make every session
        # (its run's whole state) a cycle only the garbage collector frees
        held = weakref.ref(session)

        def committed(entries: Sequence[Entry]) -> None:
            current = held()
            if current is None:
                return
            for hook in hooks:
                hook.on_commit(current, entries)

        return committed

    def transitioner(self, session: RunSession) -> Callable[[Sequence[Entry]], None] | None:
        """The session's callback for a commit that changes the run's status: the
        ``on_transition`` hooks, with each transition the commit carries (``None`` when there
        are none)."""
        hooks = self.on_transition
        if not hooks:
            return None
        held = weakref.ref(session)  # as ``committer``: no cycle through the session

        def moved(entries: Sequence[Entry]) -> None:
            current = held()
            if current is None:
                return
            for entry in entries:
                body = entry.body
                if isinstance(body, Transition):
                    for hook in hooks:
                        hook.on_transition(current, body, entry.created_at)

        return moved

    def attach(self, session: RunSession) -> None:
        """Give ``session`` these hooks' commit callbacks (commits, transitions, the outbox)."""
        session.on_commit = self.committer(session)
        session.on_transition = self.transitioner(session)
        session.outbox = self.stager()


class StepProtocol:
    """One run's steps, taken by the protocol in the module docstring. Made per drive."""

    def __init__(
        self,
        session: RunSession,
        agent: Agent,
        model: Model,
        gatekeeper: Gatekeeper,
        hooks: Hooks,
        *,
        stopping: Callable[[], bool],
        retries_itself: bool = False,
        credentials: CredentialIssuer | None = None,
        view: Callable[[Sequence[Message]], list[Message]] | None = None,
        delegation: Delegation | None = None,
    ) -> None:
        """``retries_itself``: the model retries transient failures itself (a ``ManagedModel``
        that says so): its failure is final, the protocol does not retry it again. ``view``:
        how the conversation is shown to the model (untrusted content marked as data); the
        journal keeps it as it was. ``delegation``: how a ``delegate`` call hands its subtask to
        a child run (``engine/delegation.py``)."""
        self.view = view
        self.delegation = delegation
        self.session = session
        self.agent = agent
        self.model = model
        self.gatekeeper = gatekeeper
        self.hooks = hooks
        self.stopping = stopping
        self.credentials = credentials
        self.specs = [t.spec() for t in agent.tools]
        self._model_retries = 1 if retries_itself else MODEL_RETRIES
        self._priority = run_priority(session.run.metadata)
        self.parallel = agent.parallel_tools
        """Act a turn's idempotent calls concurrently (``Agent.parallel_tools``)."""
        self._deferred: list[tuple[Tool, ToolCall, Position, ToolIntent, bool] | ToolResult] = []

    @property
    def state(self) -> RunState:
        return self.session.state

    # -- the run --------------------------------------------------------------------------------

    def begin(self, worker: str) -> None:
        """Note a recovery when a worker takes over a run that was RUNNING (its previous worker
        died or lost the lease): which calls were pending, whether they had started. A note rides
        at the *end* of the next commit, so the step it precedes keeps its seq and key."""
        state = self.state
        if state.status is not RunStatus.RUNNING or state.reopened:
            return
        pending = [
            {"call_id": p.call.id, "tool": p.call.name, "started": p.intent is not None}
            for p in state.pending_calls()
        ]
        self.session.note(
            Recovery(
                worker=worker,
                fence=self.session.fence,
                journal_seq=state.last_seq,
                pending_calls=tuple(pending),
            )
        )

    async def drive(self, pattern: Callable[[StepProtocol], Awaitable[None]]) -> None:
        """Run ``pattern`` over this protocol inside the ``around_run`` hooks, then ``after_run``."""

        async def inner() -> None:
            await pattern(self)

        body: Callable[[], Awaitable[None]] = inner
        for hook in reversed(self.hooks.around_run):
            body = _wrap_run(hook, self, body)
        await body()
        for hook in self.hooks.after_run:
            await hook.after_run(self)

    async def commit(self) -> None:
        """Commit what is staged (a no-op when nothing is)."""
        await self.session.flush()

    async def finish(self, output: Any, reason: str) -> None:
        await self.session.transition(RunStatus.COMPLETED, reason, output=output)

    async def stop(self, target: RunStatus, reason: str, **evidence: Any) -> None:
        """Leave RUNNING for ``target`` (FAILED, SUSPENDED, WAITING_FOR_HUMAN) with the reason."""
        await self.session.transition(target, reason, **evidence)

    # -- a model turn ---------------------------------------------------------------------------

    async def model_turn(self) -> bool:
        """Ask the model for the next turn and stage its answer; ``False`` once the run left
        RUNNING (a hook stopped it, or the model failed for good)."""
        session = self.session
        with call_context(
            priority=self._priority,
            deadline=deadline(session.state, session.now()),
            run_id=session.run.id,
            tenant=session.run.tenant,
        ):
            for hook in self.hooks.before_model_call:
                if not await hook.before_model_call(self):
                    return False
            turn = await self._ask_model()
        if turn is None:
            return False
        entry = session.stage(turn)
        for hook in self.hooks.after_model_call:
            await hook.after_model_call(self, turn)
        for observer in self.hooks.after_model_turn:
            observer.after_model_turn(self, turn)
        if self.hooks.after_step:
            self._after_step(entry)
        return True

    async def _ask_model(self) -> ModelTurn | None:
        """Call the model (retrying transient errors); ``None`` once the run has been stopped.

        A model that retries itself (the gateway: backoff, Retry-After, fallback) has given up
        when it raises: a retryable failure suspends the run at once."""
        delay = MODEL_BACKOFF
        retries = self._model_retries
        for attempt in range(1, retries + 1):
            started = time.perf_counter()
            try:
                messages = self.session.state.messages
                shown = self.view(messages) if self.view is not None else messages
                response = await self.model.complete(shown, self.specs)
            except ModelError as exc:
                if exc.retryable and attempt < retries:
                    await asyncio.sleep(delay)
                    delay *= 2
                    continue
                target = RunStatus.SUSPENDED if exc.retryable else RunStatus.FAILED
                await self.stop(
                    target, f"model error: {exc}", error=exc.to_dict(), attempts=attempt
                )
                return None
            return model_turn(
                response, self.session.state.turns + 1, (time.perf_counter() - started) * 1000
            )
        raise AssertionError("unreachable")  # pragma: no cover

    # -- tool calls -----------------------------------------------------------------------------

    async def tool_calls(self, pending: Sequence[PendingCall]) -> bool:
        """Take the pending calls of the latest turn in the model's order; ``False`` if the run
        left RUNNING on the way (in doubt, a human needed, suspended)."""
        session = self.session
        waiting: list[str] = []  # the children this turn's hand-offs wait for (a fan-out)
        held: int | None = None  # a result rides with the write-ahead commit of this call
        for index, item in enumerate(pending):
            if held is not None and index > held:  # that call did not commit: commit now
                await session.flush()
                held = None
            call, at = item.call, item.position
            try:
                tool = self._pinned_tool(call.name)
            except ToolVersionMissing as exc:
                await self._finish_deferred()
                await self.stop(RunStatus.SUSPENDED, str(exc), error=exc.to_dict(), call_id=call.id)
                return False
            except NotFound as exc:
                self._record_after_deferred(
                    ToolResult.failed(call.id, call.name, "unknown_tool", str(exc), position=at)
                )
                continue
            settled = item.settled.result()._replace(position=at) if item.settled else None
            if not (tool.idempotent and settled is None) or tool.name == DELEGATE_TOOL:
                await self._finish_deferred()  # what runs one at a time waits for the others
            if tool.name == DELEGATE_TOOL and self.delegation is not None:
                went = await self._delegate(item, tool)
                if went is False:
                    return False
                if isinstance(went, str):
                    waiting.append(went)
                continue
            if item.intent is not None:  # started before a crash: the replay rule
                if settled is None and not tool.idempotent:  # the in-doubt rule
                    await self.stop(
                        RunStatus.WAITING_FOR_HUMAN,
                        in_doubt_reason(session.run.id, tool.ref, call.id),
                        in_doubt=item.intent,
                    )
                    return False
                intent, replayed = item.intent, True
            else:
                try:
                    arguments = tool.parse_arguments(call.arguments)
                except ToolArgumentsInvalid as exc:
                    self._record_after_deferred(
                        ToolResult.failed(call.id, tool.name, exc.code, str(exc), position=at)
                    )
                    continue
                go = await self.gatekeeper.decide(session, tool, call, arguments, at=at)
                if go is Go.STOP:
                    return False
                if go is Go.SKIP:
                    continue
                intent = ToolIntent(  # intend
                    call_id=call.id,
                    tool=tool.name,
                    version=tool.version,
                    arguments=arguments,
                    key=f"{session.run.id}:{session.next_seq}",
                    idempotent=tool.idempotent,
                    read_only=tool.name in self.agent.read_only,
                    cost=tool.cost_estimate,
                    position=at,
                )
                session.stage(intent)
                replayed = False
                if not tool.idempotent:
                    await session.flush()  # write-ahead: the intent is durable before the effect
            if settled is None and tool.idempotent and self.parallel:
                self._defer(tool, call, at, intent, replayed)  # acts with the turn's others
                continue
            result = (  # act
                settled
                if settled is not None
                else await self._act(tool, call, at, intent, replayed)
            )
            for hook in self.hooks.after_tool_result:
                result = hook.after_tool_result(self, result)
            session.fault("after_effect")
            self._record(result)  # record
            if not tool.idempotent:
                if self._next_writes_ahead(pending, index):
                    held = index + 1
                else:
                    await session.flush()
        if held is not None:
            await session.flush()
        await self._finish_deferred()
        if waiting:  # every hand-off of the turn is made: wait for them all as a row
            agents = ", ".join(waiting)
            await self.stop(
                RunStatus.WAITING_FOR_CHILD,
                f"waiting for {len(waiting)} child run(s): {agents}"
                if len(waiting) > 1
                else f"waiting for child run {agents}",
            )
            return False
        return True

    def _next_writes_ahead(self, pending: Sequence[PendingCall], index: int) -> bool:
        """Whether the result of call ``index`` may ride with the next call's write-ahead
        commit instead of a commit of its own: the next call of the same turn is a new call of
        a non-idempotent tool, so its decision and intent are committed before its effect, and
        nothing but deciding it comes between (no model call, no effect). A crash in between
        leaves the run as a crash before the result's own commit did: the call in doubt. When
        the next call ends up not committing (refused, bad arguments), the loop commits before
        going on (``tool_calls``)."""
        if index + 1 >= len(pending):
            return False
        following = pending[index + 1]
        if following.intent is not None or following.settled is not None:
            return False
        try:
            tool = self._pinned_tool(following.call.name)
        except AutonomicError:
            return False
        return not tool.idempotent and tool.name != DELEGATE_TOOL

    def _defer(
        self, tool: Tool, call: ToolCall, at: Position, intent: ToolIntent, replayed: bool
    ) -> None:
        """Keep an idempotent call, decided and intended, to act with the turn's other
        idempotent calls at once (``_finish_deferred``)."""
        self._deferred.append((tool, call, at, intent, replayed))
        self.session.before_transition = self._finish_deferred

    def _record_after_deferred(self, result: ToolResult) -> None:
        """Record ``result`` now, or after the deferred calls before it when there are some
        (the journal keeps the model's order)."""
        if self._deferred:
            self._deferred.append(result)
        else:
            self._record(result)

    async def _finish_deferred(self) -> None:
        """Act the deferred calls concurrently - a model's calls of one turn are independent,
        and an idempotent call may run again after a crash, so their effects may overlap -
        then record their results in the model's order, screened like any."""
        batch, self._deferred = self._deferred, []
        self.session.before_transition = None
        calls = [item for item in batch if not isinstance(item, ToolResult)]
        if not calls:
            for ready in batch:
                assert isinstance(ready, ToolResult)
                self._record(ready)
            return
        if len(calls) == 1:
            acted = [await self._act(*calls[0])]
        else:
            async with asyncio.TaskGroup() as group:
                tasks = [group.create_task(self._act(*item)) for item in calls]
            acted = [t.result() for t in tasks]
        results = iter(acted)
        for item in batch:
            if isinstance(item, ToolResult):  # a call refused before acting, in its place
                self._record(item)
                continue
            result = next(results)
            for hook in self.hooks.after_tool_result:
                result = hook.after_tool_result(self, result)
            self.session.fault("after_effect")
            self._record(result)

    async def _delegate(self, item: PendingCall, tool: Tool) -> bool | str:
        """A ``delegate`` call: route, decide, journal the hand-off, create the child (once),
        then record its outcome; ``False`` when a gate stopped the run, the child run's id and
        agent (as text) when it is still at work: the turn's other calls go on and the run then
        waits for all its children as a row (``engine/delegation.py``)."""
        assert self.delegation is not None
        session, call, at = self.session, item.call, item.position
        if item.intent is not None:  # the hand-off is journaled: the child exists or is made now
            intent = item.intent
        else:
            try:
                arguments = self.delegation.route(self.agent, tool.parse_arguments(call.arguments))
            except (ToolArgumentsInvalid, InvalidInput) as exc:
                self._record(
                    ToolResult.failed(
                        call.id, tool.name, "delegation_refused", str(exc), position=at
                    )
                )
                return True
            go = await self.gatekeeper.decide(session, tool, call, arguments, at=at)
            if go is Go.STOP:
                return False
            if go is Go.SKIP:
                return True
            intent = ToolIntent(
                call_id=call.id,
                tool=tool.name,
                version=tool.version,
                arguments=arguments,
                key=f"{session.run.id}:{session.next_seq}",
                idempotent=True,
                position=at,
            )
            session.stage(intent)
            await session.flush()  # write-ahead: the hand-off is durable before the child exists
        session.fault("before_effect")
        await session.check_lease()
        child = await self.delegation.child(session.run, session.state, Handoff.of_intent(intent))
        session.fault("after_effect")
        result = self.delegation.outcome(child, intent) if child is not None else None
        if result is None:
            what = child_run_id(session.run.id, intent.key)
            return f"{what} ({intent.arguments.get('agent')})"
        result = result._replace(position=at)
        for hook in self.hooks.after_tool_result:
            result = hook.after_tool_result(self, result)
        self._record(result)
        await session.flush()
        return True

    def _record(self, result: ToolResult) -> None:
        entry = self.session.stage(result)
        if self.hooks.after_step:
            self._after_step(entry)

    def _after_step(self, entry: Entry) -> None:
        for hook in self.hooks.after_step:
            hook.after_step(self, entry)

    def _pinned_tool(self, name: str) -> Tool:
        """The tool version this run pinned when it started."""
        for ref in self.session.state.tools:
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

    async def act(
        self,
        tool: Tool,
        call: ToolCall,
        at: Position,
        intent: ToolIntent,
        *,
        replayed: bool = False,
    ) -> ToolResult:
        """Step 4 alone, for a pattern that journals its own intent and result around it (the
        compensation pattern): the effect under the contract, after the lease check."""
        return await self._act(tool, call, at, intent, replayed)

    async def _act(
        self, tool: Tool, call: ToolCall, at: Position, intent: ToolIntent, replayed: bool
    ) -> ToolResult:
        """The effect under the contract: timeout and retries here, breakers as hooks.

        A non-idempotent effect starts only after the lease is checked (``check_lease``): a
        worker paused past its lease (a GC pause, SIGSTOP) whose run was taken over raises
        ``LeaseLost`` here instead of acting as a zombie. The tool gets the run's fencing token
        (``ctx.fence``) to hand to systems that can refuse a stale writer."""
        session = self.session
        session.fault("before_effect")
        if not tool.idempotent:
            await session.check_lease()
        issued = self._issue_credentials(tool, call)
        if isinstance(issued, ToolResult):
            return issued.completed(
                replayed=replayed or None, attempts=None, latency_ms=None, position=at
            )
        ctx = ToolContext(
            run_id=session.run.id,
            call_id=call.id,
            idempotency_key=intent.key,
            tenant=session.run.tenant,
            metadata=session.run.metadata,
            fence=session.fence,
            credentials=issued,
        )
        started = time.perf_counter()
        attempts = tool.retry.attempts if tool.idempotent else 1

        tries = 0

        async def effect() -> tuple[ToolResult, bool]:
            nonlocal tries
            retryable = False
            for attempt in range(1, attempts + 1):
                tries = attempt
                result, retryable = await _attempt(tool, call, intent.arguments, ctx)
                if result.ok or attempt == attempts or not retryable:
                    break
                await asyncio.sleep(tool.retry.delay(attempt))
            return result, not result.ok and retryable  # raises and timeouts: unhealthy

        run: Effect = effect
        for hook in reversed(self.hooks.around_tool_effect):
            run = _wrap_effect(hook, self, tool, call, run)
        observers = self.hooks.tool_effect
        if not observers:
            result, _ = await run()
        elif len(observers) == 1:  # the usual one observer (tracing, or metrics), inline
            observer = observers[0]
            began = observer.before_tool_effect(self, tool, call, intent)
            try:
                result, _ = await run()
            except BaseException as exc:
                observer.after_tool_effect(began, None, exc)
                raise
            observer.after_tool_effect(began, result, None)
        else:
            result = await _observed(self, observers, tool, call, intent, run)
        if issued:  # a result that echoes a secret never reaches the journal or the model
            result = _redacted(result, tuple(c.reveal_unchecked() for c in issued.values()))
        return result.completed(
            replayed=replayed or None,  # journaled only when true: a first run needs no mark
            attempts=tries if attempts > 1 and tries else None,
            latency_ms=round((time.perf_counter() - started) * 1000, 3),
            position=at,
        )

    def _issue_credentials(
        self, tool: Tool, call: ToolCall
    ) -> dict[str, ScopedCredential] | ToolResult:
        """The scoped credentials ``tool``'s contract asks for, one per name, for this call; or
        the failed result the call gets when they cannot be issued (never the secret: the
        message names only what is missing)."""
        if not tool.credentials:
            return {}
        run = self.session.run
        if self.credentials is None:
            return ToolResult.failed(
                call.id, tool.name, "credentials_unavailable",
                f"{tool.ref} needs credentials {list(tool.credentials)} but this worker has no "
                "secret source (AUTONOMIC_CREDENTIALS=env or file:PATH)",
            )  # fmt: skip
        issued: dict[str, ScopedCredential] = {}
        for name in tool.credentials:
            scope = CredentialScope(run.tenant, run.id, tool.name, name)
            try:
                issued[name] = self.credentials.issue(scope)
            except AutonomicError as exc:
                return ToolResult.failed(call.id, tool.name, "credentials_unavailable", exc.message)
        return issued


def _redacted(result: ToolResult, secrets: tuple[str, ...]) -> ToolResult:
    """``result`` with every occurrence of an issued secret in its output or error replaced."""
    output = redact(result.output, secrets)
    error = redact(result.error, secrets)
    if output == result.output and error == result.error:
        return result
    return result._replace(output=output, error=cast("dict[str, Any] | None", error))


async def _attempt(
    tool: Tool, call: ToolCall, arguments: dict[str, Any], ctx: ToolContext
) -> tuple[ToolResult, bool]:
    """One try, and whether a failure is worth retrying (raises and timeouts are; bad output and
    refusals by the tool's own validation are not)."""
    try:
        output = await tool.invoke(arguments, ctx)
    except TimeoutError:
        message = f"{tool.ref} timed out after {tool.timeout}s"
        return ToolResult.failed(call.id, tool.name, "tool_timeout", message), True
    except AutonomicError as exc:
        return ToolResult.failed(call.id, tool.name, exc.code, str(exc)), exc.retryable
    except Exception as exc:  # the tool reported a failure: its error result, with where it raised
        failure = Failure.of(exc)  # (the message one line, secrets masked: the model reads it)
        error = {
            "code": "tool_error",
            "message": f"{failure.type}: {failure.message}",
            "where": failure.where,
            "digest": failure.digest,
        }
        return ToolResult(call.id, tool.name, ok=False, error=error), True
    try:
        tool.validate_output(output)
    except InvalidInput as exc:
        return ToolResult.failed(call.id, tool.name, "tool_output_invalid", str(exc)), False
    return ToolResult(call.id, tool.name, ok=True, output=output), False


def in_doubt_reason(run_id: str, ref: str, call_id: str) -> str:
    """Why a run waits in doubt, and the commands that settle it."""
    return (
        f"in doubt: {ref} call {call_id} started but its result was never recorded, and the "
        f"tool is not idempotent; find out whether it took effect, then `autonomic settle "
        f"{run_id} --executed --result JSON --reason TEXT` or `autonomic settle {run_id} "
        "--not-executed --reason TEXT`"
    )


async def _observed(
    step: StepProtocol,
    observers: Sequence[Hook],
    tool: Tool,
    call: ToolCall,
    intent: ToolIntent,
    run: Effect,
) -> ToolResult:
    """``run`` between the ``before_tool_effect`` and ``after_tool_effect`` of ``observers``
    (the last to begin is the first told of the end)."""
    began = [hook.before_tool_effect(step, tool, call, intent) for hook in observers]
    try:
        result, _ = await run()
    except BaseException as exc:
        for hook, token in zip(reversed(observers), reversed(began), strict=True):
            hook.after_tool_effect(token, None, exc)
        raise
    for hook, token in zip(reversed(observers), reversed(began), strict=True):
        hook.after_tool_effect(token, result, None)
    return result


def _wrap_effect(
    hook: Hook, step: StepProtocol, tool: Tool, call: ToolCall, inner: Effect
) -> Effect:
    async def run() -> tuple[ToolResult, bool]:
        return await hook.around_tool_effect(step, tool, call, inner)

    return run


def _wrap_run(
    hook: Hook, step: StepProtocol, inner: Callable[[], Awaitable[None]]
) -> Callable[[], Awaitable[None]]:
    async def run() -> None:
        await hook.around_run(step, inner)

    return run


def model_turn(response: ModelResponse, turn: int, latency_ms: float) -> ModelTurn:
    """The journal's ``model.response`` for an answer: the one new assistant message, its usage
    and latency, and (from the gateway) who served it and what it cost."""
    return ModelTurn(
        turn=turn,
        content=response.content,
        tool_calls=response.tool_calls,
        model=response.model,
        call=ModelCall.of_response(response),
        finish_reason=response.finish_reason,
        latency_ms=round(latency_ms, 3),
        reasoning=_reasoning(response),
    )


def _reasoning(response: ModelResponse) -> dict[str, Any] | None:
    found = extract(response.content, response.reasoning)
    return found.to_dict() if found is not None else None


PRIORITIES = ", ".join(p.value for p in Priority)


def run_priority(metadata: Mapping[str, Any]) -> Priority:
    """The priority class of a run's model calls: ``metadata["priority"]``, default normal.

    Validated when the run starts (an entry point), so a bad value never reaches a worker."""
    raw = metadata.get("priority", Priority.NORMAL.value)
    try:
        return Priority(raw)
    except ValueError:
        raise InvalidInput(
            f"metadata priority: {raw!r} is not a priority class (expected one of {PRIORITIES})",
            hint='e.g. metadata={"priority": "background"} to let calls fall back at once',
        ) from None


def deadline(state: RunState, now: float) -> float | None:
    """The run's wall-clock budget end as a ``time.monotonic()`` value (``None``: no budget).

    ``now`` is the engine's clock (seconds since the epoch), the clock ``started_at`` uses."""
    wall = (state.budget or {}).get("wall_seconds")
    if wall is None:
        return None
    left = state.started_at + float(wall) - now
    return time.monotonic() + max(0.0, left)
