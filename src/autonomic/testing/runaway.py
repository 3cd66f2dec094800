"""Scripted runs for the runaway guards: the incidents, and legitimate long runs that must pass.

The reconciliation incident itself is the runaway demo's (``examples/runaway/incident.py``).

Used by the tests, the benchmark and (after wiring) ``autonomic demo --scenario runaway``. Each
scenario is a list of ``ProposedAction``; ``drive`` feeds them through ``Guards`` one by one the way
the engine does (check, then record and "execute" what was allowed) and stops at the first
suspension.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from autonomic.examples.runaway.incident import AGENT, START, model_call, reconciliation_loop
from autonomic.governance.action import ActionKind, ProposedAction
from autonomic.governance.decision import Decision, Verdict
from autonomic.governance.runaway.guards import Guards
from autonomic.governance.runaway.state import GuardState

__all__ = [
    "AGENT",
    "START",
    "Drive",
    "drive",
    "legitimate_run",
    "ping_pong_message",
    "reconciliation_loop",
    "tool_calls",
]


@dataclass
class Drive:
    """What happened when a scenario was driven through the guards."""

    executed: list[ProposedAction] = field(default_factory=list)
    suspended: Decision | None = None
    suspended_at: int | None = None
    """Index (0-based) of the action that was suspended."""


def drive(
    guards: Guards,
    state: GuardState,
    actions: Iterable[ProposedAction],
    *,
    on_execute: Callable[[ProposedAction], None] | None = None,
) -> Drive:
    """Check each action; record and execute the allowed ones; stop at the first suspension."""
    result = Drive()
    for index, action in enumerate(actions):
        decision = guards.check(action, state)
        if decision.verdict is Verdict.SUSPEND:
            result.suspended, result.suspended_at = decision, index
            return result
        state.record(action, seq=state.last_seq + 1)
        if action.kind is ActionKind.MODEL_CALL:
            state.charge(tokens=action.estimate.tokens, cost=action.estimate.cost)
        if on_execute is not None:
            on_execute(action)
        result.executed.append(action)
    return result


def ping_pong_message(sender: str, receiver: str, n: int) -> ProposedAction:
    """One hand-off of the lint-fix ping-pong: ``sender`` gives the same fix to ``receiver``."""
    return ProposedAction(
        ActionKind.DELEGATE,
        sender,
        target=receiver,
        subject=f"Fix the lint errors in src/app/handlers.py (round {n})",
        thought=f"{receiver} should own the lint fix for handlers.py",
        now=START + n,
    )


_READ_TOOLS = ("read_ledger", "read_statement", "search_docs", "query_sql", "list_files")
_WRITE_TOOLS = ("post_entry", "update_ticket", "write_file", "send_message")
_WORDS = [
    "revenue",
    "fees",
    "interest",
    "payroll",
    "refund",
    "chargeback",
    "vendor",
    "invoice",
    "rent",
    "utilities",
    "tax",
    "insurance",
    "subscription",
    "dividend",
    "transfer",
    "deposit",
    "withdrawal",
    "adjustment",
    "accrual",
]


def legitimate_run(seed: int, steps: int = 60) -> list[ProposedAction]:
    """A varied, legitimate run: reads, distinct writes, and polling a job with backoff.

    ``steps`` counts tool calls; each is preceded by a model call.
    """
    rng = random.Random(seed)  # noqa: S311 - a reproducible script, not a secret
    actions: list[ProposedAction] = []
    now = START
    i = 0
    while i < steps:
        now += rng.uniform(1, 5)
        roll = rng.random()
        if roll < 0.15:  # poll a job with exponential backoff: legitimately repeated reads
            job = f"job-{rng.randrange(10_000):04d}"
            for attempt in range(1, rng.randint(3, 8) + 1):
                now += 2**attempt
                actions.append(model_call(i, now))
                actions.append(
                    ProposedAction(
                        ActionKind.TOOL_CALL,
                        AGENT,
                        tool="get_job_status",
                        arguments={"job_id": job},
                        thought=f"The export {job} is still running; checking again after "
                        f"{2**attempt}s (attempt {attempt}).",
                        read_only=True,
                        now=now,
                    )
                )
                i += 1
            continue
        if roll < 0.6:
            tool = rng.choice(_READ_TOOLS)
            topic = " ".join(rng.sample(_WORDS, 2))
            reads: dict[str, dict[str, Any]] = {
                "read_ledger": {"account": str(rng.randrange(1000, 9999))},
                "read_statement": {"page": rng.randrange(1, 40)},
                "search_docs": {"query": f"{topic} policy"},
                "query_sql": {"sql": f"SELECT * FROM {rng.choice(_WORDS)} LIMIT 50"},
                "list_files": {"path": f"/reports/{rng.choice(_WORDS)}"},
            }
            args = reads[tool]
            thought = f"I need the {topic} figures to continue; reading them with {tool}."
            read_only = True
        else:
            tool = rng.choice(_WRITE_TOOLS)
            word = rng.choice(_WORDS)
            writes: dict[str, dict[str, Any]] = {
                "post_entry": {
                    "account": str(rng.randrange(1000, 9999)),
                    "amount": round(rng.uniform(1, 5000), 2),
                    "memo": f"{word} adjustment",
                },
                "update_ticket": {
                    "ticket": f"FIN-{rng.randrange(100, 999)}",
                    "status": rng.choice(("open", "in_progress", "resolved")),
                },
                "write_file": {"path": f"/out/{word}-{i}.csv", "content": f"{word},{i}"},
                "send_message": {
                    "to": rng.choice(("controller", "auditor", "treasury")),
                    "text": f"The {word} difference is explained by {rng.choice(_WORDS)}.",
                },
            }
            args = writes[tool]
            thought = f"The {word} line differs from the statement; {tool} records the correction."
            read_only = False
        actions.append(model_call(i, now))
        actions.append(
            ProposedAction(
                ActionKind.TOOL_CALL,
                AGENT,
                tool=tool,
                arguments=args,
                thought=thought,
                plan=f"Reconcile {rng.choice(_WORDS)} then {rng.choice(_WORDS)}"
                if rng.random() < 0.1
                else None,
                read_only=read_only,
                now=now,
            )
        )
        i += 1
    return actions


def tool_calls(actions: Sequence[ProposedAction]) -> int:
    return sum(1 for a in actions if a.kind is ActionKind.TOOL_CALL)
