"""The guarantees of guarded execution, at volume, with SIGKILLs and full replays, on both stores.

A few hundred runs each propose MEDIUM payments (some re-proposed with changed arguments right
after being approved), a HIGH irreversible wipe and a LOW payment. Round after round: fresh
engines drive every runnable run from its journal (a full replay of it); a human desk approves,
rejects (and tries to approve with the binding hash of other arguments) and lets some approvals
time out; some runs are SIGKILLed in a forked worker right after their approval is read and before
the action starts, or after the action ran and before its result was recorded. Then, from the
effect sinks (append-only files that survive SIGKILL), the journals and the approval table:

* 0 executions without a matching approval (every MEDIUM effect has an APPROVED approval whose
  binding hash is the hash of exactly the executed tool, arguments, run and step);
* 100 % of changed-argument attempts refused (re-proposals never ride on an earlier approval;
  approvals with another binding are refused);
* 0 re-asks: every call's gates are consulted once, across every replay and process;
* every approved action executed exactly once; HIGH, rejected and timed-out actions never;
* timeouts and rejections are told apart in the journal and in the table.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from autonomic.adapters.model.scripted import FunctionModel
from autonomic.bootstrap import build_store
from autonomic.core.approval import ApprovalStatus, binding_hash
from autonomic.core.canonical import canonical_json
from autonomic.core.journal import EntryKind
from autonomic.core.messages import ModelResponse, Role, ToolCall
from autonomic.core.run import RunStatus
from autonomic.engine.agent import Agent, AgentRegistry
from autonomic.engine.executor import Engine
from autonomic.engine.faults import CrashAt
from autonomic.errors import ApprovalRefused
from autonomic.governance.action import ProposedAction
from autonomic.governance.approvals import ApprovalDesk
from autonomic.governance.policy.risk import parse_policy_text
from autonomic.testing.crash import append_jsonl, fork_child, read_jsonl, wait_child
from autonomic.tools.contract import ToolContext, tool

RUNS = int(os.environ.get("AUTONOMIC_GUARANTEE_RUNS", "250"))
"""Runs per store; each makes 4 MEDIUM/HIGH proposals (5 with its LOW one)."""
CRASH_EVERY = 25
POLICY = """
approval: {group: controllers, expires_after: 1h}
rules:
  - name: big
    tool: pay
    when: args.amount > 100
    risk: medium
    reason: payments above 100 need a controller
  - name: irreversible
    reversible: false
    risk: high
    reason: irreversible actions are blocked
"""
PLAN = [
    ("pay", {"to": "bob", "amount": 500}),
    ("pay", {"to": "bob", "amount": 501}),  # changed arguments: never rides on the first approval
    ("wipe", {"table": "ledger"}),
    ("pay", {"to": "ann", "amount": 50}),
    ("pay", {"to": "cid", "amount": 900}),
]


def _sink(ctx: ToolContext) -> Path:
    return Path(str(ctx.metadata["dir"])) / f"{ctx.run_id}.jsonl"


@tool(idempotent=True)
def pay(to: str, amount: int, ctx: ToolContext) -> str:
    """Pay; applies once per idempotency key, logs every attempt (O_APPEND, survives SIGKILL)."""
    sink = _sink(ctx)
    seen = {r["key"] for r in read_jsonl(sink) if r["event"] == "applied"}
    event = "attempt" if ctx.idempotency_key in seen else "applied"
    append_jsonl(
        sink,
        {
            "event": event,
            "key": ctx.idempotency_key,
            "call_id": ctx.call_id,
            "to": to,
            "amount": amount,
        },
    )
    return "paid"


@tool(idempotent=True, reversible=False)
def wipe(table: str, ctx: ToolContext) -> str:
    """Irreversible: must never run under the policy."""
    append_jsonl(
        _sink(ctx),
        {"event": "applied", "key": ctx.idempotency_key, "call_id": ctx.call_id, "wipe": table},
    )
    return "wiped"


def _brain(messages: Any, tools: Any) -> ModelResponse:
    turn = sum(1 for m in messages if m.role is Role.ASSISTANT)
    if turn >= len(PLAN):
        return ModelResponse(content="done")
    name, args = PLAN[turn]
    return ModelResponse(
        content=None, tool_calls=(ToolCall(f"c{turn}", name, canonical_json(args)),)
    )


class AskLog:
    """A gate that only records that it was asked (to a file: children's asks count too)."""

    name = "ask-log"

    def __init__(self, path: Path) -> None:
        self.path = path

    async def check(self, action: ProposedAction) -> None:
        append_jsonl(self.path, {"run": action.run.id, "call": action.call_id})


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def _engine(store: Any, asks: Path, clock: Clock, **kwargs: Any) -> Engine:
    agent = Agent(name="payer", instructions="pay", tools=(pay, wipe), max_turns=10)
    model = FunctionModel(_brain, name="function:plan")
    gates = [AskLog(asks), parse_policy_text(POLICY).risk.gate()]
    return Engine(
        store, AgentRegistry([agent]), lambda s: model, gates=gates, clock=clock, **kwargs
    )


def _choice(approval_id: str) -> str:
    n = int(hashlib.sha256(approval_id.encode()).hexdigest(), 16) % 20
    return "deny" if n < 3 else "timeout" if n < 6 else "approve"


def test_a_thousand_guarded_proposals_with_crashes_and_replays(store_url, tmp_path):
    # Worker crashes are what is tested, not power loss: commits need not wait for the disk.
    if store_url.startswith("sqlite"):
        url = store_url + "?synchronous=normal"
    else:
        url = store_url.replace("options=", "options=-csynchronous_commit%3Doff%20", 1)
    asks = tmp_path / "asks.jsonl"
    clock = Clock()
    stats = {"stale_binding_refused": 0, "stale_binding_tries": 0, "crashes": 0}

    async def start() -> list[str]:
        store = build_store(url)
        await store.migrate()
        eng = _engine(store, asks, clock)
        ids = [
            (await eng.start("payer", "pay", metadata={"dir": str(tmp_path)}, requester="rita")).id
            for _ in range(RUNS)
        ]
        await store.close()
        return ids

    run_ids = asyncio.run(start())
    crash_at = {
        rid: ("approved" if i % CRASH_EVERY == 0 else "after_effect")
        for i, rid in enumerate(run_ids)
        if i % CRASH_EVERY < 2
    }
    approved_once: set[str] = set()
    not_killed: list[str] = []

    async def drive_all(skip: set[str]) -> list[str]:
        store = build_store(url)
        eng = _engine(store, asks, clock)  # a fresh engine every round: runs replay from journals
        runnable = [
            r.id
            for r in await store.list_runs(limit=100_000)
            if r.status in (RunStatus.PENDING, RunStatus.RUNNING)
        ]
        for rid in runnable:
            if rid not in skip:
                await eng.run_to_end(rid)
        await store.close()
        return runnable

    async def decide() -> int:
        store = build_store(url)
        desk = ApprovalDesk(store, clock=clock)
        pending = await store.list_approvals(status=ApprovalStatus.PENDING, limit=100_000)
        for a in pending:
            choice = _choice(a.id)
            if int(a.id[-2:], 16) % 4 == 0:  # an approver looking at other arguments
                stats["stale_binding_tries"] += 1
                other = binding_hash(
                    a.tool, {**a.arguments, "amount": a.arguments["amount"] + 1}, a.run_id, a.step
                )
                try:
                    await desk.approve(a.id, by="carl", binding=other)
                except ApprovalRefused:
                    stats["stale_binding_refused"] += 1
            if choice == "approve":
                await desk.approve(a.id, by="carl", binding=a.binding)
                approved_once.add(a.run_id)
            elif choice == "deny":
                await desk.deny(a.id, by="carl", reason="no")
        clock.now += 7200  # the rest time out, by default denied
        await desk.sweep()
        await store.close()
        return len(pending)

    for _ in range(10):
        crashing = {rid for rid in crash_at if rid in approved_once}
        runnable = asyncio.run(drive_all(crashing))
        for rid in sorted(crashing):
            point = crash_at.pop(rid)
            exit_ = wait_child(
                fork_child(
                    lambda rid=rid, point=point: _child(url, asks, clock.now, rid, point, tmp_path)
                )
            )
            stats["crashes"] += int(exit_.killed)
            if not exit_.killed:
                not_killed.append(f"{rid} at {point}: {exit_}")
        if not runnable and not asyncio.run(decide()):
            break
        if runnable:
            asyncio.run(decide())

    report = asyncio.run(_verify(url, tmp_path, asks))
    report |= stats
    print(json.dumps(report, indent=2))
    assert report["unfinished_runs"] == 0
    assert report["medium_high_proposals"] >= 4 * RUNS
    assert report["executions_without_matching_approval"] == 0
    assert report["approved_executed"] == report["approved"]
    assert report["approved_executed_more_than_once"] == 0
    assert report["refused_executed"] == 0
    assert report["high_executed"] == 0
    assert report["changed_argument_attempts"] == report["changed_argument_refused"] > 0
    assert stats["stale_binding_refused"] == stats["stale_binding_tries"] > 0
    assert report["re_asks"] == 0
    assert report["timeouts"] > 0
    assert report["rejections"] > 0
    assert report["journal_matches_table"]
    # Every run picked to crash did, once approved: a picked run whose approvals were all denied
    # or timed out (drawn from its random approval ids: about 1 in 37) never reaches a crash
    # point. A fixed count (18 of 20) failed a CI run with 17 and 16, without saying whether the
    # draw or a child that was not killed fell short: these say which.
    planned = 2 * (RUNS // CRASH_EVERY)
    assert not set(crash_at) & approved_once
    assert not not_killed
    assert stats["crashes"] == planned - len(crash_at)
    assert stats["crashes"] >= planned // 2


def _child(url: str, asks: Path, now: float, run_id: str, point: str, tmp: Path) -> int:
    clock = Clock()
    clock.now = now

    async def go() -> None:
        store = build_store(url)
        try:
            await _engine(store, asks, clock, faults=CrashAt(point, 1)).run_to_end(run_id)
        finally:
            await store.close()

    asyncio.run(go())
    return 0


async def _verify(url: str, tmp: Path, asks: Path) -> dict[str, Any]:
    store = build_store(url)
    runs = await store.list_runs(limit=100_000)
    approvals = {a.id: a for a in await store.list_approvals(limit=100_000)}
    out = {
        "runs": len(runs),
        "unfinished_runs": sum(1 for r in runs if r.status is not RunStatus.COMPLETED),
        "medium_high_proposals": 0,
        "approved": 0,
        "approved_executed": 0,
        "approved_executed_more_than_once": 0,
        "executions_without_matching_approval": 0,
        "refused_executed": 0,
        "high_executed": 0,
        "changed_argument_attempts": 0,
        "changed_argument_refused": 0,
        "timeouts": 0,
        "rejections": 0,
        "journal_matches_table": True,
    }
    asked: dict[tuple[str, str], int] = {}
    for record in read_jsonl(asks):
        key = (record["run"], record["call"])
        asked[key] = asked.get(key, 0) + 1
    out["re_asks"] = sum(n - 1 for n in asked.values())
    for run in runs:
        entries = await store.load_journal(run.id)
        effects = read_jsonl(tmp / f"{run.id}.jsonl")
        applied: dict[str, list[dict[str, Any]]] = {}
        for e in effects:
            if e["event"] == "applied":
                applied.setdefault(e["call_id"], []).append(e)
        decisions = {
            e.payload["call_id"]: e.payload for e in entries if e.kind is EntryKind.DECISION
        }
        outcomes = {
            e.payload["call_id"]: e.payload for e in entries if e.kind is EntryKind.APPROVAL
        }
        first_approved = False
        for call_id, d in decisions.items():
            done = applied.get(call_id, [])
            if d["verdict"] in ("needs_approval", "blocked"):
                out["medium_high_proposals"] += 1
            if d["verdict"] == "blocked":
                out["high_executed"] += len(done)
                continue
            if d["verdict"] == "allow":
                continue
            approval = approvals[d["approval_id"]]
            journal_status = outcomes.get(call_id, {}).get("event")
            if journal_status != approval.status.value:
                out["journal_matches_table"] = False
            if call_id == "c1":  # the changed-argument re-proposal of c0
                out["changed_argument_attempts"] += 1
                if approval.id != decisions["c0"].get("approval_id") and (
                    approval.status is ApprovalStatus.APPROVED or not done
                ):
                    out["changed_argument_refused"] += 1
            if approval.status is ApprovalStatus.APPROVED:
                out["approved"] += 1
                out["approved_executed"] += int(len(done) >= 1)
                out["approved_executed_more_than_once"] += int(len(done) > 1)
                first_approved = first_approved or call_id == "c0"
            else:
                out["timeouts" if approval.status is ApprovalStatus.TIMEOUT else "rejections"] += 1
                out["refused_executed"] += len(done)
            for effect in done:
                args = {"to": effect["to"], "amount": effect["amount"]}
                bound = binding_hash("pay@1", args, run.id, int(d["step"]))
                if approval.status is not ApprovalStatus.APPROVED or bound != approval.binding:
                    out["executions_without_matching_approval"] += 1
        for call_id, done in applied.items():
            if call_id not in decisions:
                out["executions_without_matching_approval"] += len(done)
    await store.close()
    return out
