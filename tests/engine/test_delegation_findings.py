"""The delegation gate journals every guard that objected to a hand-off, not only the first: a
ping-pong inside one nested chain is also a cycle, and the journal says both. On both stores."""

from __future__ import annotations

import asyncio
from typing import Any

from autonomic.bootstrap import build_store
from autonomic.core.entries import DecisionRecord
from autonomic.core.run import RunStatus
from autonomic.engine.agent import Agent, AgentRegistry
from autonomic.engine.executor import Engine
from autonomic.engine.worker import Worker
from autonomic.examples.swarm.agent import reviewer_policy, writer_policy
from autonomic.testing.delegation import resolver


def test_a_refused_hand_off_journals_each_guards_finding(store_url: str) -> None:
    async def go() -> tuple[Any, ...]:
        store = build_store(store_url)
        await store.migrate()
        try:
            writer = Agent("writer", "write", model="fn:w", delegates_to=["reviewer"])
            reviewer = Agent("reviewer", "review", model="fn:r", delegates_to=["writer"])
            engine = Engine(
                store,
                AgentRegistry([writer, reviewer]),
                resolver({"w": writer_policy, "r": reviewer_policy}),
            )
            await engine.start("writer", "Write slugify() in text.py")
            await Worker(engine, concurrency=2, poll_interval=0.01).run(until_idle=True)
            runs = await store.list_runs(limit=100)
            (stopped,) = [r for r in runs if r.status is RunStatus.SUSPENDED]
            journal = await store.load_journal(stopped.id)
            return runs, [e.body for e in journal if isinstance(e.body, DecisionRecord)]
        finally:
            await store.close()

    runs, decisions = asyncio.run(go())
    assert len(runs) == 3  # the writer's run and two hand-offs: the third was refused
    (refusal,) = [d for d in decisions if d.gate == "delegation"]
    codes = [f["code"] for f in refusal.evidence["findings"]]
    assert codes == ["delegation.cycle", "delegation.ping_pong"]
    assert refusal.evidence["code"] == codes[0]
    assert all(f["reason"] for f in refusal.evidence["findings"])
    assert "back and forth 2 times" in refusal.evidence["findings"][1]["reason"]
