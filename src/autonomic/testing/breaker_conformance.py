"""The conformance suite of ``BreakerStore``: what every circuit breaker store must do, checked
the same way for the in-process ``Breakers`` and the shared ``RedisBreakers``.

Each check receives a factory of stores (``make(threshold=..., reset_after=...)``) and raises
``AssertionError`` with what went wrong. ``run_check`` closes what the check made. With pytest,
one test per check::

    from autonomic.testing.breaker_conformance import CHECKS, run_check

    @pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
    def test_breaker_conformance(check):
        asyncio.run(run_check(check, lambda **kw: MyBreakers(**kw)))

Time is never waited for: ``aexpire`` makes an open breaker due for its probe, and concurrency is
ordered with events. What is shared between processes is the Redis store's own business (see
``tests/adapters/redis/test_redis_breakers.py``); this suite pins one store's behaviour.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Protocol

from autonomic.errors import CircuitOpen, ModelError
from autonomic.ports.breakers import BreakerStore


class MakeBreakers(Protocol):
    """Builds a fresh, empty store with these defaults."""

    def __call__(self, *, threshold: int, reset_after: float) -> BreakerStore: ...


Check = Callable[[MakeBreakers], Awaitable[None]]


def _down() -> ModelError:
    """A failure that counts (a 503)."""
    return ModelError("provider down", retryable=True, status=503)


def _bad_request() -> ModelError:
    """An answer that does not count (a 400-style non-retryable error)."""
    return ModelError("bad request", retryable=False, status=400)


async def _end(store: BreakerStore, key: str, exc: BaseException | None = None) -> None:
    """One guarded call that ends with ``exc`` (or succeeds); the exception is swallowed here."""
    try:
        async with store.guard(key):
            if exc is not None:
                raise exc
    except BaseException as caught:
        if caught is not exc:
            raise


async def _refused(store: BreakerStore, key: str) -> CircuitOpen:
    ran = False
    try:
        async with store.guard(key):
            ran = True
    except CircuitOpen as exc:
        return exc
    raise AssertionError(f"{key}: the call was let through (ran={ran}), expected CircuitOpen")


async def opens_at_the_threshold_and_refuses_without_calling(make: MakeBreakers) -> None:
    store = make(threshold=2, reset_after=60.0)
    await _end(store, "k", _down())
    st = await store.astate("k")
    assert (st.state, st.failures) == ("closed", 1), st
    assert not await store.ais_open("k")
    await _end(store, "k", _down())
    st = await store.astate("k")
    assert (st.state, st.failures) == ("open", 2), st
    assert 55.0 < st.retry_in <= 60.0, st
    assert await store.ais_open("k")
    error = await _refused(store, "k")
    assert error.key == "k"
    assert error.retryable
    assert 55.0 < (error.retry_after or 0.0) <= 60.0, error.retry_after


async def keys_are_independent(make: MakeBreakers) -> None:
    store = make(threshold=1, reset_after=60.0)
    await _end(store, "a", _down())
    await _end(store, "b")
    assert await store.ais_open("a")
    assert not await store.ais_open("b")
    assert (await store.astate("never-used")).state == "closed"


async def a_non_retryable_error_does_not_count(make: MakeBreakers) -> None:
    store = make(threshold=1, reset_after=60.0)
    await _end(store, "k", _bad_request())  # a 400 says nothing about the provider's health
    await _end(store, "k", ValueError("a bug in the caller"))
    st = await store.astate("k")
    assert (st.state, st.failures) == ("closed", 0), st


async def an_answer_ends_the_failure_streak(make: MakeBreakers) -> None:
    store = make(threshold=2, reset_after=60.0)
    await _end(store, "k", _down())
    await _end(store, "k", _bad_request())  # the provider answered: it is up
    await _end(store, "k", _down())
    st = await store.astate("k")
    assert (st.state, st.failures) == ("closed", 1), st
    await _end(store, "k")
    assert (await store.astate("k")).failures == 0


async def cancellation_changes_nothing(make: MakeBreakers) -> None:
    store = make(threshold=2, reset_after=60.0)
    await _end(store, "k", _down())
    await _end(store, "k", asyncio.CancelledError())  # the caller gave up: nothing learnt
    st = await store.astate("k")
    assert (st.state, st.failures) == ("closed", 1), st
    await _end(store, "k", _down())
    assert (await store.astate("k")).state == "open"


async def half_open_lets_one_probe_through_and_closes_on_success(make: MakeBreakers) -> None:
    store = make(threshold=1, reset_after=60.0)
    await _end(store, "k", _down())
    await store.aexpire("k")
    st = await store.astate("k")
    assert (st.state, st.probing) == ("half_open", False), st
    assert not await store.ais_open("k")  # due: the next caller probes
    entered = asyncio.Event()
    release = asyncio.Event()

    async def probe() -> None:
        async with store.guard("k"):
            entered.set()
            await release.wait()

    task = asyncio.create_task(probe())
    try:
        await entered.wait()
        st = await store.astate("k")
        assert (st.state, st.probing) == ("half_open", True), st
        assert await store.ais_open("k")
        error = await _refused(store, "k")  # a second caller during the probe
        assert error.retry_after == 0.0, error.retry_after
    finally:
        release.set()
        await task
    st = await store.astate("k")
    assert (st.state, st.failures, st.probing) == ("closed", 0, False), st
    await _end(store, "k")  # closed: calls go through again


async def a_failed_probe_opens_it_again(make: MakeBreakers) -> None:
    store = make(threshold=1, reset_after=60.0)
    await _end(store, "k", _down())
    await store.aexpire("k")
    await _end(store, "k", _down())
    st = await store.astate("k")
    assert (st.state, st.probing) == ("open", False), st
    assert 55.0 < st.retry_in <= 60.0, st  # a full reset time from the failed probe
    await _refused(store, "k")


async def a_cancelled_probe_leaves_it_due_for_the_next(make: MakeBreakers) -> None:
    store = make(threshold=1, reset_after=60.0)
    await _end(store, "k", _down())
    await store.aexpire("k")
    await _end(store, "k", asyncio.CancelledError())
    st = await store.astate("k")
    assert (st.state, st.probing) == ("half_open", False), st
    await _end(store, "k")  # the next caller is the probe, and it succeeds
    assert (await store.astate("k")).state == "closed"


async def snapshot_reports_every_key_used(make: MakeBreakers) -> None:
    store = make(threshold=1, reset_after=60.0)
    await _end(store, "model:a")
    await _end(store, "model:b", _down())
    snap = await store.asnapshot()
    assert sorted(snap) == ["model:a", "model:b"], snap
    assert snap["model:a"].state == "closed"
    assert snap["model:b"].state == "open"
    assert snap["model:b"].failures == 1
    as_dict = snap["model:b"].to_dict()
    assert (as_dict["key"], as_dict["state"], as_dict["failures"]) == ("model:b", "open", 1)


async def expire_leaves_a_closed_breaker_alone(make: MakeBreakers) -> None:
    store = make(threshold=2, reset_after=60.0)
    await _end(store, "k", _down())
    await store.aexpire("k")
    await store.aexpire("never-used")
    st = await store.astate("k")
    assert (st.state, st.failures) == ("closed", 1), st


async def a_key_keeps_the_settings_of_its_first_use(make: MakeBreakers) -> None:
    store = make(threshold=5, reset_after=60.0)
    async with store.guard("k", threshold=1):
        pass
    with contextlib.suppress(ModelError):
        async with store.guard("k", threshold=3):  # later settings do not change the key
            raise _down()
    assert (await store.astate("k")).state == "open"


CHECKS: tuple[Check, ...] = (
    opens_at_the_threshold_and_refuses_without_calling,
    keys_are_independent,
    a_non_retryable_error_does_not_count,
    an_answer_ends_the_failure_streak,
    cancellation_changes_nothing,
    half_open_lets_one_probe_through_and_closes_on_success,
    a_failed_probe_opens_it_again,
    a_cancelled_probe_leaves_it_due_for_the_next,
    snapshot_reports_every_key_used,
    expire_leaves_a_closed_breaker_alone,
    a_key_keeps_the_settings_of_its_first_use,
)


async def run_check(check: Check, make: MakeBreakers) -> None:
    """Run one check with stores from ``make``, closing every store it made."""
    made: list[BreakerStore] = []

    def tracked(*, threshold: int, reset_after: float) -> BreakerStore:
        store = make(threshold=threshold, reset_after=reset_after)
        made.append(store)
        return store

    try:
        await check(tracked)
    finally:
        for store in made:
            await store.aclose()
