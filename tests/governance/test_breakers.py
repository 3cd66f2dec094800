"""Keyed breakers: open after the threshold, refuse fast, one half-open probe, close on success."""

import asyncio

import pytest

from autonomic.errors import CircuitOpen, ModelError
from autonomic.governance.breakers import Breakers


async def _fail(breakers, key, exc):
    with pytest.raises(type(exc)):
        async with breakers.guard(key):
            raise exc


def test_opens_after_threshold_failures_and_refuses_without_calling():
    breakers = Breakers(threshold=2, reset_after=60)
    calls = []

    async def main():
        await _fail(breakers, "tool:a", ModelError("boom", retryable=True))
        assert breakers.state("tool:a").state == "closed"
        await _fail(breakers, "tool:a", ModelError("boom", retryable=True))
        with pytest.raises(CircuitOpen) as info:
            async with breakers.guard("tool:a"):
                calls.append("ran")
        return info.value

    error = asyncio.run(main())
    assert calls == []
    assert error.retryable
    assert error.key == "tool:a"
    assert error.retry_after > 50
    snap = breakers.snapshot()
    assert snap["tool:a"].state == "open"
    assert snap["tool:a"].failures == 2
    assert snap["tool:a"].to_dict()["state"] == "open"


def test_keys_are_independent():
    breakers = Breakers(threshold=1, reset_after=60)

    async def main():
        await _fail(breakers, "a", ModelError("x", retryable=True))
        async with breakers.guard("b"):
            pass

    asyncio.run(main())
    assert breakers.is_open("a")
    assert not breakers.is_open("b")


def test_non_retryable_errors_and_cancellation_do_not_count():
    breakers = Breakers(threshold=1, reset_after=60)

    async def main():
        await _fail(breakers, "k", ModelError("bad request", retryable=False))
        await _fail(breakers, "k", ValueError("a bug in the caller"))

    asyncio.run(main())
    assert breakers.state("k").state == "closed"


def test_half_open_lets_one_probe_through_and_closes_on_success():
    breakers = Breakers(threshold=1, reset_after=0.05)

    async def main():
        await _fail(breakers, "k", ModelError("down", retryable=True))
        assert breakers.state("k").state == "open"
        await asyncio.sleep(0.06)  # the reset time passing, not synchronisation
        assert breakers.state("k").state == "half_open"
        probe_entered = asyncio.Event()
        release = asyncio.Event()

        async def probe():
            async with breakers.guard("k"):
                probe_entered.set()
                await release.wait()

        task = asyncio.create_task(probe())
        await probe_entered.wait()
        with pytest.raises(CircuitOpen):  # a second caller during the probe is refused
            async with breakers.guard("k"):
                pass
        release.set()
        await task

    asyncio.run(main())
    assert breakers.state("k").state == "closed"


def test_a_failed_probe_opens_it_again():
    breakers = Breakers(threshold=1, reset_after=0.05)

    async def main():
        await _fail(breakers, "k", ModelError("down", retryable=True))
        await asyncio.sleep(0.06)
        await _fail(breakers, "k", ModelError("still down", retryable=True))

    asyncio.run(main())
    assert breakers.state("k").state == "open"


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="threshold"):
        Breakers(threshold=0)
