"""The hot state cache in the engine, on every store with the real Redis: a worker that claims a
run its previous worker let go reads the snapshot instead of folding the journal, and gets the
state the fold would give; a snapshot behind the journal is extended with the newer entries; one
that is not on the journal (ahead of it, another history), corrupt, or another tenant's is
ignored; a Redis that is down or does not answer never stops a run."""

import asyncio
import json
import random
import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from autonomic.adapters.model.scripted import FunctionModel
from autonomic.adapters.redis.state_cache import RedisStateCache
from autonomic.bootstrap import build_state_cache, build_store
from autonomic.core import snapshot
from autonomic.core.messages import ModelResponse, ToolCall
from autonomic.core.run import Run, RunStatus
from autonomic.core.state import fold
from autonomic.engine.agent import Agent, AgentRegistry
from autonomic.engine.executor import Engine
from autonomic.engine.hot_state import HotState
from autonomic.errors import ConfigError
from autonomic.tools.contract import tool

pytestmark = pytest.mark.redis


class Worker:
    """What the tool sees: the engine driving now and after how many calls it stops."""

    engine: Engine | None = None
    stop_after = 0
    calls = 0


W = Worker()


@tool(idempotent=True)
def lookup(n: int) -> dict[str, int]:
    """Look a number up."""
    W.calls += 1
    if W.calls >= W.stop_after and W.engine is not None:
        W.engine.stopping.set()  # the worker lets the run go after this step (a graceful stop)
    return {"n": n, "square": n * n}


def brain(messages: Any, tools: Any) -> ModelResponse:
    turn = sum(1 for m in messages if m.role == "assistant")
    if turn >= 40:
        return ModelResponse("done")
    return ModelResponse(None, (ToolCall(f"c{turn}", "lookup", json.dumps({"n": turn})),))


AGENT = Agent(
    name="hot",
    instructions="Look up the numbers.",
    tools=(lookup,),
    model="function:hot",
    max_turns=100,
    read_only=frozenset({"lookup"}),
)
MODEL = FunctionModel(brain, name="function:hot")


def cache_at(url: str, prefix: str, **options: Any) -> RedisStateCache:
    options.setdefault("min_version", 0)
    return RedisStateCache(url, prefix=prefix, **options)


def engine(store: Any, cache: RedisStateCache | None) -> Engine:
    return Engine(store, AgentRegistry([AGENT]), lambda _: MODEL, state_cache=cache)


async def drive(store: Any, cache: RedisStateCache | None, run_id: str, steps: int) -> Engine:
    """A new worker claims ``run_id``, takes ``steps`` steps and lets the run go."""
    worker = engine(store, cache)
    W.engine, W.stop_after, W.calls = worker, steps, 0
    claimed = await worker.claim(run_id)
    assert claimed is not None
    await worker.drive(claimed)
    return worker


async def started(store: Any, cache: RedisStateCache | None, steps: int = 5) -> str:
    """A run driven ``steps`` steps and let go, RUNNING without a lease."""
    worker = engine(store, cache)
    run = await worker.start(AGENT, "look up", tenant="acme")
    await drive(store, cache, run.id, steps)
    assert (await store.get_run(run.id)).status is RunStatus.RUNNING
    return run.id


async def folded(store: Any, run_id: str) -> Any:
    return fold(run_id, await store.load_journal(run_id))


@asynccontextmanager
async def opened(url: str) -> AsyncIterator[Any]:
    store = build_store(url)
    await store.migrate()
    try:
        yield store
    finally:
        await store.close()


def test_a_worker_reads_the_snapshot_and_gets_the_folded_state(
    store_url, redis_server, redis_prefix
):
    async def main() -> None:
        async with opened(store_url) as state_store:
            cache = cache_at(redis_server, redis_prefix)
            run_id = await started(state_store, cache)
            run = await state_store.get_run(run_id)
            reader = engine(state_store, cache)
            assert reader.hot_state is not None
            state = await reader.hot_state.read(state_store, run)
            assert state == await folded(state_store, run_id)
            assert (reader.hot_state.hits, reader.hot_state.misses) == (1, 0)
            worker = await drive(state_store, cache, run_id, 100)  # to the end, from the snapshot
            assert worker.hot_state is not None
            assert worker.hot_state.hits == 1
            final = await state_store.get_run(run_id)
            assert final.status is RunStatus.COMPLETED
            assert final.output == "done"
            entries = await state_store.load_journal(run_id)
            assert [e.seq for e in entries] == list(range(1, len(entries) + 1))
            await cache.aclose()

    asyncio.run(main())


def test_a_snapshot_behind_the_journal_is_extended_with_the_newer_entries(
    store_url, redis_server, redis_prefix
):
    async def main() -> None:
        async with opened(store_url) as state_store:
            cache = cache_at(redis_server, redis_prefix)
            run_id = await started(state_store, cache)
            await drive(
                state_store, None, run_id, 3
            )  # a worker without the cache moves the head on
            run = await state_store.get_run(run_id)
            behind = snapshot.decode(
                await cache.get(run) or b"",
                run_id=run_id,
                tenant="acme",
                fold=engine(state_store, cache).hot_state.fold,  # type: ignore[union-attr]
            )
            truth = await folded(state_store, run_id)
            assert behind.last_seq < truth.last_seq
            reader = engine(state_store, cache)
            assert reader.hot_state is not None
            assert await reader.hot_state.read(state_store, run) == truth
            assert (reader.hot_state.extended, reader.hot_state.ignored) == (1, 0)
            await cache.aclose()

    asyncio.run(main())


def _rewritten(data: bytes, **changes: Any) -> bytes:
    head = json.loads(data)
    head["state"].update(changes)
    for key, field in (("seq", "last_seq"), ("hash", "last_hash")):
        head[key] = head["state"][field]
    return json.dumps(head).encode()


@pytest.mark.parametrize(
    "damage",
    [
        "another_history",  # the entry at its head has another hash (a restored backup, ...)
        "ahead",  # it names entries the database does not have
        "garbage",
        "truncated",
        "another_tenant",
    ],
)
def test_a_snapshot_not_on_the_journal_or_corrupt_is_ignored_and_the_run_goes_on(
    store_url, redis_server, redis_prefix, damage
):
    async def main() -> None:
        async with opened(store_url) as state_store:
            cache = cache_at(redis_server, redis_prefix)
            run_id = await started(state_store, cache)
            run = await state_store.get_run(run_id)
            good = await cache.get(run) or b""
            head = json.loads(good)
            bad = {
                "another_history": _rewritten(good, last_hash="e" * 64),
                "ahead": _rewritten(good, last_seq=head["seq"] + 7),
                "garbage": b"\x00not a snapshot",
                "truncated": good[: len(good) // 2],
                "another_tenant": good,
            }[damage]
            if damage == "another_tenant":  # acme's snapshot found under another tenant's key
                run = run.replace(tenant="globex")
            await cache._redis.set(cache.key(run), bad)
            reader = engine(state_store, cache)
            assert reader.hot_state is not None
            assert await reader.hot_state.read(state_store, run) == await folded(
                state_store, run_id
            )
            assert (reader.hot_state.ignored, reader.hot_state.hits) == (1, 0)
            if damage != "another_tenant":
                worker = await drive(state_store, cache, run_id, 100)
                assert worker.hot_state is not None
                assert worker.hot_state.ignored == 1
                final = await state_store.get_run(run_id)
                assert final.status is RunStatus.COMPLETED
                assert final.output == "done"
            await cache.aclose()

    asyncio.run(main())


def test_keys_are_per_tenant_and_cannot_reach_into_another_tenants(redis_server, redis_prefix):
    cache = cache_at(redis_server, redis_prefix)
    pairs = (("a:b", "run_1"), ("a", "b:run_1"), ("a", "run_1"), ("a/b", "run_1"), ("*", "run_1"))
    keys = {cache.key(_run(tenant, run_id)) for tenant, run_id in pairs}
    assert len(keys) == len(pairs)
    assert all(k.startswith(f"{redis_prefix}:") and "*" not in k for k in keys)
    asyncio.run(cache.aclose())


def _run(tenant: str, run_id: str) -> Run:
    from autonomic.core.run import Lease

    return Run(
        id=run_id,
        agent="hot",
        agent_version="1",
        model="m",
        status=RunStatus.RUNNING,
        version=1,
        lease=Lease(owner=None, expires_at=0.0, fence=0),
        created_at=0.0,
        updated_at=0.0,
        tenant=tenant,
        input={},
        max_turns=1,
        metadata={},
        correlation_id=run_id,
    )


def test_redis_down_the_run_goes_on_and_redis_is_left_alone(sqlite_url):
    async def main() -> None:
        store = build_store(sqlite_url)
        await store.migrate()
        dead = RedisStateCache("redis://127.0.0.1:1/0", min_version=0)  # nothing listens there
        run_id = await started(store, dead)
        worker = await drive(store, dead, run_id, 100)
        final = await store.get_run(run_id)
        assert final.status is RunStatus.COMPLETED
        assert final.output == "done"
        assert worker.hot_state is not None
        assert worker.hot_state.misses == 1
        assert dead.outages >= 2
        await dead.aclose()
        await store.close()

    asyncio.run(main())


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A TCP server that accepts connections and never answers: a hung Redis."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    try:
        yield f"redis://127.0.0.1:{server.getsockname()[1]}/0"
    finally:
        server.close()


def test_a_redis_that_does_not_answer_costs_one_timeout_then_is_left_alone(
    sqlite_url, silent_server
):
    async def main() -> None:
        store = build_store(sqlite_url)
        await store.migrate()
        hung = RedisStateCache(silent_server, min_version=0, socket_timeout=0.05)
        run_id = await started(store, None)
        run = await store.get_run(run_id)
        assert await hung.get(run) is None  # timed out
        assert hung.outages == 1
        assert hung._down_until > 0
        assert await hung.get(run) is None  # not asked: left alone after the timeout
        await hung.put(run, b"x")
        assert hung.outages == 3
        worker = await drive(store, hung, run_id, 100)
        final = await store.get_run(run_id)
        assert final.status is RunStatus.COMPLETED
        assert worker.hot_state is not None
        assert worker.hot_state.misses == 1
        await hung.aclose()
        await store.close()

    asyncio.run(main())


def test_short_runs_are_neither_looked_up_nor_kept(sqlite_url, redis_server, redis_prefix):
    async def main() -> None:
        store = build_store(sqlite_url)
        await store.migrate()
        cache = RedisStateCache(redis_server, prefix=redis_prefix, min_version=1000)
        run_id = await started(store, cache)
        worker = await drive(store, cache, run_id, 2)
        keys = [k async for k in cache._redis.scan_iter(match=f"{redis_prefix}:*")]
        assert keys == []
        assert worker.hot_state is not None
        counted = worker.hot_state
        assert (counted.hits, counted.misses, counted.ignored) == (0, 0, 0)
        await cache.aclose()
        await store.close()

    asyncio.run(main())


def test_finished_runs_are_not_kept(sqlite_url, redis_server, redis_prefix):
    async def main() -> None:
        store = build_store(sqlite_url)
        await store.migrate()
        cache = cache_at(redis_server, redis_prefix)
        worker = engine(store, cache)
        W.engine, W.stop_after, W.calls = worker, 1000, 0
        run = await worker.run(AGENT, "look up")
        assert run.status is RunStatus.COMPLETED
        assert await cache.get(run) is None
        await cache.aclose()
        await store.close()

    asyncio.run(main())


def test_the_state_cache_is_configured_from_the_environment(monkeypatch, redis_server):
    monkeypatch.delenv("AUTONOMIC_STATE_CACHE", raising=False)
    monkeypatch.delenv("AUTONOMIC_REDIS_URL", raising=False)
    assert build_state_cache() is None
    monkeypatch.setenv("AUTONOMIC_REDIS_URL", redis_server)
    follows = build_state_cache()
    assert isinstance(follows, RedisStateCache)
    monkeypatch.setenv("AUTONOMIC_STATE_CACHE", "off")
    assert build_state_cache() is None
    own = build_state_cache(redis_server)
    assert isinstance(own, RedisStateCache)
    with pytest.raises(ConfigError, match="AUTONOMIC_STATE_CACHE") as caught:
        build_state_cache("memcached://user:secret@host")
    assert "secret" not in str(caught.value)
    for cache in (follows, own):
        asyncio.run(cache.aclose())


class Crash(BaseException):
    """The worker dies here (nothing of the drive's own clean-up runs after it)."""


class StallingModel(FunctionModel):
    """Answers like ``brain``; at turn ``crash_at`` it waits (as a slow model does) until the
    heartbeat has kept a snapshot of the committed state, then the worker dies."""

    def __init__(self, cache: RedisStateCache, run_id: str, crash_at: int) -> None:
        super().__init__(brain, name="function:hot")
        self.cache, self.run_id, self.crash_at = cache, run_id, crash_at
        self.kept_seq = 0

    async def complete(self, messages: Any, tools: Any) -> ModelResponse:
        turn = sum(1 for m in messages if m.role == "assistant")
        if turn == self.crash_at:
            run = _run("acme", self.run_id)
            for _ in range(1000):  # the heartbeat runs every lease_ttl / 3 = 0.1 s
                data = await self.cache.get(run)
                if data is not None:
                    self.kept_seq = json.loads(data)["seq"]
                    raise Crash
                await asyncio.sleep(0.01)
            raise AssertionError("the heartbeat kept no snapshot in 10 s")
        return await super().complete(messages, tools)


def test_the_heartbeat_keeps_a_snapshot_for_the_worker_that_takes_a_crashed_run_over(
    sqlite_url, redis_server, redis_prefix
):
    async def main() -> None:
        store = build_store(sqlite_url)
        await store.migrate()
        cache = cache_at(redis_server, redis_prefix)
        first = engine(store, None)
        run = await first.start(AGENT, "look up", tenant="acme")
        model = StallingModel(cache, run.id, crash_at=6)
        W.engine, W.stop_after, W.calls = None, 1000, 0
        dying = Engine(
            store,
            AgentRegistry([AGENT]),
            lambda _: model,
            state_cache=cache,
            lease_ttl=0.3,
            owner="elsewhere:1:dead",
        )
        claimed = await dying.claim(run.id)
        assert claimed is not None
        with pytest.raises(Crash):
            await dying.drive(claimed)
        journal = await store.load_journal(run.id)
        assert model.kept_seq == journal[-1].seq  # committed state only, at the head
        later = Engine(
            store,
            AgentRegistry([AGENT]),
            lambda _: MODEL,
            state_cache=cache,
            clock=lambda: 10**10,  # the dead worker's lease has expired
        )
        W.engine = later
        taken = await later.claim(run.id)
        assert taken is not None
        await later.drive(taken)
        assert later.hot_state is not None
        assert later.hot_state.hits == 1
        final = await store.get_run(run.id)
        assert final.status is RunStatus.COMPLETED
        assert final.output == "done"
        await cache.aclose()
        await store.close()

    asyncio.run(main())


class CheckedHotState(HotState):
    """Reads through the cache, and checks every state it returns against the fold."""

    checked = 0

    async def read(self, store: Any, run: Run) -> Any:
        state = await super().read(store, run)
        assert state == fold(run.id, await store.load_journal(run.id))
        CheckedHotState.checked += 1
        return state


def test_over_many_hand_overs_every_state_read_from_the_cache_is_the_fold(
    store_url, redis_server, redis_prefix
):
    async def main() -> None:
        async with opened(store_url) as store:
            cache = cache_at(redis_server, redis_prefix)
            run_id = await started(store, cache, steps=2)
            rng = random.Random(17)
            CheckedHotState.checked = 0
            used = 0
            for _ in range(12):
                with_cache = rng.random() < 0.7
                worker = engine(store, cache if with_cache else None)
                if with_cache:
                    worker.hot_state = CheckedHotState(cache)
                W.engine, W.stop_after, W.calls = worker, rng.randint(1, 3), 0
                claimed = await worker.claim(run_id)
                if claimed is None:
                    break
                await worker.drive(claimed)
                if worker.hot_state is not None:
                    used += worker.hot_state.hits + worker.hot_state.extended
            assert CheckedHotState.checked >= 5
            assert used == CheckedHotState.checked  # every read came from a snapshot
            await cache.aclose()

    asyncio.run(main())
