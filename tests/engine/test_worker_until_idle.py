"""``Worker.run(until_idle=True)`` stops only when nothing is claimable: a drive that ends after a
claim found nothing may have made a run claimable (a parent its child's end reopened), and the
worker must look again rather than stop (seen as a coordinator left waiting on PostgreSQL)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from autonomic.bootstrap import build_store
from autonomic.core.run import Run, RunStatus
from autonomic.engine.agent import Agent, AgentRegistry
from autonomic.engine.executor import Engine
from autonomic.engine.worker import Worker
from autonomic.testing.delegation import answering, resolver


def test_a_run_made_claimable_by_a_drive_ending_after_an_empty_claim_is_driven(
    tmp_path: Path,
) -> None:
    async def scenario() -> tuple[RunStatus, RunStatus]:
        store = build_store(f"sqlite:///{tmp_path / 'a.db'}")
        await store.migrate()
        engine = Engine(
            store,
            AgentRegistry([Agent("a", "answer", model="fn:a")]),
            resolver({"a": answering("done")}),
        )
        first = await engine.start("a", "first")
        later: list[Run] = []
        ended = asyncio.Event()
        drive = engine.drive

        async def driving(run: Run) -> Run:
            out = await drive(run)
            if not later:  # its end makes another run claimable (as a reopened parent is)
                later.append(await engine.start("a", "second"))
                ended.set()
            return out

        engine.drive = driving  # type: ignore[method-assign]
        worker = Worker(engine, concurrency=2, poll_interval=0.01)

        async def sweep() -> bool:  # the idle sweep, returning after the drive's task is done
            await ended.wait()
            await asyncio.sleep(0)  # one turn of the loop: the ended task's callbacks run
            return False

        worker._sweep_delegations = sweep  # type: ignore[method-assign]
        await worker.run(until_idle=True)
        statuses = (await store.get_run(first.id)).status, (await store.get_run(later[0].id)).status
        await store.close()
        return statuses

    assert asyncio.run(scenario()) == (RunStatus.COMPLETED, RunStatus.COMPLETED)
