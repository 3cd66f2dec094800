"""Agent versions: computed or named, pinned by a run, driven only by a worker that has them.

The crash test kills a worker driving a run of version 1 (SIGKILL, the crash harness) after
version 2 is deployed: a fleet holding only version 2 never touches the run; one that holds both
finishes it on version 1 (the tools of version 1 act, version 2's never do).
"""

import asyncio
import dataclasses
import time

import pytest

from autonomic.bootstrap import build_store
from autonomic.core.entries import ToolIntent, Transition
from autonomic.core.journal import EntryKind
from autonomic.core.run import RunStatus
from autonomic.engine.agent import Agent, AgentRegistry
from autonomic.engine.executor import Engine, new_run_id
from autonomic.engine.faults import CrashAt
from autonomic.engine.fingerprint import VERSION_LENGTH, computed_version
from autonomic.engine.worker import Worker
from autonomic.errors import InvalidInput, NotFound
from autonomic.governance.runaway.budget import Budget
from autonomic.testing.crash import CrashKit, TrialFiles, drive_in_child
from autonomic.tools.contract import tool


@tool
def greet(name: str) -> str:
    """Say hello."""
    return f"hello {name}"


def _agent(**changes) -> Agent:
    fields = {"name": "greeter", "instructions": "Greet people.", "tools": (greet,)}
    return Agent(**{**fields, **changes})


def test_a_version_left_out_is_a_hash_of_instructions_tools_and_policy():
    base = _agent()
    assert len(base.version) == VERSION_LENGTH
    assert _agent().version == base.version  # the same definition: the same version
    assert computed_version(base) == base.version
    assert _agent(instructions="Greet people warmly.").version != base.version
    assert _agent(tools=(dataclasses.replace(greet, version="2"),)).version != base.version
    assert _agent(budget=Budget(turns=3)).version != base.version
    assert _agent(max_turns=5).version != base.version
    assert _agent(model="scripted:other").version == base.version  # the run pins its model


def test_a_named_version_is_kept_and_a_bad_one_is_refused_with_the_fix():
    assert _agent(version="2024-06-rc1").version == "2024-06-rc1"
    with pytest.raises(InvalidInput, match="is not a version name"):
        _agent(version="no spaces please")


def test_the_registry_holds_versions_side_by_side_and_names_a_missing_one():
    v1, v2 = _agent(version="1"), _agent(version="2")
    registry = AgentRegistry([v1, v2])
    assert registry.get("greeter") is v2  # the last added is current
    assert registry.get("greeter", "1") is v1
    assert registry.keys() == [("greeter", "1"), ("greeter", "2")]
    registry.add(_agent(version="3"), current=False)
    assert registry.get("greeter").version == "2"
    with pytest.raises(NotFound, match=r"no version '9' here \(registered: 1, 2, 3\)"):
        registry.get("greeter", "9")


# -- a run pinned to version 1, across a crash, with version 2 deployed ---------------------------


def _versions(kit: CrashKit) -> tuple[Agent, Agent]:
    """The crash kit's agent as version 1, and a version 2 whose write tools are other
    versions that record themselves as version 2 in the sink."""
    v1 = kit.agent
    v2_tools = tuple(dataclasses.replace(t, version="2", fn=_refuse) for t in v1.tools)
    v2 = Agent(
        name=v1.name,
        instructions=v1.instructions + " Version 2.",
        tools=v2_tools,
        model=v1.model,
        max_turns=v1.max_turns,
    )
    assert v1.version != v2.version
    return v1, v2


async def _refuse(**_: object) -> None:
    raise AssertionError("version 2's tool ran for a run pinned to version 1")


async def _migrate(url: str) -> None:
    store = build_store(url)
    try:
        await store.migrate()
    finally:
        await store.close()


def _engine(store, kit, agents, now):
    return Engine(store, AgentRegistry(agents), kit.resolve, clock=lambda: now[0], lease_ttl=5.0)


def test_a_run_started_on_v1_finishes_on_v1_after_v2_is_deployed_across_a_crash(
    store_url, tmp_path
):
    kit = CrashKit()
    v1, v2 = _versions(kit)
    run_id = new_run_id()
    files = TrialFiles.create(tmp_path)
    asyncio.run(_migrate(store_url))
    child = drive_in_child(store_url, kit, run_id, files, CrashAt("step_done", 3))
    assert child.killed, str(child)

    async def main() -> None:
        store = build_store(store_url)
        try:
            now = [time.time() + 3600]  # past the dead child's lease
            only_v2 = _engine(store, kit, [v2], now)
            assert await only_v2.claim() is None  # the v2 fleet never touches it
            assert await Worker(only_v2, version_grace=None).run(until_idle=True) == []
            with pytest.raises(NotFound, match=f"no version '{v1.version}'"):
                await only_v2.run_to_end(run_id)
            assert (await store.get_run(run_id)).lease.fence == 1  # nothing claimed it

            both = _engine(store, kit, [v1, v2], now)  # v2 current: new runs start on it
            claimed = await both.claim()
            assert claimed is not None
            assert claimed.id == run_id
            done = await both.drive(claimed)
            assert done.status is RunStatus.COMPLETED
            assert done.agent_version == v1.version
            entries = await store.load_journal(run_id)
            intents = [e.body for e in entries if isinstance(e.body, ToolIntent)]
            assert intents
            assert {i.version for i in intents} == {"1"}
            assert any(e.kind is EntryKind.RECOVERY for e in entries)

            fresh = await both.start(v1.name, {"goal": "x"})
            assert fresh.agent_version == v2.version
        finally:
            await store.close()

    asyncio.run(main())


# -- the grace period -------------------------------------------------------------------------------


def test_a_run_whose_version_no_worker_has_is_suspended_after_the_grace_period(store_url, tmp_path):
    kit = CrashKit()
    v1, v2 = _versions(kit)

    async def main() -> None:
        store = build_store(store_url)
        await store.migrate()
        try:
            now = [1_000_000.0]
            old = _engine(store, kit, [v1], now)
            fleet = _engine(store, kit, [v2], now)
            files = TrialFiles.create(tmp_path)
            stranded = await kit.start(old, new_run_id(), files)
            served = await fleet.start(v2.name, {"goal": "x"})
            await old.announce()
            await fleet.announce()

            now[0] += 30
            await old.announce()  # the v1 worker is still there, then goes away
            now[0] += 40
            await fleet.announce()
            assert await fleet.suspend_unserved(60) == []  # waited 70 s, v1 seen 40 s ago
            now[0] += 21
            await fleet.announce()
            worker = Worker(fleet, version_grace=60)  # an idle worker sweeps
            await worker._sweep_versions()

            run = await store.get_run(stranded.id)
            assert run.status is RunStatus.SUSPENDED
            assert f"no worker has agent {v1.name} version {v1.version}" in run.status_reason
            assert f"autonomic resume {run.id} --force --agent-version VERSION" in (
                run.status_reason
            )
            last = (await store.load_journal(run.id))[-1].body
            assert isinstance(last, Transition)
            assert last.source == "PENDING"
            assert last.agent_version == {"missing": v1.version}
            assert (await store.get_run(served.id)).status is RunStatus.PENDING  # v2 is served

            moved = await fleet.reopen(run.id, "moved by operator", agent_version=v2.version)
            assert moved.agent_version == v2.version
            assert (await store.get_run(run.id)).agent_version == v2.version
            last = (await store.load_journal(run.id))[-1].body
            assert last.agent_version == {"from": v1.version, "to": v2.version}
            with pytest.raises(NotFound, match="no version 'nope'"):
                await fleet.reopen(run.id, "again", agent_version="nope")
        finally:
            await store.close()

    asyncio.run(main())
