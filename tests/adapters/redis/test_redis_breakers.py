"""What only the shared store does: several stores (as several workers, and as worker processes)
see one circuit, one probe at a time across them, atomic counting, a probe lock that expires, keys
under the prefix, and falling back to the store it was given when Redis is unreachable."""

import asyncio
import logging
import subprocess
import sys
import textwrap

import pytest

from autonomic.adapters.redis.breakers import RedisBreakers
from autonomic.errors import CircuitOpen, ModelError
from autonomic.governance.breakers import Breakers

UNREACHABLE = "redis://:s3cret@127.0.0.1:1/0"  # nothing listens on port 1: refused at once


def _redis_breakers(url, **kw):
    """A ``RedisBreakers`` with an in-process fallback of the same settings, as the gateway makes."""
    local = {k: kw[k] for k in ("threshold", "reset_after") if k in kw}
    return RedisBreakers(url, fallback=Breakers(**local), **kw)


def _down():
    return ModelError("provider down", retryable=True, status=503)


async def _fail(store, key):
    with pytest.raises(ModelError):
        async with store.guard(key):
            raise _down()


@pytest.fixture
def stores(redis_server, redis_prefix):
    """A factory of stores on the test's prefix; each one stands for a worker."""

    def make(**kw):
        kw.setdefault("threshold", 2)
        kw.setdefault("reset_after", 60.0)
        # Not 1 s: on a busy host a reply took longer, and a store that falls back to its
        # local counts mid-test is another test (the fallback tests use an unreachable URL).
        kw.setdefault("socket_timeout", 30.0)
        return _redis_breakers(redis_server, prefix=redis_prefix, key_ttl=600, **kw)

    return make


@pytest.mark.redis
def test_failures_in_one_worker_open_the_circuit_for_another(stores):
    a, b = stores(), stores()
    calls = []

    async def main():
        try:
            await _fail(a, "model:main")
            await _fail(b, "model:main")  # consecutive across workers: 2 of 2
            with pytest.raises(CircuitOpen) as info:
                async with a.guard("model:main"):
                    calls.append("a")
            return info.value, await b.asnapshot()
        finally:
            await a.aclose()
            await b.aclose()

    error, snap = asyncio.run(main())
    assert calls == []
    assert error.retry_after > 50
    assert snap["model:main"].state == "open"
    assert snap["model:main"].failures == 2


@pytest.mark.redis
def test_one_probe_at_a_time_across_workers_and_its_success_closes_it_for_all(stores):
    a, b = stores(threshold=1), stores(threshold=1)

    async def main():
        try:
            await _fail(a, "k")
            await b.aexpire("k")  # an operator's "try again now" from any worker
            async with a.guard("k"):
                seen_by_b = await b.astate("k")
                with pytest.raises(CircuitOpen):
                    async with b.guard("k"):
                        pass
            async with b.guard("k"):
                pass
            return seen_by_b, await b.astate("k")
        finally:
            await a.aclose()
            await b.aclose()

    during, after = asyncio.run(main())
    assert (during.state, during.probing, during.refusing) == ("half_open", True, True)
    assert (after.state, after.failures) == ("closed", 0)


@pytest.mark.redis
def test_concurrent_failures_from_many_workers_are_all_counted(stores):
    workers = [stores(threshold=40) for _ in range(4)]

    async def main():
        try:
            await asyncio.gather(*(_fail(w, "k") for w in workers for _ in range(10)))
            return await workers[0].astate("k")
        finally:
            for w in workers:
                await w.aclose()

    state = asyncio.run(main())
    assert (state.state, state.failures) == ("open", 40)


@pytest.mark.redis
def test_a_probe_lock_expires_so_a_crashed_prober_cannot_wedge_the_circuit(
    stores, redis_server, redis_prefix
):
    import redis

    store = stores(threshold=1, probe_timeout=7.0)

    async def main():
        try:
            await _fail(store, "k")
            await store.aexpire("k")
            guard = store.guard("k")
            await guard.__aenter__()  # the prober "crashes": it never reports back
            return await store.astate("k")
        finally:
            await store.aclose()

    state = asyncio.run(main())
    assert state.probing
    client = redis.Redis.from_url(redis_server)
    try:
        ttl_ms = client.pttl(f"{redis_prefix}:p:k")
        keys = sorted(k.decode() for k in client.scan_iter(match=f"{redis_prefix}:*"))
        hash_ttl = client.ttl(f"{redis_prefix}:k:k")
    finally:
        client.close()
    assert 0 < ttl_ms <= 7000
    assert keys == [f"{redis_prefix}:k:k", f"{redis_prefix}:keys", f"{redis_prefix}:p:k"]
    assert 0 < hash_ttl <= 600


@pytest.mark.redis
def test_another_prefix_is_another_set_of_circuits(stores, redis_server, redis_prefix):
    a = stores(threshold=1)
    other = _redis_breakers(redis_server, prefix=f"{redis_prefix}-other", key_ttl=600)

    async def main():
        try:
            await _fail(a, "k")
            return await a.astate("k"), await other.astate("k"), await other.asnapshot()
        finally:
            await a.aclose()
            await other.aclose()

    mine, theirs, their_snapshot = asyncio.run(main())
    assert (mine.state, theirs.state, their_snapshot) == ("open", "closed", {})


def test_an_unreachable_redis_falls_back_to_this_process_and_warns_once(caplog):
    fallbacks = []
    store = _redis_breakers(
        UNREACHABLE,
        threshold=1,
        reset_after=60.0,
        retry_redis_after=0.0,
        on_fallback=fallbacks.append,
    )
    ran = []

    async def main():
        try:
            async with store.guard("model:main"):
                ran.append(1)  # the call is not refused because Redis is down
            await _fail(store, "model:main")
            with pytest.raises(CircuitOpen):  # and the circuit still protects, locally
                async with store.guard("model:main"):
                    ran.append(2)
            return await store.astate("model:main"), await store.asnapshot()
        finally:
            await store.aclose()

    with caplog.at_level(logging.WARNING, logger="autonomic.redis"):
        state, snap = asyncio.run(main())
    assert ran == [1]
    assert state.state == "open"
    assert snap["model:main"].state == "open"
    assert store.fallbacks == len(fallbacks) >= 5
    assert set(fallbacks) <= {"model:main", ""}
    warnings = [r for r in caplog.records if "Redis unreachable" in r.getMessage()]
    assert len(warnings) == 1  # once per outage, not once per call
    assert not any("s3cret" in r.getMessage() for r in caplog.records)  # no secrets in logs


def test_after_a_failure_redis_is_left_alone_for_a_while():
    store = _redis_breakers(UNREACHABLE, retry_redis_after=3600.0)
    tried = []
    original = store._enter

    async def counting(**kw):
        tried.append(1)
        return await original(**kw)

    store._enter = counting

    async def main():
        try:
            for _ in range(3):
                async with store.guard("k"):
                    pass
        finally:
            await store.aclose()

    asyncio.run(main())
    assert tried == [1]  # the second and third calls did not wait for a dead server
    assert store.fallbacks == 3


def test_the_fallback_it_is_given_holds_the_state_while_redis_is_down_and_is_closed_with_it():
    closed = []

    class Fallback(Breakers):
        async def aclose(self):
            closed.append(True)

    fallback = Fallback(threshold=1, reset_after=60.0)
    store = RedisBreakers(UNREACHABLE, fallback=fallback, threshold=1, reset_after=60.0)

    async def main():
        try:
            await _fail(store, "model:main")
            await store.aexpire("model:main")  # the operator's "try again now" reaches it too
            return fallback.state("model:main"), await store.astate("model:main")
        finally:
            await store.aclose()

    theirs, ours = asyncio.run(main())
    assert store.local is fallback
    assert theirs == ours
    assert (theirs.state, theirs.failures) == ("half_open", 1)
    assert closed == [True]


@pytest.mark.parametrize(
    "kw",
    [{"threshold": 0}, {"reset_after": 0}, {"probe_timeout": 0}, {"key_ttl": 0.5}],
    ids=lambda kw: next(iter(kw)),
)
def test_bad_settings_are_refused(kw):
    with pytest.raises(ValueError, match=next(iter(kw))):
        RedisBreakers(UNREACHABLE, fallback=Breakers(), **kw)


# One worker holding or trying the circuit through the breaker API, told what to do on stdin.
PROBER = textwrap.dedent(
    """
    import asyncio, sys
    from autonomic.errors import CircuitOpen, ModelError
    from autonomic.adapters.redis.breakers import RedisBreakers
    from autonomic.governance.breakers import Breakers

    redis_url, prefix, action = sys.argv[1:]

    async def main():
        store = RedisBreakers(
            redis_url,
            fallback=Breakers(threshold=1, reset_after=60),
            prefix=prefix,
            threshold=1,
            reset_after=60,
            key_ttl=600,
        )
        try:
            if action == "fail":
                try:
                    async with store.guard("model:main"):
                        raise ModelError("down", retryable=True)
                except ModelError:
                    pass
                print((await store.astate("model:main")).state, flush=True)
            elif action == "probe":
                await store.aexpire("model:main")
                async with store.guard("model:main"):
                    print("probing", flush=True)
                    sys.stdin.readline()  # until the test has tried another worker
                print((await store.astate("model:main")).state, flush=True)
            else:
                try:
                    async with store.guard("model:main"):
                        print("ran", flush=True)
                except CircuitOpen:
                    print("refused", flush=True)
        finally:
            await store.aclose()

    asyncio.run(main())
    """
)


def _prober(redis_url, prefix, action):
    return subprocess.Popen(
        [sys.executable, "-c", PROBER, redis_url, prefix, action],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


def _said(proc):
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0
    return out.split()


@pytest.mark.redis
def test_one_probe_at_a_time_across_worker_processes(redis_server, redis_prefix):
    assert _said(_prober(redis_server, redis_prefix, "fail")) == ["open"]
    assert _said(_prober(redis_server, redis_prefix, "try")) == ["refused"]
    prober = _prober(redis_server, redis_prefix, "probe")
    try:
        assert prober.stdout.readline().strip() == "probing"
        # the probe is in flight in another process: this one is refused
        assert _said(_prober(redis_server, redis_prefix, "try")) == ["refused"]
        prober.stdin.write("done\n")
        prober.stdin.flush()
        assert _said(prober) == ["closed"]
    finally:
        if prober.poll() is None:
            prober.kill()
    assert _said(_prober(redis_server, redis_prefix, "try")) == ["ran"]
