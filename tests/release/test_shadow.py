"""Shadow mode on both stores: 100 live runs that write through a sink, mirrored to a candidate
that writes even more - the sink sees the live writes and not one of the candidate's; reads are
served from the live journal; the comparison per task type says where the candidate differs."""

import asyncio
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from autonomic.adapters.model.scripted import FunctionModel
from autonomic.bootstrap import build_store
from autonomic.core.messages import Message, ModelResponse, ToolCall
from autonomic.core.run import RunStatus
from autonomic.core.state import fold
from autonomic.engine.agent import Agent, AgentRegistry
from autonomic.engine.executor import Engine
from autonomic.errors import ConfigError
from autonomic.release.shadow import Shadow, ShadowHook, pairs, report, shadow_id
from autonomic.testing.fenced_sink import FencedSink
from autonomic.tools.contract import ToolContext, ToolSpec, tool

RUNS = 100
READS: list[str] = []


@tool(idempotent=True)
def balance(account: str) -> dict[str, Any]:
    READS.append(account)
    return {"account": account, "balance": 100 + len(account)}


@tool
def transfer(account: str, amount: int, ctx: ToolContext) -> str:
    """Non-idempotent write: every call that executes leaves a record in the sink."""
    FencedSink(ctx.metadata["sink"]).write(ctx.fence, {"account": account, "amount": amount})
    return f"moved {amount}"


@tool(idempotent=True)
def notify(account: str, ctx: ToolContext) -> str:
    """Idempotent write: still a write, still never executed in shadow."""
    FencedSink(ctx.metadata["sink"]).write(ctx.fence, {"notify": account})
    return "notified"


def _calls(messages: Sequence[Message]) -> int:
    return sum(1 for m in messages if m.role.value == "tool")


def live_brain(messages: Sequence[Message], tools: Sequence[ToolSpec]) -> ModelResponse:
    account = json.loads(str(messages[1].content))["account"]
    script = [
        ToolCall("c1", "balance", json.dumps({"account": account})),
        ToolCall("c2", "transfer", json.dumps({"account": account, "amount": 5})),
    ]
    done = _calls(messages)
    if done < len(script):
        return ModelResponse(content=None, tool_calls=(script[done],))
    return ModelResponse(content=f"paid {account}")


def candidate_brain(messages: Sequence[Message], tools: Sequence[ToolSpec]) -> ModelResponse:
    """Reads the same, moves twice as much, notifies, and answers otherwise for odd accounts."""
    account = json.loads(str(messages[1].content))["account"]
    script = [
        ToolCall("c1", "balance", json.dumps({"account": account})),
        ToolCall("c2", "transfer", json.dumps({"account": account, "amount": 10})),
        ToolCall("c3", "notify", json.dumps({"account": account})),
    ]
    done = _calls(messages)
    if done < len(script):
        return ModelResponse(content=None, tool_calls=(script[done],))
    odd = int(account.removeprefix("acct")) % 2
    return ModelResponse(content=f"paid {account}" + (" (checked twice)" if odd else ""))


LIVE = Agent("payer", "pay", tools=[balance, transfer, notify], read_only={"balance"}, model="live")
CANDIDATE = Agent(
    "payer",
    "pay carefully",
    tools=[balance, transfer, notify],
    read_only={"balance"},
    model="candidate",
    version="2",
)


def models(spec: str) -> FunctionModel:
    return FunctionModel(live_brain if spec == "live" else candidate_brain, name=spec)


@pytest.fixture
def shadow_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/shadow.db"


def test_no_side_effect_of_the_candidate_over_100_mirrored_runs(
    store_url: str, shadow_url: str, tmp_path: Path
) -> None:
    asyncio.run(mirrored(store_url, shadow_url, tmp_path / "sink.jsonl"))


async def mirrored(live_url: str, shadow_url: str, sink_path: Path) -> None:
    READS.clear()  # the counter is the module's: another test in this process may have read
    live_store, shadow_store = build_store(live_url), build_store(shadow_url)
    await live_store.migrate()
    await shadow_store.migrate()
    hook = ShadowHook("payer")
    engine = Engine(live_store, AgentRegistry([LIVE]), models, hooks=[hook])
    shadow = Shadow(live_store, shadow_store, CANDIDATE, models)
    try:
        for i in range(RUNS):
            run = await engine.run(
                LIVE,
                json.dumps({"account": f"acct{i}"}),
                tenant=f"tenant{i % 3}",
                metadata={"sink": str(sink_path), "task_type": f"kind{i % 2}"},
            )
            assert run.status is RunStatus.COMPLETED
        sink = FencedSink(sink_path)
        assert len(sink.accepted()) == RUNS  # the live runs' transfers
        reads = len(READS)
        assert reads == RUNS
        assert hook.queue.qsize() == RUNS

        assert await shadow.drain(hook.queue) == RUNS
        assert len(sink.records()) == RUNS  # not one write by the candidate, not even refused
        assert len(READS) == reads  # reads served from the live journal
        assert await shadow.drain(hook.queue) == 0

        shadows = [
            await shadow_store.get_run(shadow_id(r.id))
            for r in await live_store.list_runs(limit=RUNS)
        ]
        assert {s.status for s in shadows} == {RunStatus.COMPLETED}
        assert all(s.metadata["shadow"]["version"] == "2" for s in shadows)
        for s in shadows:  # tenant kept
            live = await live_store.get_run(s.metadata["shadow"]["of"])
            assert s.tenant == live.tenant
        # shadow runs are not real work: the live store has none of them
        assert len(await live_store.list_runs(limit=1_000)) == RUNS

        found = await pairs(live_store, shadow_store, agent="payer")
        assert len(found) == RUNS
        one = next(p for p in found if p.live_run == shadows[0].metadata["shadow"]["of"])
        assert one.live_path == ("balance", "transfer")
        assert one.shadow_path == ("balance", "transfer", "notify")
        assert one.writes_suppressed == 2
        rows = {r["task_type"]: r for r in report(found)}
        assert set(rows) == {"kind0", "kind1"}
        assert rows["kind0"]["pairs"] == rows["kind1"]["pairs"] == RUNS // 2
        assert rows["kind0"]["output_match"] == 1.0  # even accounts answer alike
        assert rows["kind1"]["output_match"] == 0.0
        assert rows["kind0"]["path_match"] == 0.0
        assert rows["kind0"]["shadow_steps"] > rows["kind0"]["live_steps"]
        assert rows["kind0"]["writes_suppressed"] == RUNS
        assert rows["kind1"]["shadow_completed"] == RUNS // 2

        # mirroring again is a no-op: the shadow run is found, the sink untouched
        again = await shadow.mirror(shadows[0].metadata["shadow"]["of"])
        assert again is not None
        assert again.id == shadows[0].id
        assert len(sink.records()) == RUNS
    finally:
        await shadow.aclose()
        await live_store.close()
        await shadow_store.close()


def test_with_reads_run_a_recorded_read_is_still_served_and_writes_never_run(
    sqlite_url: str, shadow_url: str, tmp_path: Path
) -> None:
    async def go() -> None:
        live_store, shadow_store = build_store(sqlite_url), build_store(shadow_url)
        await live_store.migrate()
        await shadow_store.migrate()
        sink = tmp_path / "sink.jsonl"
        engine = Engine(live_store, AgentRegistry([LIVE]), models)
        # the live run reads another account than the candidate will
        live = await engine.run(
            LIVE, json.dumps({"account": "acct1"}), metadata={"sink": str(sink)}
        )
        candidate = CANDIDATE.with_tools([balance, transfer, notify])
        shadow = Shadow(live_store, shadow_store, candidate, models, reads="run")
        READS.clear()
        try:
            run = await shadow.mirror(live.id)
            assert run is not None
            assert run.status is RunStatus.COMPLETED
            assert READS == []  # the same read: served from the journal even so
            assert len(FencedSink(sink).records()) == 1
        finally:
            await shadow.aclose()
            await live_store.close()
            await shadow_store.close()

    asyncio.run(go())


def test_the_shadow_store_must_not_be_the_live_store(sqlite_url: str) -> None:
    store = build_store(sqlite_url)
    with pytest.raises(ConfigError, match="shadow runs would count as real work"):
        Shadow(store, build_store(sqlite_url), CANDIDATE, models)


def test_the_shadow_store_may_be_either_store_and_a_dead_shadow_is_finished(
    store_url: str, tmp_path: Path
) -> None:
    async def go() -> None:
        live_store = build_store(f"sqlite:///{tmp_path}/live.db")
        shadow_store = build_store(store_url)
        await live_store.migrate()
        await shadow_store.migrate()
        sink = tmp_path / "sink.jsonl"
        engine = Engine(live_store, AgentRegistry([LIVE]), models)
        shadow = Shadow(live_store, shadow_store, CANDIDATE, models)
        try:
            lives = [
                await engine.run(
                    LIVE, json.dumps({"account": f"acct{i}"}), metadata={"sink": str(sink)}
                )
                for i in range(3)
            ]
            # a shadow process that died after creating its run: the run is left PENDING
            left = lives[0]
            await shadow.engine.start(
                shadow.agent,
                left.input["task"],
                run_id=shadow_id(left.id),
                tenant=left.tenant,
                metadata={**left.metadata, "shadow": {"of": left.id, "version": "2"}},
            )
            for live in lives:
                run = await shadow.mirror(live.id)
                assert run is not None
                assert run.status is RunStatus.COMPLETED
                assert run.tenant == live.tenant
            assert len(FencedSink(sink).records()) == 3  # the live writes only
            assert len(await pairs(live_store, shadow_store)) == 3
        finally:
            await shadow.aclose()
            await live_store.close()
            await shadow_store.close()

    asyncio.run(go())


def reader_brain(messages: Sequence[Message], tools: Sequence[ToolSpec]) -> ModelResponse:
    """Reads an account the live run never read, then answers with what it got."""
    if _calls(messages) == 0:
        call = ToolCall("c1", "balance", json.dumps({"account": "other"}))
        return ModelResponse(content=None, tool_calls=(call,))
    return ModelResponse(content=str(messages[-1].content))


@pytest.mark.parametrize(("reads", "ran"), [("journal", False), ("run", True)])
def test_a_read_the_live_run_never_made(
    reads: str, ran: bool, sqlite_url: str, shadow_url: str, tmp_path: Path
) -> None:
    async def go() -> None:
        live_store, shadow_store = build_store(sqlite_url), build_store(shadow_url)
        await live_store.migrate()
        await shadow_store.migrate()
        engine = Engine(live_store, AgentRegistry([LIVE]), models)
        live = await engine.run(
            LIVE, json.dumps({"account": "acct1"}), metadata={"sink": str(tmp_path / "s")}
        )
        reader = Agent(
            "payer", "read", tools=[balance], read_only={"balance"}, model="reader", version="3"
        )
        shadow = Shadow(
            live_store,
            shadow_store,
            reader,
            lambda spec: FunctionModel(reader_brain, name="reader"),
            reads=reads,  # type: ignore[arg-type]
        )
        READS.clear()
        try:
            run = await shadow.mirror(live.id)
            assert run is not None
            journal = await shadow_store.load_journal(run.id)
        finally:
            await shadow.aclose()
            await live_store.close()
            await shadow_store.close()
        assert (["other"] if ran else []) == READS
        answer = fold(run.id, journal).output
        assert ("not recorded" in str(answer)) is not ran

    asyncio.run(go())
