"""Loop detection: exact repeats, near repeats and re-issued plans, before each tool call.

The incident behind it: an agent ran the same cleanup 14,000 times because each plan differed a
little from the last, so an exact-match check never fired. Three checks, each over the run's recent
window (``GuardState.window`` tool steps, cleared when a human acknowledges a finding):

* **exact repeat** — the same tool with the same canonical arguments;
* **near repeat** — the same tool with the same arguments once volatile values (timestamps,
  counters, ids) are removed, *or* (for side-effecting tools) a trace (thought + tool + arguments)
  whose embedding has cosine similarity >= ``threshold`` with an earlier one of the same tool;
* **plan repeat** — a newly issued plan whose embedding is >= ``threshold`` similar to earlier plans.

A side-effecting action may occur ``repeats`` times before the next copy is suspended (default 2:
the third is stopped before it runs). Read-only tools may repeat ``read_repeats`` times, because
polling a job with backoff is legitimate; budgets still bound it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from autonomic.errors import InvalidInput
from autonomic.governance.action import ActionKind, ProposedAction
from autonomic.governance.decision import Finding, Verdict
from autonomic.governance.runaway.state import QUOTE_LIMIT, GuardState
from autonomic.ports.embedder import dot
from autonomic.tools.delegate import DELEGATE_TOOL


@dataclass(frozen=True, slots=True)
class LoopPolicy:
    """Tuning for loop detection.

    Args:
        threshold: cosine similarity at or above which two traces or plans are "the same".
        repeats: how many earlier copies a side-effecting action may have in the window.
        read_repeats: the same for read-only tools (polling).
        plan_repeats: how many earlier similar plans a newly issued plan may have.
    """

    threshold: float = 0.95
    repeats: int = 2
    read_repeats: int = 10
    plan_repeats: int = 2

    def __post_init__(self) -> None:
        if not 0.0 < self.threshold <= 1.0:
            raise InvalidInput(
                f"loop policy: threshold must be in (0, 1], got {self.threshold}", hint="use 0.95"
            )
        if min(self.repeats, self.read_repeats, self.plan_repeats) < 1:
            raise InvalidInput("loop policy: repeat allowances must be at least 1")


class LoopGuard:
    """Suspends the run when the proposed tool call (or plan) repeats recent ones."""

    name = "loop"

    def __init__(self, policy: LoopPolicy | None = None) -> None:
        self.policy = policy or LoopPolicy()

    def check(self, action: ProposedAction, state: GuardState) -> list[Finding]:
        if action.kind is not ActionKind.TOOL_CALL:
            return []
        p = self.policy
        feats = state.features(action)
        allowed = p.read_repeats if action.read_only else p.repeats
        found: list[Finding] = []
        exact: list[dict[str, Any]] = []
        near: list[dict[str, Any]] = []
        for step in state.steps:
            if step.tool != action.tool:
                continue
            if step.args_key == feats.args_key:
                exact.append({"seq": step.seq, "similarity": 1.0, "trace": step.trace})
                near.append(exact[-1])
                continue
            if action.tool == DELEGATE_TOOL:
                continue  # hand-offs of different subtasks are a fan-out (see below)
            if step.signature == feats.signature:
                similarity = 1.0
            elif action.read_only:
                # reads with different arguments are different reads (polling many jobs), and
                # hand-offs of different subtasks are a fan-out, not a loop: the delegation
                # guards (depth, cycle, ping-pong) watch where delegated work goes
                continue
            else:
                similarity = dot(step.vector, feats.vector)
            if similarity >= p.threshold:
                near.append(
                    {"seq": step.seq, "similarity": round(similarity, 4), "trace": step.trace}
                )
        if len(near) >= allowed:  # ``exact`` is a part of ``near``: below ``allowed`` too if not
            evidence = {
                "tool": action.tool,
                "proposed": feats.trace[:QUOTE_LIMIT],
                "threshold": p.threshold,
                "allowed": allowed,
                "window": state.steps.maxlen,
                "embedder": state.embedder.name,
            }
            if len(exact) >= allowed:
                found.append(
                    Finding(
                        "loop",
                        "loop.exact_repeat",
                        Verdict.SUSPEND,
                        f"{action.tool} with the same arguments was already run {len(exact)} "
                        f"times in the last {state.steps.maxlen} steps (steps {_seqs(exact)}); "
                        "check why it does not converge, then resume (acknowledging the repeat) "
                        "or cancel the run",
                        {**evidence, "similar": exact},
                    )
                )
            else:
                found.append(
                    Finding(
                        "loop",
                        "loop.near_repeat",
                        Verdict.SUSPEND,
                        f"{action.tool} repeats steps {_seqs(near)} up to timestamps, counters "
                        f"and wording (similarity >= {p.threshold}); check why it does not "
                        "converge, then resume (acknowledging the repeat) or cancel the run",
                        {**evidence, "similar": near},
                    )
                )
        if feats.plan is not None and state.plans and feats.plan_vector is not None:
            plans = [
                {"seq": plan.seq, "similarity": round(s, 4), "plan": plan.text[:QUOTE_LIMIT]}
                for plan in state.plans
                if (s := dot(plan.vector, feats.plan_vector)) >= p.threshold
            ]
            if len(plans) >= p.plan_repeats:
                found.append(
                    Finding(
                        "loop",
                        "loop.plan_repeat",
                        Verdict.SUSPEND,
                        f"the new plan repeats the plans of steps {_seqs(plans)} (similarity >= "
                        f"{p.threshold}); the agent is re-planning the same work",
                        {
                            "proposed": feats.plan[:QUOTE_LIMIT],
                            "threshold": p.threshold,
                            "allowed": p.plan_repeats,
                            "embedder": state.embedder.name,
                            "similar": plans,
                        },
                    )
                )
        return found


def _seqs(items: list[dict[str, Any]]) -> str:
    return ", ".join(str(i["seq"]) for i in items)
