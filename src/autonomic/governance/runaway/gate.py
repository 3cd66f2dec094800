"""The runaway guards as one gate of the chain: loop detection, per-tool budgets and the taint
rule before every tool call.

The engine asks the gate chain with one ``ProposedAction`` (the thought of the turn that proposed
the call, the provenance of what the model read, the risk an earlier gate gave, the run's folded
state); this gate runs the runaway guards (``Guards``' checks) over the run's history and answers
with their ``Decision`` (``None`` when nothing objected): SUSPEND with the finding's reason and
evidence (the similar steps quoted with their seq), or a raised risk - APPROVE at MEDIUM, BLOCK at
HIGH.

**Where the history comes from.** ``GuardState`` is *rebuilt from the folded journal* at check
time, not journaled as records of its own: ``RunState.guard_steps`` keeps the latest executed tool
calls (seq, tool, arguments, the thought of the turn that proposed them, ``read_only``), and the
usage totals, per-tool counts, taint labels and the loop acknowledgement are folded from entries
the engine writes anyway (``tool.intent``, ``tool.result``, ``model.response``, ``transition``).
So a replay after a crash sees exactly the history the first attempt saw, journals written before
this wiring work unchanged, and nothing is stored twice. A per-run cache applies only the steps
added since the last check (same state as a rebuild, so the cost stays flat). Decisions themselves
are journaled by the engine and replayed, so a decided step is never asked again.

**Acknowledgement.** When an operator reopens a run the loop guard suspended (``autonomic resume RUN
--force``), the transition's seq becomes ``RunState.loop_ack_seq``: steps before it are the
acknowledged repeats (``GuardState.acknowledge``) and do not count again.

The model-call budget is ``model_budget.ModelBudget``; the screening of tool results is
``autonomic.governance.injection.screen_result``.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from autonomic.core.canonical import canonical_json
from autonomic.core.state import RunState
from autonomic.governance.action import ActionKind, ProposedAction
from autonomic.governance.decision import Decision, Verdict
from autonomic.governance.runaway.budget import UNLIMITED, BudgetGuard, run_budget
from autonomic.governance.runaway.loops import LoopGuard, LoopPolicy
from autonomic.governance.runaway.state import GuardState
from autonomic.governance.runaway.taint import TaintGuard
from autonomic.governance.runaway.tenant import TenantLedger
from autonomic.ports.embedder import Embedder
from autonomic.ports.injection_classifier import InjectionClassifier

GATE_NAME = "runaway"


@dataclass
class Runaway:
    """The engine's runaway-guard configuration (``Engine(..., runaway=Runaway(...))``).

    Args:
        embedder: vectors for near-repeat detection (default: hashed n-grams, offline).
        loops: loop-detection thresholds.
        window: how many recent tool calls loop detection compares with.
        ledger: per-tenant daily budgets over shared counters (``None``: no tenant limits).
        screen_results: screen every tool result for injected instructions before the model
            reads it (turn off only for trusted, operator-written tools in benchmarks).
    """

    embedder: Embedder | None = None
    loops: LoopPolicy | None = None
    window: int = 20
    ledger: TenantLedger | None = None
    screen_results: bool = True
    enabled: bool = True
    classifier: InjectionClassifier | None = None
    """An optional local model scoring tool results for injections (one more signal)."""
    _gate: RunawayGate | None = field(default=None, init=False, repr=False)

    async def close(self) -> None:
        """Close the tenant ledger's counters (a Redis connection)."""
        if self.ledger is not None:
            await self.ledger.counters.close()

    def gate(self) -> RunawayGate:
        if self._gate is None:
            self._gate = RunawayGate(self)
        return self._gate


class RunawayGate:
    """Loop detection, per-tool budgets and the taint rule as an action gate (see the module)."""

    name = GATE_NAME

    def __init__(self, config: Runaway, *, cache_size: int = 1024) -> None:
        self.config = config
        self.embedder: Embedder = (
            config.embedder if config.embedder is not None else default_embedder()
        )
        """The embedder every run's history uses: the configured one, or the offline default
        made here, when the engine builds its gates (before its first claim), so a fresh
        worker's first step does not import and build it."""
        self._loops = LoopGuard(config.loops)
        self._taint = TaintGuard()
        self._cache: OrderedDict[str, tuple[int, int, GuardState]] = OrderedDict()
        self._cache_size = cache_size
        self._pending: dict[str, ProposedAction] = {}

    async def check(self, action: ProposedAction) -> Decision | None:
        run, state, _ = action.in_run()
        history = self.history(run.id, state)
        history.tool_calls = dict(state.intent_counts)
        history.cost = state.tool_cost + state.model_cost
        findings = self._loops.check(action, history)
        budget = run_budget(state)
        if budget is not UNLIMITED:  # with no limit set, the budget guard finds nothing
            findings.extend(BudgetGuard(budget).check(action, history))
        findings.extend(self._taint.check(action, history))
        if not findings:
            self._pending[run.id] = action
            while len(self._pending) > self._cache_size:
                del self._pending[next(iter(self._pending))]
            return None
        decided = Decision.of_findings(findings, risk=action.risk, gate=GATE_NAME)
        evidence: dict[str, Any] = {
            "code": decided.code,
            "guards": decided.findings_record(),
            "finding": dict(decided.findings[0].evidence),
        }
        return Decision(
            decided.verdict,
            decided.explanation,
            gate=GATE_NAME,
            risk=None if decided.verdict is Verdict.SUSPEND else decided.risk,
            evidence=evidence,
            findings=decided.findings,
        )

    def history(self, run_id: str, state: RunState) -> GuardState:
        """The guard history of ``state``: the executed calls since the last acknowledgement."""
        # ``guard_steps`` is in journal order: the steps after a seq are a suffix, found from the
        # end (a whole pass over the kept steps on every check was most of the gate's cost)
        kept, ack = state.guard_steps, state.loop_ack_seq
        last = kept[-1]["seq"] if kept and kept[-1]["seq"] > ack else 0
        cached = self._cache.get(run_id)
        if cached is not None and cached[0] == ack and cached[1] <= last:
            _, seen, guard_state = cached
            fresh = _after(kept, max(seen, ack))
        else:
            guard_state = GuardState(self.embedder, window=self.config.window)
            fresh = _after(kept, ack)[-self.config.window :]
        pending = self._pending.pop(run_id, None)
        # the check that allowed it computed its features, arguments' canonical JSON included
        pending_key = guard_state.features(pending).args_key if pending is not None else ""
        for step in fresh:
            if pending is not None and _same(pending, pending_key, step):
                # the call this gate allowed last time, now executed: its features (vectors)
                # were computed by the check; recording the same inputs gives the same state
                guard_state.executed(pending, seq=int(step["seq"]))
                pending = None
            else:
                guard_state.apply(_record(step))
        self._cache[run_id] = (state.loop_ack_seq, last, guard_state)
        self._cache.move_to_end(run_id)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return guard_state


def default_embedder() -> Embedder:
    """The offline default embedder (hashed character n-grams; ``GuardState`` makes the same one
    when given none)."""
    from autonomic.governance.runaway.hashed import HashedNgramEmbedder

    return HashedNgramEmbedder()


def _after(steps: list[dict[str, Any]], seq: int) -> list[dict[str, Any]]:
    """The suffix of ``steps`` (ascending seq) with seq above ``seq``."""
    start = len(steps)
    while start and steps[start - 1]["seq"] > seq:
        start -= 1
    return steps[start:]


def _same(action: ProposedAction, args_key: str, step: Mapping[str, Any]) -> bool:
    """Whether ``step`` is ``action`` executed; ``args_key``: its arguments' canonical JSON."""
    return (
        action.tool == step["tool"]
        and action.thought == step["thought"]
        and action.read_only == step["read_only"]
        and args_key == canonical_json(step["arguments"])
    )


def _record(step: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "k": "step",
        "seq": step["seq"],
        "kind": ActionKind.TOOL_CALL.value,
        "agent": "",
        "tool": step["tool"],
        "arguments": step["arguments"],
        "thought": step["thought"],
        "read_only": step["read_only"],
    }
