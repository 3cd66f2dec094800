"""The model gateway: one ``Model`` that rate-limits, retries, routes, falls back and counts.

``Gateway`` implements the model port (``name``, ``complete(messages, tools)``), so the engine uses
it where it uses any model. For each call it:

1. picks the providers the call's priority class may use, in configuration order (a self-hosted
   fallback usually does not serve ``critical`` calls);
2. for each in turn: skips it if its circuit is open (circuits are shared by every worker through
   ``redis_url`` when it is set, see ``RedisBreakers``); reserves one request and the estimated tokens
   in its buckets, waiting for capacity up to what the call can afford on that provider (the
   class's ``fallback_after`` when another provider follows, else the call's deadline) - a refused
   reservation moves the call to the next provider without spending this one's capacity;
3. calls it inside its breaker and its bounded connection pool; a retryable failure (429, 5xx,
   timeout, connection error, malformed output) moves on to the next provider, a non-retryable one
   (a 400) is raised at once;
4. when every provider failed in a round, sleeps with exponential backoff and full jitter (at least
   the ``Retry-After`` a server asked for) and tries again, until ``retry.max_attempts`` rounds or
   the deadline;
5. on success, corrects the token reservation by the usage the server reported (or counted), prices
   the call, feeds the ledger and metrics, and returns the response with ``provider``,
   ``cost_usd``, ``attempts`` and ``waited_s`` filled in.

Per-call priority, deadline, run and tenant come from ``call_context`` (``autonomic.ports.model``).
It has the port's optional abilities (``ManagedModel``): the engine checks budgets with its exact
``estimate_call`` before each call, lets it ``compress`` a conversation near the window, and does
not retry what it already retried.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import json
import logging
import os
import random
import time
from collections.abc import Awaitable, Callable, Sequence

from autonomic.core.entries import ModelCall, Summary
from autonomic.core.messages import Message, ModelResponse, ToolSpec, Usage
from autonomic.errors import (
    CircuitOpen,
    ConfigError,
    ModelError,
    ProviderUnavailable,
    RateLimited,
)
from autonomic.gateway.compression import Compressor
from autonomic.gateway.config import GatewayConfig, RetryPolicy
from autonomic.gateway.cost import CostLedger, Estimate
from autonomic.gateway.metrics import GatewayMetrics
from autonomic.gateway.provider import Priority, Provider, ProviderKind
from autonomic.gateway.ratelimit import Buckets, LocalBuckets
from autonomic.gateway.tokens import TokenCounter
from autonomic.governance.breakers import Breakers, BreakerStore, counts_as_failure
from autonomic.ports.model import CallEstimate, Model, current_call

log = logging.getLogger("autonomic.gateway")


def backoff_delay(
    round_: int, policy: RetryPolicy, retry_after: float | None, rng: random.Random
) -> float:
    """Full jitter: ``uniform(0, min(max_delay, base * 2**(round-1)))``, never below
    ``retry_after`` (the server's own ``Retry-After``)."""
    ceiling = min(policy.max_delay, policy.base_delay * (2 ** max(0, round_ - 1)))
    delay = rng.uniform(0.0, ceiling)
    if retry_after is not None:
        delay = max(delay, retry_after)
    return delay


def provider_failure(exc: BaseException) -> bool:
    """What counts against a provider's circuit: retryable failures, except a 429 - "slow down"
    says the provider is healthy and busy, which backoff, ``Retry-After`` and fallback handle."""
    if isinstance(exc, ModelError) and exc.status == 429:
        return False
    return counts_as_failure(exc)


def check_tool_calls(response: ModelResponse, tools: Sequence[ToolSpec]) -> None:
    """Raise a retryable ``ModelError`` for tool calls no retry-free caller could execute: unknown
    tool names and arguments that are not a JSON object. Model output is untrusted input."""
    offered = {t.name for t in tools}
    for call in response.tool_calls:
        if tools and call.name not in offered:
            raise ModelError(
                f"the model called unknown tool {call.name!r} (offered: {', '.join(sorted(offered))})",
                hint="the model is asked again; if it persists, check the tool names in the prompt",
                retryable=True,
            )
        try:
            parsed = json.loads(call.arguments or "{}")
        except json.JSONDecodeError as exc:
            raise ModelError(
                f"the model's arguments for {call.name!r} are not valid JSON ({exc.msg} at "
                f"position {exc.pos})",
                hint="the model is asked again; a smaller or better model may be needed",
                retryable=True,
            ) from None
        if not isinstance(parsed, dict):
            raise ModelError(
                f"the model's arguments for {call.name!r} are a JSON {type(parsed).__name__}, "
                "not an object",
                retryable=True,
            )


class Gateway:
    """A ``Model`` over the configured providers. Build with ``Gateway(config)``; close with
    ``await gateway.aclose()``."""

    retries_itself = True
    """It retries, backs off and falls back itself: the engine must not retry its failures."""

    def __init__(
        self,
        config: GatewayConfig,
        *,
        buckets: Buckets | None = None,
        breakers: BreakerStore | None = None,
        metrics: GatewayMetrics | None = None,
        ledger: CostLedger | None = None,
        models: dict[str, Model] | None = None,
        rng: random.Random | None = None,
        resolve: Callable[[str], Model] | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        """``models`` overrides the model built for a provider (by name), e.g. a fake in a test;
        ``resolve`` builds a provider of kind ``model`` from its spec (the composition root passes
        its ``build_model``). ``clock`` (monotonic seconds) and ``sleep`` time the call's deadline,
        backoff and the waits servers ask for: a test passes fakes to see a 60-second
        ``Retry-After`` honoured without waiting a minute (the rate-limit buckets and circuits keep
        their own clocks)."""
        self.config = config
        self._resolve = resolve
        self.metrics = metrics or GatewayMetrics()
        self.buckets: Buckets = buckets or self._default_buckets()
        self.breakers: BreakerStore = breakers or self._default_breakers()
        self.ledger = ledger or CostLedger()
        self._models: dict[str, Model] = dict(models or {})
        self._counters: dict[str, TokenCounter] = {}
        self._pools: dict[str, asyncio.Semaphore] = {}
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
        self._clock = clock
        self._sleep = sleep
        self._name = f"gateway:{config.providers[0].name}"
        self._only: list[Provider] | None = None
        self._owner = True
        """Set on a view made by ``restricted``: the only providers it routes to."""
        for p in config.providers:
            # build clients and load encodings now, not in the first call: both block the event
            # loop for a fraction of a second, and calls that reserved capacity before such a
            # stall would all be sent together after it
            self.counter(p)
            self._model(p)

    @property
    def name(self) -> str:
        return self._name

    def _default_buckets(self) -> Buckets:
        """Shared through Redis when ``redis_url`` is set; in this process's memory otherwise."""
        if not self.config.redis_url:
            return LocalBuckets()
        from autonomic.adapters.redis.buckets import RedisBuckets

        return RedisBuckets(self.config.redis_url, prefix=f"{self.config.redis_prefix}:ratelimit")

    def _default_breakers(self) -> BreakerStore:
        """Shared through Redis when the buckets are; in this process's memory otherwise (and
        while that Redis is unreachable)."""
        policy = self.config.breaker
        local = Breakers(
            threshold=policy.threshold, reset_after=policy.reset_after, counts=provider_failure
        )
        if self.config.redis_url is None:
            return local
        from autonomic.adapters.redis.breakers import RedisBreakers

        def fell_back(_key: str) -> None:
            self.metrics.breaker_fallbacks += 1

        return RedisBreakers(
            self.config.redis_url,
            fallback=local,
            threshold=policy.threshold,
            reset_after=policy.reset_after,
            counts=provider_failure,
            prefix=f"{self.config.redis_prefix}:breaker",
            # a probe is one provider call: its lock outlives the slowest provider's timeout
            probe_timeout=max(p.timeout for p in self.config.providers) + 5.0,
            on_fallback=fell_back,
        )

    # -- what the engine asks before a call ---------------------------------------------------

    def providers_for(self, priority: Priority | str) -> list[Provider]:
        """Providers a call of ``priority`` may use, in the order they are tried."""
        prio = Priority(priority)
        if self._only is not None:
            # a view serves every priority with its own providers: naming them is the decision
            return [p for p in self._only if prio in p.serves] or list(self._only)
        return [p for p in self.config.providers if prio in p.serves]

    def counter(self, provider: Provider) -> TokenCounter:
        """The token counter for ``provider``'s model."""
        counter = self._counters.get(provider.name)
        if counter is None:
            counter = TokenCounter(provider.model, encoding=provider.encoding)
            self._counters[provider.name] = counter
        return counter

    def estimate(
        self,
        messages: Sequence[Message],
        tools: Sequence[ToolSpec],
        priority: Priority | str | None = None,
    ) -> Estimate:
        """Prompt tokens and the most this call can cost, for the pre-call budget check."""
        prio = Priority(priority) if priority is not None else current_call().priority
        worst_tokens = 0
        worst_cost = 0.0
        for p in self.providers_for(prio):
            tokens = self.counter(p).messages(messages, tools)
            worst_tokens = max(worst_tokens, tokens)
            worst_cost = max(worst_cost, p.pricing.cost(tokens, p.output_estimate))
        return Estimate(worst_tokens, worst_cost)

    def estimate_call(self, messages: Sequence[Message], tools: Sequence[ToolSpec]) -> CallEstimate:
        """The most the next call (in the current call context) can consume: exact prompt tokens
        plus the largest output cap of the providers it may use, and the most it can cost on any of
        them - what the engine checks budgets with before the call."""
        found = self.estimate(messages, tools)
        providers = self.providers_for(current_call().priority)
        output = max((p.output_estimate for p in providers), default=0)
        return CallEstimate(tokens=found.input_tokens + output, cost=found.max_cost_usd)

    async def compress(
        self,
        messages: Sequence[Message],
        tools: Sequence[ToolSpec],
        *,
        threshold: float = 0.75,
        keep_recent: int = 6,
    ) -> Summary | None:
        """The journal's ``summary`` entry if the next prompt passes ``threshold`` of the window:
        the compressed messages themselves and the summarisation calls that made them, so a replay
        folds exactly this prompt - no tokenizer, no second summarisation call.

        The window and counter are those of the smallest-window provider the call may land on, so
        the prompt fits wherever the call is routed."""
        providers = self.providers_for(current_call().priority)
        if not providers:
            return None
        smallest = min(providers, key=lambda p: p.context_window)
        metered = _Metered(self)
        compressor = Compressor(
            metered,
            self.counter(smallest),
            window=smallest.context_window,
            threshold=threshold,
            keep_recent=keep_recent,
        )
        done = await compressor.maybe_compress(messages, tools)
        if done is None:
            return None
        return Summary(
            messages=tuple(done.messages),
            calls=tuple(metered.calls),
            window=smallest.context_window,
            replaced=done.replaced,
            tokens_before=done.tokens_before,
            tokens_after=done.tokens_after,
            fallback=done.fallback,
            detail={"state": done.state, "keep_recent": done.keep_recent, "target": done.target},
        )

    def context_window(self, priority: Priority | str | None = None) -> int:
        """The smallest window among the providers a call may land on: prompts must fit it."""
        prio = Priority(priority) if priority is not None else current_call().priority
        return min(p.context_window for p in self.providers_for(prio))

    async def snapshot(self) -> dict[str, object]:
        """Metrics, circuit states and spend per provider, JSON-ready (for ``show`` and metrics).

        A coroutine because the circuits may live in Redis: then they are the fleet's, while
        metrics and spend are this process's."""
        breakers = await self.breakers.asnapshot()
        return {
            "metrics": self.metrics.snapshot(),
            "breakers": {k: v.to_dict() for k, v in breakers.items()},
            "spend": {name: s.to_dict() for name, s in sorted(self.ledger.providers.items())},
        }

    # -- the model port -----------------------------------------------------------------------

    async def complete(
        self, messages: Sequence[Message], tools: Sequence[ToolSpec]
    ) -> ModelResponse:
        ctx = current_call()
        return await self._complete(messages, tools, self.providers_for(ctx.priority))

    def restricted(self, provider_names: Sequence[str], *, name: str | None = None) -> Gateway:
        """A view that only routes to ``provider_names`` (in that order): the model split, pinning.

        The view is a ``Gateway`` itself, so the engine counts, prices and compresses its calls
        exactly; it shares this gateway's buckets, breakers, pools, metrics and ledger (a planning
        burst through a view and refinement calls through another draw on the same limits), and
        closing it closes nothing: the gateway it came from owns the connections."""
        chosen = [self.config.provider(n) for n in provider_names]
        if not chosen:
            raise ConfigError("a gateway view needs at least one provider name")
        view = copy.copy(self)
        view._only = chosen
        view._name = name or f"gateway:{'+'.join(provider_names)}"
        view._owner = False
        return view

    async def _complete(
        self, messages: Sequence[Message], tools: Sequence[ToolSpec], eligible: list[Provider]
    ) -> ModelResponse:
        ctx = current_call()
        if not eligible:
            raise ProviderUnavailable(
                f"no provider serves {ctx.priority.value!r} calls",
                hint=f"add {ctx.priority.value} to a provider's serves list in {self.config.source}",
            )
        deadline = self._clock() + ctx.remaining(self.config.default_deadline)
        fallback_after = self.config.fallback_after.get(ctx.priority)
        critical = ctx.priority is Priority.CRITICAL
        attempts = 0
        waited = 0.0
        reasons: dict[str, str] = {}
        """Each provider's latest failure (a provider skipped in a round keeps its earlier one)."""
        ready_at: dict[str, float] = {}
        """Per provider, the clock time before which calling it again is pointless: what its
        server asked for (capped), or its circuit's next probe."""
        hinted: dict[str, float] = {}
        """Per provider, the wait its server asked for, before the cap (for the give-up message)."""
        last: Exception | None = None
        round_ = 0
        while True:
            round_ += 1
            refused = 0  # reservations refused by the buckets in this round
            shut: dict[str, float] = {}  # open circuits a critical call does not wait for
            for index, provider in enumerate(eligible):
                name = provider.name
                if ready_at.get(name, 0.0) > self._clock():
                    continue  # its server asked for a wait, or its circuit is open: reason kept
                key = f"model:{name}"
                circuit = await self.breakers.astate(key)
                if circuit.refusing:
                    last = self._circuit_refused(name, circuit.retry_in, reasons)
                    self._shut_or_wait(name, circuit.retry_in, critical, shut, ready_at)
                    hinted.pop(name, None)
                    continue
                counter = self.counter(provider)
                need = counter.messages(messages, tools) + provider.output_estimate
                remaining = max(0.0, deadline - self._clock())
                is_last = index == len(eligible) - 1
                max_wait = (
                    remaining
                    if is_last or fallback_after is None
                    else min(fallback_after, remaining)
                )
                asked = time.monotonic()  # the buckets' clock
                reservation = await self.buckets.reserve(name, provider.limits, need, max_wait)
                if not reservation.granted:
                    self.metrics.refused[name] += 1
                    refused += 1
                    reasons[name] = f"rate limited (capacity in {reservation.wait:.2f}s)"
                    last = RateLimited(
                        f"provider {name!r} has no capacity for {reservation.wait:.2f}s",
                        hint="raise the provider's limits, add a fallback, or give the call more time",
                    )
                    continue
                due = asked + reservation.wait  # the turn is counted from when we asked
                if reservation.wait > 0:
                    waited += await self._wait(name, reservation.wait)
                attempts += 1
                try:
                    response = await self._call(provider, messages, tools, deadline, due)
                    if self.config.validate_tool_calls:
                        check_tool_calls(response, tools)
                except CircuitOpen as exc:  # opened meanwhile, or another call is its probe
                    attempts -= 1  # refused before sending: not an attempt
                    await self._settle(provider, -need)
                    last = self._circuit_refused(name, exc.retry_after, reasons)
                    self._shut_or_wait(name, exc.retry_after, critical, shut, ready_at)
                    hinted.pop(name, None)
                    continue
                except ModelError as exc:
                    self.metrics.failures[name] += 1
                    await self._settle(provider, -need)
                    reasons[name] = exc.message
                    log.info(
                        "model call to %s failed (%s, retryable=%s)",
                        name,
                        exc.message,
                        exc.retryable,
                    )
                    if not exc.retryable:
                        raise ModelError(
                            f"provider {name!r}: {exc.message}",
                            hint=exc.hint,
                            retryable=False,
                            status=exc.status,
                        ) from None
                    last = exc
                    if exc.retry_after is not None:
                        hinted[name] = exc.retry_after
                        wait = min(exc.retry_after, self.config.retry.max_server_wait)
                        ready_at[name] = self._clock() + wait
                    else:
                        hinted.pop(name, None)
                    continue
                return await self._account(
                    provider, response, messages, tools, need, attempts, waited, index > 0
                )
            # every provider failed, was refused, is open or asked for a wait in this round
            if isinstance(last, RateLimited) and refused == len(eligible):
                raise last
            now = self._clock()
            waitable = {p.name: ready_at.get(p.name, now) for p in eligible if p.name not in shut}
            if not waitable:  # a critical call, and every provider's circuit is open
                raise self._unavailable_now(shut)
            if round_ >= self.config.retry.max_attempts:
                raise self._final(last, reasons, attempts)
            soonest = min(waitable, key=waitable.__getitem__)
            until_ready = max(0.0, waitable[soonest] - now)
            delay = backoff_delay(round_, self.config.retry, until_ready or None, self._rng)
            if now + delay > deadline:
                if until_ready > 0 and until_ready >= delay:
                    left = max(0.0, deadline - now)
                    raise self._wait_too_long(soonest, until_ready, hinted, reasons, left)
                raise self._final(last, reasons, attempts)
            for p in eligible:
                self.metrics.retries[p.name] += 1
            waited += await self._wait(eligible[0].name, delay, backoff=True)
            if delay >= until_ready:
                ready_at.pop(soonest, None)  # waited for: a sleep that wakes a hair early must
                # not make the next round skip it

    def _circuit_refused(self, name: str, retry_in: float, reasons: dict[str, str]) -> CircuitOpen:
        """Count a call refused by ``name``'s open circuit and say so among the reasons."""
        self.metrics.breaker_rejections[name] += 1
        reasons[name] = "circuit open"
        return CircuitOpen(f"model:{name}", retry_in)

    def _shut_or_wait(
        self,
        name: str,
        retry_in: float,
        critical: bool,
        shut: dict[str, float],
        ready_at: dict[str, float],
    ) -> None:
        """A critical call never waits for a circuit to close (docs/model-gateway.md): an open
        circuit means the provider is broken, not busy, and the probe after ``reset_after`` is more
        likely to fail than not - the caller learns now, with a retryable error, instead of after
        the reset. Other calls wait for the probe, within their deadline and rounds."""
        if critical:
            shut[name] = retry_in
        else:
            ready_at[name] = self._clock() + retry_in

    def _unavailable_now(self, shut: dict[str, float]) -> ProviderUnavailable:
        """A critical call's error when every provider it may use has its circuit open."""
        circuits = ", ".join(
            f"{name!r} (next probe in {retry_in:.1f}s)" for name, retry_in in shut.items()
        )
        return ProviderUnavailable(
            f"critical call refused at once: the circuit of every provider it may use is open "
            f"after repeated failures: {circuits}",
            hint="critical calls do not wait for a circuit to close; retry after the probe, "
            "check the provider, or let another provider serve critical calls",
        )

    def _wait_too_long(
        self,
        soonest: str,
        until_ready: float,
        hinted: dict[str, float],
        reasons: dict[str, str],
        left: float,
    ) -> ModelError:
        """The error when the soonest any provider can be tried again is past the deadline: it names
        the wait and who asked for it."""
        if soonest in hinted:
            asked = hinted[soonest]
            capped = (
                f", cut to {self.config.retry.max_server_wait:g}s by retry.max_server_wait"
                if asked > self.config.retry.max_server_wait
                else ""
            )
            error: ModelError = RateLimited(
                f"provider {soonest!r} asked to wait {asked:.1f}s{capped}, more than the "
                f"{left:.1f}s the call has left before its deadline "
                f"({reasons.get(soonest, 'no answer')})",
                hint="give the call a longer deadline (the run's budget.wall_seconds), raise the "
                "provider's quota, or add a fallback provider",
            )
        else:
            error = ProviderUnavailable(
                f"the circuit of provider {soonest!r} is open for another {until_ready:.1f}s, and "
                f"the call has {left:.1f}s left before its deadline",
                hint="the circuit closes again after a successful probe; check the provider",
            )
        error.retry_after = until_ready
        return error

    async def _settle(self, provider: Provider, tokens_delta: int) -> None:
        """Correct the token bucket; a failure here must not lose an answer already received."""
        try:
            await self.buckets.settle(provider.name, provider.limits, tokens_delta)
        except ModelError as exc:
            log.warning("could not settle tokens for %s: %s", provider.name, exc.message)

    async def _wait(self, provider: str, seconds: float, *, backoff: bool = False) -> float:
        self.metrics.waiting += 1
        self.metrics.max_waiting = max(self.metrics.max_waiting, self.metrics.waiting)
        if not backoff:
            self.metrics.waits[provider] += 1
            self.metrics.waited_seconds[provider] += seconds
        log.log(
            logging.INFO if seconds >= 1.0 else logging.DEBUG,
            "model call waits %.3fs for %s (%s)",
            seconds,
            provider,
            "backoff" if backoff else "rate limit",
        )
        try:
            await self._sleep(seconds)
        finally:
            self.metrics.waiting -= 1
        return seconds

    async def _call(
        self,
        provider: Provider,
        messages: Sequence[Message],
        tools: Sequence[ToolSpec],
        deadline: float,
        due: float,
    ) -> ModelResponse:
        model = self._model(provider)
        pool = self._pools.get(provider.name)
        if pool is None:
            pool = self._pools[provider.name] = asyncio.Semaphore(provider.limits.max_concurrency)
        try:
            async with pool, self.breakers.guard(f"model:{provider.name}"):
                late = time.monotonic() - due  # sent after its reserved turn by this much
                if late > self.metrics.max_late_s:
                    self.metrics.max_late_s = late
                async with asyncio.timeout(max(0.001, deadline - self._clock())):
                    return await model.complete(messages, tools)
        except CircuitOpen:
            raise  # refused before sending: the round decides whether to wait for the circuit
        except TimeoutError:
            raise ModelError(
                f"provider {provider.name!r} did not answer before the call's deadline",
                retryable=True,
            ) from None
        except ModelError:
            raise
        except Exception as exc:  # an adapter bug or an unparseable answer: never crash the worker
            raise ModelError(
                f"provider {provider.name!r} failed: {type(exc).__name__}: {str(exc)[:200]}",
                retryable=True,
            ) from None

    async def _account(
        self,
        provider: Provider,
        response: ModelResponse,
        messages: Sequence[Message],
        tools: Sequence[ToolSpec],
        reserved: int,
        attempts: int,
        waited: float,
        fell_back: bool,
    ) -> ModelResponse:
        usage = response.usage
        if usage.input_tokens == 0 and usage.output_tokens == 0:
            counter = self.counter(provider)
            usage = Usage(counter.messages(messages, tools), counter.response(response))
        await self._settle(provider, usage.input_tokens + usage.output_tokens - reserved)
        cost = provider.pricing.cost(usage.input_tokens, usage.output_tokens)
        ctx = current_call()
        self.ledger.record(
            provider=provider.name, usage=usage, cost_usd=cost, run_id=ctx.run_id, tenant=ctx.tenant
        )
        m = self.metrics
        m.calls[provider.name] += 1
        m.input_tokens[provider.name] += usage.input_tokens
        m.output_tokens[provider.name] += usage.output_tokens
        m.cost_usd[provider.name] += cost
        if fell_back:
            m.fallbacks[provider.name] += 1
        return dataclasses.replace(
            response,
            usage=usage,
            provider=provider.name,
            cost_usd=cost,
            attempts=attempts,
            waited_s=round(waited, 6),
        )

    def _final(self, last: Exception | None, reasons: dict[str, str], attempts: int) -> ModelError:
        summary = "; ".join(f"{name}: {why}" for name, why in reasons.items()) or "no attempt"
        if isinstance(last, RateLimited):
            return RateLimited(
                f"no provider had capacity before the deadline ({summary})", hint=last.hint
            )
        if all(why == "circuit open" for why in reasons.values()):
            return ProviderUnavailable(
                f"every provider is unavailable ({summary})",
                hint="the circuits close again after a successful probe; check the providers",
            )
        retry_after = last.retry_after if isinstance(last, ModelError) else None
        return ModelError(
            f"model call failed after {attempts} attempts ({summary})",
            hint="the providers kept failing; see their status or raise retry.max_attempts",
            retryable=True,
            retry_after=retry_after,
        )

    def _model(self, provider: Provider) -> Model:
        model = self._models.get(provider.name)
        if model is None:
            model = self._models[provider.name] = build_provider_model(provider, self._resolve)
        return model

    async def aclose(self) -> None:
        """Close connection pools and the Redis connections (a view's belong to its gateway)."""
        if not self._owner:
            return
        for model in self._models.values():
            close = getattr(model, "aclose", None)
            if close is not None:
                await close()
        await self.buckets.aclose()
        await self.breakers.aclose()


def build_provider_model(
    provider: Provider, resolve: Callable[[str], Model] | None = None
) -> Model:
    """The adapter that talks to ``provider``: one pooled client per provider."""
    if provider.kind is ProviderKind.OPENAI:
        from autonomic.adapters.model.openai_compat import OpenAICompatModel

        api_key = None
        if provider.api_key_env:
            api_key = os.environ.get(provider.api_key_env)
            if not api_key:
                raise ConfigError(
                    f"provider {provider.name!r}: environment variable {provider.api_key_env} "
                    "is not set",
                    hint=f"export {provider.api_key_env}=... (the key for {provider.base_url or 'OpenAI'})",
                )
        return OpenAICompatModel(
            provider.model,
            base_url=provider.base_url,
            api_key=api_key,
            timeout=provider.timeout,
            max_tokens=provider.max_output_tokens,
            max_connections=provider.limits.max_concurrency,
        )
    if provider.kind is ProviderKind.SCRIPTED:
        from autonomic.adapters.model.scripted import ScriptedModel

        assert provider.script is not None
        return ScriptedModel.from_file(provider.script)
    assert provider.script is not None
    if resolve is None:
        raise ConfigError(
            f"provider {provider.name!r} is a model spec ({provider.script}) and this gateway "
            "was built without a resolver for specs",
            hint="build the gateway with autonomic.build_model (gateway: specs do), or pass "
            "Gateway(config, resolve=build_model)",
        )
    return resolve(provider.script)


class _Metered:
    """A model that remembers the calls made through it (the summariser's, to journal them)."""

    def __init__(self, model: Model) -> None:
        self._model = model
        self.calls: list[ModelCall] = []

    @property
    def name(self) -> str:
        return self._model.name

    async def complete(
        self, messages: Sequence[Message], tools: Sequence[ToolSpec]
    ) -> ModelResponse:
        response = await self._model.complete(messages, tools)
        self.calls.append(ModelCall.of_response(response))
        return response
