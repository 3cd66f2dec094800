"""The waits servers ask for and the waits circuits impose, on a virtual clock.

The gateway takes its clock and its sleep as arguments, so a 60-second ``llm_provider-retry-after``
is honoured here in no time: ``VirtualTime.sleep`` moves the sleeping task's clock by what it slept.
Each task keeps its own time, as concurrent calls each waiting for their own hint would, and
``Timed`` records on it when each attempt started and ended, so "the retry was sent no sooner than
the server asked" is measured from the moment the 429 came back.
"""

import asyncio
import contextvars
from collections.abc import Callable
from contextlib import asynccontextmanager

import pytest

from autonomic.core.messages import Message, Role
from autonomic.errors import CircuitOpen, ModelError, ProviderUnavailable, RateLimited
from autonomic.gateway import Gateway, call_context
from autonomic.gateway.gateway import build_provider_model
from autonomic.governance.breakers import CLOSED, Breakers, BreakerState
from autonomic.testing.gateway import gateway_config, provider
from autonomic.testing.openai_server import (
    OpenAITestServer,
    completion,
    limited_once,
    rate_limited,
    server_error,
)

HI = [Message(Role.USER, "hi")]


class VirtualTime:
    """Monotonic seconds that only sleeps move, per task: a sleep of *s* returns at once with the
    sleeping task's clock *s* later (the gateway's deadline and waits use this clock)."""

    def __init__(self) -> None:
        self._elapsed = contextvars.ContextVar(f"virtual_time_{id(self)}", default=0.0)
        self.slept: list[float] = []
        self.on_sleep: Callable[[float], None] | None = None

    def clock(self) -> float:
        return 1000.0 + self._elapsed.get()

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self._elapsed.set(self._elapsed.get() + seconds)
        if self.on_sleep is not None:
            self.on_sleep(seconds)
        await asyncio.sleep(0)


class Timed:
    """A provider's model that records, per conversation, each attempt's (start, end) on the
    calling task's virtual clock."""

    def __init__(self, model, vt: VirtualTime) -> None:
        self._model = model
        self._vt = vt
        self.attempts: dict[str, list[tuple[float, float]]] = {}

    @property
    def name(self) -> str:
        return self._model.name

    async def complete(self, messages, tools):
        start = self._vt.clock()
        try:
            return await self._model.complete(messages, tools)
        finally:
            self.attempts.setdefault(messages[-1].content, []).append((start, self._vt.clock()))

    async def aclose(self) -> None:
        await self._model.aclose()


# (header as the test server spells it, seconds asked, tolerance of the form)
HINTS = [
    ("Retry-After", 7.0, 0.0),
    ("retry-after-date", 30.0, 1.0),  # an HTTP date has whole seconds
    ("retry-after-ms", 2.5, 0.0),
    ("llm_provider-retry-after", 60.0, 0.0),  # all a LiteLLM proxy sends on a 429
    ("x-ratelimit-reset-requests", 62.5, 0.0),  # sent as 1m2.5s
    ("x-ratelimit-reset-tokens", 45.0, 0.0),  # sent as 45s
]


@pytest.mark.parametrize(("header", "seconds", "tolerance"), HINTS, ids=[h for h, *_ in HINTS])
def test_forty_concurrent_calls_each_told_to_wait_all_succeed_and_wait_at_least_the_hint(
    header, seconds, tolerance
):
    vt = VirtualTime()
    answer = limited_once(lambda body: rate_limited(seconds, header=header), completion("ok"))
    with OpenAITestServer(default=answer, keep_alive=True) as server:
        config = gateway_config(provider("main", server.base_url))
        timed = Timed(build_provider_model(config.providers[0]), vt)
        gateway = Gateway(config, models={"main": timed}, clock=vt.clock, sleep=vt.sleep)

        async def main():
            try:
                return await asyncio.gather(
                    *(gateway.complete([Message(Role.USER, f"call {n}")], []) for n in range(40)),
                    return_exceptions=True,
                )
            finally:
                await gateway.aclose()

        results = asyncio.run(main())
    failures = [r for r in results if isinstance(r, BaseException)]
    assert failures == []
    assert all(r.attempts == 2 for r in results)
    assert len(server.requests) == 80
    assert len(timed.attempts) == 40
    for (_, told), (retried, _) in timed.attempts.values():
        # the backoff alone is at most 0.05 s in this configuration: only the hint explains this
        assert retried - told >= seconds - tolerance
    assert len(vt.slept) == 40
    assert max(vt.slept) < seconds + 1.0  # and the hint is waited for once, not twice


def test_a_wait_longer_than_the_deadline_fails_at_once_naming_the_wait():
    vt = VirtualTime()
    reply = rate_limited(60, header="llm_provider-retry-after")
    with OpenAITestServer(default=reply) as server:
        gateway = Gateway(
            gateway_config(provider("main", server.base_url)), clock=vt.clock, sleep=vt.sleep
        )

        async def main():
            try:
                with call_context(timeout=20):
                    await gateway.complete(HI, [])
            finally:
                await gateway.aclose()

        with pytest.raises(RateLimited) as info:
            asyncio.run(main())
    error = info.value
    assert len(server.requests) == 1
    assert vt.slept == []  # no point sleeping towards a deadline the wait passes
    assert "asked to wait 60.0s" in error.message
    assert "llm_provider-retry-after: 60" in error.message
    assert "deadline" in error.message
    assert error.retryable
    assert error.retry_after == pytest.approx(60.0)


def test_an_absurd_hint_is_cut_to_max_server_wait():
    vt = VirtualTime()
    with OpenAITestServer(
        [rate_limited(86400, header="Retry-After")], default=completion("ok")
    ) as server:
        config = gateway_config(
            provider("main", server.base_url),
            retry={"max_attempts": 4, "base_delay": 0.01, "max_delay": 0.05, "max_server_wait": 90},
        )
        gateway = Gateway(config, clock=vt.clock, sleep=vt.sleep)

        async def main():
            try:
                with call_context(timeout=3600):
                    return await gateway.complete(HI, [])
            finally:
                await gateway.aclose()

        response = asyncio.run(main())
    assert response.content == "ok"
    assert response.attempts == 2
    assert vt.slept == [pytest.approx(90.0, abs=0.5)]


def test_a_hint_past_the_deadline_names_the_cut_when_it_was_cut():
    vt = VirtualTime()
    with OpenAITestServer(default=rate_limited(7200, header="x-ratelimit-reset-tokens")) as server:
        gateway = Gateway(
            gateway_config(provider("main", server.base_url)), clock=vt.clock, sleep=vt.sleep
        )

        async def main():
            try:
                with call_context(timeout=100):
                    await gateway.complete(HI, [])
            finally:
                await gateway.aclose()

        with pytest.raises(RateLimited) as info:
            asyncio.run(main())
    assert "asked to wait 7200.0s, cut to 300s by retry.max_server_wait" in info.value.message
    assert "x-ratelimit-reset-tokens: 2h0m0s" in info.value.message


def test_another_provider_serves_while_the_first_ones_wait_runs():
    vt = VirtualTime()
    with (
        OpenAITestServer(default=rate_limited(60, header="llm_provider-retry-after")) as busy,
        OpenAITestServer(default=completion("from second")) as second,
    ):
        config = gateway_config(
            provider("busy", busy.base_url), provider("second", second.base_url)
        )
        gateway = Gateway(config, clock=vt.clock, sleep=vt.sleep)

        async def main():
            try:
                return await gateway.complete(HI, [])
            finally:
                await gateway.aclose()

        response = asyncio.run(main())
    assert response.provider == "second"
    assert vt.slept == []
    assert len(busy.requests) == 1


async def _open_circuit(gateway, name, failures=1):
    for _ in range(failures):
        with pytest.raises(ModelError):
            async with gateway.breakers.guard(f"model:{name}"):
                raise ModelError("boom", retryable=True)


def test_a_critical_call_on_an_open_circuit_fails_fast_and_says_why():
    vt = VirtualTime()
    with OpenAITestServer(default=completion("never")) as server:
        config = gateway_config(
            provider("primary", server.base_url),
            breaker={"threshold": 1, "reset_after": 30},
            retry={"max_attempts": 4, "base_delay": 0.5, "max_delay": 20},
        )
        gateway = Gateway(config, clock=vt.clock, sleep=vt.sleep)

        async def main():
            await _open_circuit(gateway, "primary")
            try:
                with call_context(priority="critical"), pytest.raises(ProviderUnavailable) as info:
                    await gateway.complete(HI, [])
                return info.value
            finally:
                await gateway.aclose()

        error = asyncio.run(main())
    assert vt.slept == []  # did not wait for the reset (it waited ~30 s per round before)
    assert server.requests == []  # nor probed
    assert error.retryable
    assert "critical call refused at once" in error.message
    assert "'primary' (next probe in" in error.message
    assert "critical calls do not wait for a circuit to close" in (error.hint or "")
    assert gateway.metrics.breaker_rejections["primary"] == 1


def test_a_critical_call_retries_a_failing_provider_but_never_waits_for_an_open_circuit():
    vt = VirtualTime()
    with (
        OpenAITestServer(default=completion("never")) as primary,
        OpenAITestServer(default=server_error(503)) as secondary,
    ):
        config = gateway_config(
            provider("primary", primary.base_url),
            provider("secondary", secondary.base_url),
            breaker={"threshold": 5, "reset_after": 30},
            retry={"max_attempts": 3, "base_delay": 0.5, "max_delay": 20},
        )
        gateway = Gateway(config, clock=vt.clock, sleep=vt.sleep)

        async def main():
            await _open_circuit(gateway, "primary", failures=5)
            try:
                with call_context(priority="critical"), pytest.raises(ModelError) as info:
                    await gateway.complete(HI, [])
                return info.value
            finally:
                await gateway.aclose()

        error = asyncio.run(main())
    assert primary.requests == []
    assert len(secondary.requests) == 3  # every round tried the provider that is not shut
    assert len(vt.slept) == 2
    assert all(s <= 2.0 for s in vt.slept)  # backoff only (0.5 * 2**round), not the 30 s reset
    assert "primary: circuit open" in error.message
    assert "secondary: model server answered 503" in error.message


def test_a_normal_call_on_an_open_circuit_waits_for_the_probe():
    vt = VirtualTime()
    with OpenAITestServer(default=completion("back")) as server:
        config = gateway_config(
            provider("primary", server.base_url), breaker={"threshold": 1, "reset_after": 30}
        )
        gateway = Gateway(config, clock=vt.clock, sleep=vt.sleep)
        # the breaker keeps its own (wall) clock: a sleep to the reset makes the probe due
        vt.on_sleep = lambda seconds: gateway.breakers.expire("model:primary")

        async def main():
            await _open_circuit(gateway, "primary")
            try:
                return await gateway.complete(HI, [])
            finally:
                await gateway.aclose()

        response = asyncio.run(main())
    assert response.content == "back"
    assert len(server.requests) == 1  # the probe
    assert len(vt.slept) == 1
    assert vt.slept[0] > 25.0  # the circuit's reset, not a backoff


class _ProbeInFlight(Breakers):
    """Circuits that look closed when asked, but refuse at the guard: another call (here, another
    worker) is the probe - the race between ``astate`` and ``guard``."""

    async def astate(self, key):
        return BreakerState(key, CLOSED, 0, 0.0)

    @asynccontextmanager
    async def guard(self, key, **_):
        raise CircuitOpen(key, 0.0)
        yield


def test_a_critical_call_refused_at_the_guard_fails_fast_too():
    vt = VirtualTime()
    with OpenAITestServer(default=completion("never")) as server:
        config = gateway_config(provider("primary", server.base_url))
        gateway = Gateway(config, breakers=_ProbeInFlight(), clock=vt.clock, sleep=vt.sleep)

        async def main():
            try:
                with call_context(priority="critical"), pytest.raises(ProviderUnavailable) as info:
                    await gateway.complete(HI, [])
                return info.value
            finally:
                await gateway.aclose()

        error = asyncio.run(main())
    assert vt.slept == []
    assert server.requests == []
    assert "'primary' (next probe in 0.0s)" in error.message
    assert gateway.metrics.breaker_rejections["primary"] == 1
    assert gateway.metrics.failures["primary"] == 0  # refused, not a failure of the provider


def test_a_normal_call_whose_circuit_opens_past_its_deadline_fails_at_once_saying_so():
    vt = VirtualTime()
    with OpenAITestServer(default=completion("never")) as server:
        config = gateway_config(
            provider("primary", server.base_url), breaker={"threshold": 1, "reset_after": 30}
        )
        gateway = Gateway(config, clock=vt.clock, sleep=vt.sleep)

        async def main():
            await _open_circuit(gateway, "primary")
            try:
                with call_context(timeout=10), pytest.raises(ProviderUnavailable) as info:
                    await gateway.complete(HI, [])
                return info.value
            finally:
                await gateway.aclose()

        error = asyncio.run(main())
    assert vt.slept == []
    assert server.requests == []
    assert "circuit of provider 'primary' is open for another" in error.message
    assert "left before its deadline" in error.message
