"""Settling a run in doubt: a human's finding about a started non-idempotent call is journaled,
and the run goes on from it - with the given result and no re-execution, or re-executing the call
once - while a run that is not in doubt is refused."""

import asyncio
from typing import Any

import pytest

from autonomic.adapters.model.scripted import ScriptedModel
from autonomic.bootstrap import build_store
from autonomic.core.entries import EntryKind, Settlement, ToolResult
from autonomic.core.run import RunStatus
from autonomic.engine.agent import Agent, AgentRegistry
from autonomic.engine.executor import Engine, new_run_id
from autonomic.engine.step import Hook
from autonomic.errors import InvalidInput, UserError
from autonomic.governance.runaway.gate import Runaway
from autonomic.testing.crash import RaiseAt, SimulatedCrash
from autonomic.tools.contract import ToolContext, tool

FILED: list[str] = []


@tool(
    idempotent=False,
    output_schema={"type": "object", "required": ["report_id"]},
)
def file_report(title: str, ctx: ToolContext) -> dict[str, Any]:
    """File a report: each call files one more (not idempotent)."""
    FILED.append(ctx.idempotency_key)
    return {"report_id": len(FILED)}


TURNS = [
    {"tool_calls": [{"name": "file_report", "arguments": {"title": "nightly"}}]},
    {"content": "filed"},
]


class Seen(Hook):
    """Every result as the screening point sees it."""

    def __init__(self) -> None:
        self.results: list[ToolResult] = []

    def after_tool_result(self, step, result):
        self.results.append(result)
        return result


def _engine(store, clock, *, faults=None, hooks=()) -> Engine:
    agent = Agent(name="reporter", instructions="file the report", tools=(file_report,))
    return Engine(
        store,
        AgentRegistry([agent]),
        lambda spec: ScriptedModel(TURNS),
        runaway=Runaway(enabled=False),
        clock=clock,
        faults=faults,
        hooks=list(hooks),
    )


async def _in_doubt(store, now, point: str, count: int) -> str:
    """A run whose worker died at ``point`` around the report call, found in doubt by another."""
    run_id = new_run_id()
    dying = _engine(store, lambda: now[0], faults=RaiseAt(point, count))
    await dying.start("reporter", "file it", run_id=run_id)
    with pytest.raises(SimulatedCrash):
        await dying.run_to_end(run_id)
    now[0] += 3600
    found = await _engine(store, lambda: now[0]).run_to_end(run_id)
    assert found.status is RunStatus.WAITING_FOR_HUMAN
    assert (found.status_reason or "").startswith("in doubt: file_report@1 call call_1_1")
    assert f"autonomic settle {run_id} --executed" in (found.status_reason or "")
    assert f"autonomic settle {run_id} --not-executed" in (found.status_reason or "")
    return run_id


def _go(url, scenario):
    async def go():
        store = build_store(url)
        await store.migrate()
        try:
            return await scenario(store, [1_000_000.0])
        finally:
            await store.close()

    FILED.clear()
    return asyncio.run(go())


def test_settled_as_executed_the_run_completes_with_the_given_result_and_no_rerun(store_url):
    async def scenario(store, now):
        run_id = await _in_doubt(store, now, "after_effect", 1)  # the report was filed
        engine = _engine(store, lambda: now[0], hooks=[seen := Seen()])
        settled = await engine.settle(
            run_id,
            executed=True,
            by="controller",
            reason="report 1 is in the report system",
            output={"report_id": 1},
        )
        final = await engine.run_to_end(run_id)
        return settled, final, await store.load_journal(run_id), seen

    settled, final, journal, seen = _go(store_url, scenario)
    assert settled.status is RunStatus.RUNNING
    assert settled.status_reason == (
        "settled by controller: file_report call call_1_1 executed - "
        "report 1 is in the report system"
    )
    assert final.status is RunStatus.COMPLETED
    assert len(FILED) == 1  # filed before the crash, never again
    (settlement,) = [e.body for e in journal if e.kind is EntryKind.SETTLEMENT]
    assert settlement == Settlement(
        call_id="call_1_1",
        tool="file_report",
        key=FILED[0],
        executed=True,
        by="controller",
        reason="report 1 is in the report system",
        output={"report_id": 1},
        position=(1, 0),
    )
    (result,) = [e.body for e in journal if e.kind is EntryKind.TOOL_RESULT]
    assert result.ok
    assert result.output == {"report_id": 1}
    assert result.settled == {"by": "controller", "reason": "report 1 is in the report system"}
    assert [r.settled for r in seen.results] == [result.settled]  # screened like tool output
    kinds = [e.kind for e in journal]
    assert kinds.index(EntryKind.SETTLEMENT) < kinds.index(EntryKind.TOOL_RESULT)


def test_settled_as_not_executed_the_call_runs_once_more_and_the_run_completes(store_url):
    async def scenario(store, now):
        # commit 1 claims the run, commit 2 holds the report's intent: die before the effect
        run_id = await _in_doubt(store, now, "after_commit", 2)
        assert FILED == []
        engine = _engine(store, lambda: now[0])
        await engine.settle(
            run_id, executed=False, by="controller", reason="no report in the report system"
        )
        final = await engine.run_to_end(run_id)
        return final, await store.load_journal(run_id)

    final, journal = _go(store_url, scenario)
    assert final.status is RunStatus.COMPLETED
    assert len(FILED) == 1  # filed exactly once, after the settlement
    intents = [e.body for e in journal if e.kind is EntryKind.TOOL_INTENT]
    assert len(intents) == 2
    assert intents[1].key != intents[0].key  # a new attempt under its own key
    assert [intents[1].key] == FILED
    (settlement,) = [e for e in journal if e.kind is EntryKind.SETTLEMENT]
    assert settlement.body.executed is False
    assert settlement.body.key == intents[0].key
    (result,) = [e.body for e in journal if e.kind is EntryKind.TOOL_RESULT]
    assert result.ok
    assert result.settled is None


def test_settle_refuses_a_run_that_is_not_in_doubt(store_url):
    async def scenario(store, now):
        engine = _engine(store, lambda: now[0])
        run = await engine.run("reporter", "file it")
        with pytest.raises(UserError) as refused:
            await engine.settle(run.id, executed=True, by="controller", reason="checked")
        return run, refused.value, await store.load_journal(run.id)

    run, refused, journal = _go(store_url, scenario)
    assert run.status is RunStatus.COMPLETED
    assert str(refused).startswith(f"run {run.id} is not in doubt: it is COMPLETED")
    assert not [e for e in journal if e.kind is EntryKind.SETTLEMENT]


def test_a_settled_result_must_fit_the_tools_output_contract(sqlite_url):
    async def scenario(store, now):
        run_id = await _in_doubt(store, now, "after_effect", 1)
        engine = _engine(store, lambda: now[0])
        with pytest.raises(InvalidInput) as refused:
            await engine.settle(
                run_id, executed=True, by="controller", reason="seen", output="filed"
            )
        with pytest.raises(InvalidInput):
            await engine.settle(run_id, executed=True, by="controller", reason="  ")
        return refused.value, await store.get_run(run_id)

    refused, run = _go(sqlite_url, scenario)
    assert "does not fit its output contract" in str(refused)
    assert run.status is RunStatus.WAITING_FOR_HUMAN  # nothing was written
