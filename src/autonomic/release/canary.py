"""Canary by outcome quality: a share of new runs goes to a candidate version; the candidate is
promoted or rolled back from how its runs *ended*, not from whether they crashed.

Each ended run is an ``Outcome``: bad when it did not complete, a human denied one of its
actions or overrode it (a settlement, an operator's forced transition), or it cost or took more
than the canary's ceilings. Candidate and live outcomes are paired in the order the runs ended
and fed to the sequential test of ``release/sequential.py`` (its rule and bounds are stated
there and in docs/release-safety.md). Every decision - the canary's start, an automatic
rollback or promotion with its evidence, an operator's promote or rollback that reverses it -
is an act in the audit log (``canary.start``, ``canary.rollback``, ``canary.promote``): the
log is also where the canary's state is read back from, so every process (and
``autonomic canary status``) sees the same state without a table of its own.

A run's arm is recorded in its metadata (``metadata["canary"] = {"arm": "candidate", ...}``),
so the evaluation needs nothing but the store.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from autonomic.core.audit import AuditAct
from autonomic.core.entries import ApprovalEvent, ModelTurn, Settlement, Transition
from autonomic.core.journal import Entry
from autonomic.core.run import Run, RunStatus
from autonomic.engine.step import Hook
from autonomic.errors import InvalidInput, NotFound
from autonomic.observability.kpis import ENDED
from autonomic.release.sequential import Sprt, SprtRule, Verdict

if TYPE_CHECKING:
    from autonomic.engine.agent import Agent
    from autonomic.ports.store import Store

__all__ = [
    "Canary",
    "CanaryHook",
    "CanaryState",
    "CanaryStatus",
    "Outcome",
    "canary_state",
    "outcome_of",
]

log = logging.getLogger("autonomic.canary")

Arm = Literal["live", "candidate"]
Phase = Literal["running", "rolled_back", "promoted"]


@dataclass(frozen=True, slots=True)
class Outcome:
    """How one run ended, as the canary judges it."""

    run_id: str
    arm: Arm
    ended_at: float
    completed: bool
    denied: bool
    overridden: bool
    cost: float
    latency: float

    def bad(self, cost_ceiling: float | None, latency_ceiling: float | None) -> bool:
        return (
            not self.completed
            or self.denied
            or self.overridden
            or (cost_ceiling is not None and self.cost > cost_ceiling)
            or (latency_ceiling is not None and self.latency > latency_ceiling)
        )


def outcome_of(run: Run, entries: Sequence[Entry], arm: Arm) -> Outcome:
    """The outcome of an ended run from its journal."""
    denied = overridden = False
    cost = 0.0
    for entry in entries:
        body = entry.body
        if isinstance(body, ApprovalEvent) and body.status == "rejected":
            denied = True
        elif isinstance(body, Settlement) or (
            isinstance(body, Transition) and body.by == "operator"
        ):
            overridden = True
        elif isinstance(body, ModelTurn):
            cost += float(body.call.cost or 0.0)
    return Outcome(
        run_id=run.id,
        arm=arm,
        ended_at=run.updated_at,
        completed=run.status is RunStatus.COMPLETED,
        denied=denied,
        overridden=overridden,
        cost=cost,
        latency=max(0.0, run.updated_at - run.created_at),
    )


@dataclass(frozen=True, slots=True)
class CanaryState:
    """A canary as the audit log tells it: the latest ``canary.*`` act for the agent."""

    agent: str
    live_version: str
    candidate_version: str
    share: float
    phase: Phase
    started_at_pos: int
    by: str
    reason: str
    acts: tuple[dict[str, Any], ...] = ()


async def canary_state(store: Store, agent: str) -> CanaryState | None:
    """Fold the audit log's ``canary.*`` acts for ``agent``; ``None`` if it never had a canary."""
    state: CanaryState | None = None
    after = -1
    while rows := await store.scan_audit_log(after=after, limit=5_000):
        for pos, kind, _run, body, _hash, _at in rows:
            after = pos
            if kind != "act" or '"canary.' not in body:
                continue
            act = json.loads(body).get("act", {})
            detail = act.get("detail", {})
            if detail.get("agent") != agent:
                continue
            name = act.get("act")
            record = {"pos": pos, "act": name, "by": act.get("by"), **detail}
            if name == "canary.start":
                state = CanaryState(
                    agent=agent,
                    live_version=str(detail["live_version"]),
                    candidate_version=str(detail["candidate_version"]),
                    share=float(detail["share"]),
                    phase="running",
                    started_at_pos=pos,
                    by=str(act.get("by")),
                    reason=str(detail.get("reason", "")),
                    acts=(record,),
                )
            elif state is not None and name in ("canary.rollback", "canary.promote"):
                state = CanaryState(
                    agent=agent,
                    live_version=state.live_version,
                    candidate_version=state.candidate_version,
                    share=state.share,
                    phase="rolled_back" if name == "canary.rollback" else "promoted",
                    started_at_pos=state.started_at_pos,
                    by=str(act.get("by")),
                    reason=str(detail.get("reason", "")),
                    acts=(*state.acts, record),
                )
    return state


@dataclass(frozen=True, slots=True)
class CanaryStatus:
    """What ``autonomic canary status`` prints: the state, the test so far, the means per arm."""

    state: CanaryState
    pairs: int
    discordant: int
    candidate_worse: int
    llr: float
    verdict: Verdict
    arms: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "agent": self.state.agent,
            "live_version": self.state.live_version,
            "candidate_version": self.state.candidate_version,
            "share": self.state.share,
            "phase": self.state.phase,
            "decided_by": self.state.by,
            "reason": self.state.reason,
            "pairs": self.pairs,
            "discordant": self.discordant,
            "candidate_worse": self.candidate_worse,
            "llr": round(self.llr, 4),
            "verdict": self.verdict.value,
            "arms": self.arms,
            "history": list(self.state.acts),
        }


class Canary:
    """One agent's canary: route new runs, evaluate ended ones, record decisions.

    Args:
        store: where the runs and the audit log are.
        live: the version serving now.
        candidate: the version under test (same agent name, another version).
        share: the fraction of new runs routed to the candidate while the canary runs.
        rule: the sequential test's parameters.
        cost_ceiling: a run costing more (dollars) counts as bad; ``None``: cost not judged.
        latency_ceiling: a run taking longer (seconds) counts as bad; ``None``: not judged.
    """

    def __init__(
        self,
        store: Store,
        agent: str,
        live_version: str,
        candidate_version: str,
        *,
        share: float = 0.1,
        rule: SprtRule | None = None,
        cost_ceiling: float | None = None,
        latency_ceiling: float | None = None,
    ) -> None:
        if live_version == candidate_version:
            raise InvalidInput(
                f"agent {agent}: the candidate has the live version {live_version!r}",
                hint="give the candidate another version",
            )
        if not 0 < share < 1:
            raise InvalidInput(f"canary share must be between 0 and 1, got {share}")
        self.store = store
        self.agent = agent
        self.live_version = live_version
        self.candidate_version = candidate_version
        self.share = share
        self.rule = rule or SprtRule()
        self.cost_ceiling = cost_ceiling
        self.latency_ceiling = latency_ceiling
        self.state: CanaryState | None = None

    @classmethod
    def of(cls, store: Store, live: Agent, candidate: Agent, **options: Any) -> Canary:
        """The canary of ``candidate`` against ``live`` (two versions of one agent)."""
        if live.name != candidate.name:
            raise InvalidInput(
                f"a canary compares two versions of one agent, not {live.name!r} and "
                f"{candidate.name!r}"
            )
        return cls(store, live.name, live.key[1], candidate.key[1], **options)

    @classmethod
    async def from_log(cls, store: Store, agent: str) -> Canary:
        """The agent's latest canary as its ``canary.start`` act set it up (the CLI's view)."""
        state = await canary_state(store, agent)
        if state is None:
            raise NotFound(
                f"agent {agent} has no canary in the audit log",
                hint="start one from Python: Canary.of(store, live, candidate).start(by=...)",
            )
        start = state.acts[0]
        rule = start.get("rule") or {}
        canary = cls(
            store,
            agent,
            state.live_version,
            state.candidate_version,
            share=state.share,
            rule=SprtRule(**rule),
            cost_ceiling=start.get("cost_ceiling"),
            latency_ceiling=start.get("latency_ceiling"),
        )
        canary.state = state
        return canary

    async def start(self, *, by: str, reason: str = "") -> CanaryState:
        await self.store.append_audit(
            AuditAct(
                "canary.start",
                by,
                {
                    "agent": self.agent,
                    "live_version": self.live_version,
                    "candidate_version": self.candidate_version,
                    "share": self.share,
                    "cost_ceiling": self.cost_ceiling,
                    "latency_ceiling": self.latency_ceiling,
                    "rule": {
                        "alpha": self.rule.alpha,
                        "beta": self.rule.beta,
                        "theta1": self.rule.theta1,
                        "min_pairs": self.rule.min_pairs,
                        "max_pairs": self.rule.max_pairs,
                    },
                    "reason": reason,
                },
            )
        )
        return await self.refresh()

    async def refresh(self) -> CanaryState:
        state = await canary_state(self.store, self.agent)
        if state is None:
            raise NotFound(f"agent {self.agent} has no canary", hint="start one first")
        self.state = state
        return state

    def arm(self, key: str) -> Arm:
        """The arm a new run with ``key`` (its id, or its task) goes to: deterministic in
        ``key``, so a retried start lands on the same arm. After a rollback every run goes to
        the live version, after a promotion to the candidate."""
        state = self.state
        if state is None or state.phase == "rolled_back":
            return "live"
        if state.phase == "promoted":
            return "candidate"
        digest = hashlib.sha256(key.encode()).digest()
        return "candidate" if int.from_bytes(digest[:8], "big") / 2**64 < self.share else "live"

    def choose(self, key: str, live: Agent, candidate: Agent) -> tuple[Agent, dict[str, Any]]:
        """The agent a new run goes to and the metadata to start it with (its arm, recorded
        so ``evaluate`` finds it): ``engine.start(agent, task, metadata={**mine, **meta})``."""
        arm = self.arm(key)
        agent = candidate if arm == "candidate" else live
        if agent.name != self.agent or agent.version != (
            self.candidate_version if arm == "candidate" else self.live_version
        ):
            raise InvalidInput(
                f"canary of {self.agent} {self.live_version} -> {self.candidate_version}: "
                f"got {agent.name} {agent.version} for the {arm} arm",
                hint="pass the live and the candidate versions the canary was started with",
            )
        return agent, {"canary": {"arm": arm, "version": agent.version}}

    async def outcomes(self) -> list[Outcome]:
        """The ended canary runs of the agent, oldest end first."""
        found: list[Outcome] = []
        before: tuple[float, str] | None = None
        while True:
            page = await self.store.page_runs(
                tenant=None, agent=self.agent, before=before, limit=500
            )
            if not page:
                break
            for run in page:
                mark = run.metadata.get("canary")
                if not isinstance(mark, dict) or run.status not in ENDED:
                    continue
                if mark.get("arm") not in ("live", "candidate"):
                    continue
                versions = (self.live_version, self.candidate_version)
                if run.agent_version not in versions:
                    continue
                arm: Arm = "candidate" if mark["arm"] == "candidate" else "live"
                found.append(outcome_of(run, await self.store.load_journal(run.id), arm))
            before = (page[-1].created_at, page[-1].id)
        return sorted(found, key=lambda o: (o.ended_at, o.run_id))

    async def evaluate(self, *, by: str = "canary") -> CanaryStatus:
        """Run the test over the ended runs; while the canary runs, journal a decision it reaches."""
        state = await self.refresh()
        outcomes = await self.outcomes()
        sprt = Sprt(self.rule)
        live = [o for o in outcomes if o.arm == "live"]
        candidate = [o for o in outcomes if o.arm == "candidate"]
        for a, b in zip(live, candidate, strict=False):
            sprt.add(
                a.bad(self.cost_ceiling, self.latency_ceiling),
                b.bad(self.cost_ceiling, self.latency_ceiling),
            )
        if state.phase == "running" and sprt.verdict in (Verdict.ROLLBACK, Verdict.PROMOTE):
            act = "canary.rollback" if sprt.verdict is Verdict.ROLLBACK else "canary.promote"
            await self._decide(
                act,
                by,
                f"sequential test: {sprt.verdict.value} after {sprt.pairs} pairs "
                f"({sprt.candidate_worse} of {sprt.discordant} discordant pairs worse on the "
                f"candidate, log-likelihood ratio {sprt.llr:.3f})",
                {"pairs": sprt.pairs, "discordant": sprt.discordant, "llr": round(sprt.llr, 6)},
            )
            state = await self.refresh()
        return CanaryStatus(
            state=state,
            pairs=sprt.pairs,
            discordant=sprt.discordant,
            candidate_worse=sprt.candidate_worse,
            llr=sprt.llr,
            verdict=sprt.verdict,
            arms={"live": self._summary(live), "candidate": self._summary(candidate)},
        )

    async def promote(self, *, by: str, reason: str) -> CanaryState:
        """An operator promotes the candidate (also after an automatic rollback)."""
        await self.refresh()
        await self._decide("canary.promote", by, reason or "promoted by an operator")
        return await self.refresh()

    async def rollback(self, *, by: str, reason: str) -> CanaryState:
        """An operator rolls the candidate back (also after an automatic promotion)."""
        await self.refresh()
        await self._decide("canary.rollback", by, reason or "rolled back by an operator")
        return await self.refresh()

    async def _decide(
        self, act: str, by: str, reason: str, evidence: dict[str, Any] | None = None
    ) -> None:
        detail: dict[str, Any] = {
            "agent": self.agent,
            "live_version": self.live_version,
            "candidate_version": self.candidate_version,
            "reason": reason,
        }
        if evidence:
            detail["evidence"] = evidence
        await self.store.append_audit(AuditAct(act, by, detail))

    def _summary(self, outcomes: list[Outcome]) -> dict[str, Any]:
        return summary(outcomes, self.cost_ceiling, self.latency_ceiling)


def summary(
    outcomes: Sequence[Outcome], cost_ceiling: float | None, latency_ceiling: float | None
) -> dict[str, Any]:
    """Per arm: runs, completion rate, denials, overrides, bad share, mean cost and latency."""
    n = len(outcomes)
    if not n:
        return {"runs": 0}
    return {
        "runs": n,
        "completion_rate": round(sum(o.completed for o in outcomes) / n, 4),
        "denied": sum(o.denied for o in outcomes),
        "overridden": sum(o.overridden for o in outcomes),
        "bad_rate": round(sum(o.bad(cost_ceiling, latency_ceiling) for o in outcomes) / n, 4),
        "mean_cost": round(sum(o.cost for o in outcomes) / n, 6),
        "mean_latency": round(sum(o.latency for o in outcomes) / n, 4),
    }


class CanaryHook(Hook):
    """On an engine: evaluate the canary after every ``every``-th ended run of it, so a decision
    is reached (and journaled) without anyone calling ``evaluate``. The evaluation happens after
    the run has ended (``after_run``), never inside one of its steps; an evaluation that fails
    is logged and retried at the next one - it must not fail the run that triggered it."""

    def __init__(self, canary: Canary, *, every: int = 10) -> None:
        if every < 1:
            raise InvalidInput(f"canary hook: every must be at least 1, got {every}")
        self.canary = canary
        self.every = every
        self.ended = 0
        self.last: CanaryStatus | None = None

    async def after_run(self, step: Any) -> None:
        run = step.session.run
        if run.agent != self.canary.agent or run.status not in ENDED:
            return
        if not isinstance(run.metadata.get("canary"), dict):
            return
        self.ended += 1
        if self.ended % self.every:
            return
        try:
            self.last = await self.canary.evaluate()
        except Exception:
            log.warning("canary of %s: evaluation failed", self.canary.agent, exc_info=True)
