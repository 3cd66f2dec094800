"""The gateway over real HTTP against the test server: retries, Retry-After, classification,
malformed output, breakers, cost and the pre-call estimate."""

import asyncio
import time

import pytest

from autonomic.core.messages import Message, Role, ToolSpec
from autonomic.errors import ModelError, ProviderUnavailable, RateLimited
from autonomic.gateway import Gateway, call_context
from autonomic.testing.gateway import gateway_config, provider
from autonomic.testing.openai_server import (
    OpenAITestServer,
    Reply,
    completion,
    empty_choices,
    malformed_tool_call,
    rate_limited,
    raw,
    server_error,
    slow,
)

HI = [Message(Role.USER, "hi")]
ADD = [ToolSpec("add", "Add", {"type": "object", "properties": {"a": {"type": "integer"}}})]


def _run(config, messages=HI, tools=(), **ctx):
    gateway = Gateway(config)

    async def main():
        try:
            with call_context(**ctx):
                return await gateway.complete(messages, list(tools))
        finally:
            await gateway.aclose()

    return gateway, asyncio.run(main())


def test_a_429_is_retried_after_the_wait_the_server_asked_for():
    with OpenAITestServer([rate_limited(0.4), completion("ok")]) as server:
        started = time.monotonic()
        _gateway, response = _run(gateway_config(provider("main", server.base_url)))
        elapsed = time.monotonic() - started
    assert response.content == "ok"
    assert response.attempts == 2
    assert response.provider == "main"
    gap = server.arrivals[1].at - server.arrivals[0].at
    assert gap >= 0.4  # the backoff alone is at most 0.05 s in this config
    # the wait runs from when the 429 arrived, so the sleep itself is the hint less the moment
    # spent between the answer and the end of the round
    assert response.waited_s > 0.39
    assert elapsed >= 0.4


def test_retry_after_in_milliseconds_is_honoured_too():
    reply = rate_limited(0.3, header="retry-after-ms")
    with OpenAITestServer([reply, completion("ok")]) as server:
        _, response = _run(gateway_config(provider("main", server.base_url)))
    assert response.attempts == 2
    assert server.arrivals[1].at - server.arrivals[0].at >= 0.3


def test_5xx_are_retried_with_backoff_until_one_succeeds():
    with OpenAITestServer([server_error(500), server_error(503), completion("ok")]) as server:
        gateway, response = _run(gateway_config(provider("main", server.base_url)))
    assert response.attempts == 3
    assert gateway.metrics.failures["main"] == 2
    assert len(server.requests) == 3


def test_a_400_is_not_retried_and_says_why():
    bad = Reply(400, {"error": {"message": "messages must not be empty"}})
    with OpenAITestServer([bad, completion("never")]) as server, pytest.raises(ModelError) as info:
        _run(gateway_config(provider("main", server.base_url)))
    assert len(server.requests) == 1
    assert info.value.retryable is False
    assert info.value.status == 400
    assert "main" in info.value.message
    assert "messages must not be empty" in info.value.message


def test_retries_give_up_after_max_attempts_with_every_reason():
    config = gateway_config(
        provider("main", server_url := "http://127.0.0.1:1/v1"),
        retry={"max_attempts": 2, "base_delay": 0.01, "max_delay": 0.01},
    )
    with pytest.raises(ModelError) as info:
        _run(config)
    assert info.value.retryable
    assert "after 2 attempts" in info.value.message
    assert "cannot reach the model server" in info.value.message
    assert server_url.startswith("http")


def test_a_slow_provider_is_cut_off_at_the_call_deadline():
    with (
        OpenAITestServer([slow(completion("late"), 1.0)]) as server,
        pytest.raises(ModelError) as info,
    ):
        _run(gateway_config(provider("main", server.base_url)), timeout=0.3)
    assert info.value.retryable
    assert "deadline" in info.value.message


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        (malformed_tool_call("add", '{"a": 1,'), "not valid JSON"),
        (malformed_tool_call("rm_rf", "{}"), "unknown tool 'rm_rf'"),
        (malformed_tool_call("add", "[1, 2]"), "not an object"),
        (empty_choices(), "no choices"),
        (raw(b'{"id": "chatcmpl-1", "choices": [{"index'), "not a chat completion"),
        (Reply(200, {"unexpected": True}), "no choices"),
    ],
)
def test_malformed_output_is_retried_and_then_a_clear_error(reply, reason):
    with OpenAITestServer([reply, reply]) as server:
        config = gateway_config(
            provider("main", server.base_url),
            retry={"max_attempts": 2, "base_delay": 0.01, "max_delay": 0.01},
        )
        with pytest.raises(ModelError) as info:
            _run(config, tools=ADD)
    assert reason in info.value.message
    assert info.value.retryable
    assert len(server.requests) == 2


def test_malformed_output_then_a_good_answer_succeeds():
    with OpenAITestServer(
        [malformed_tool_call("add", "{oops"), completion(None, [("c1", "add", '{"a": 2}')])]
    ) as server:
        _, response = _run(gateway_config(provider("main", server.base_url)), tools=ADD)
    assert response.tool_calls[0].arguments == '{"a": 2}'
    assert response.attempts == 2


def test_the_breaker_opens_then_fails_fast_then_a_probe_closes_it():
    with OpenAITestServer([server_error(), server_error(), completion("back")]) as server:
        config = gateway_config(
            provider("main", server.base_url),
            breaker={"threshold": 2, "reset_after": 0.3},
            retry={"max_attempts": 1, "base_delay": 0.01, "max_delay": 0.01},
        )
        gateway = Gateway(config)

        async def main():
            outcomes = []
            for _ in range(3):
                try:
                    await gateway.complete(HI, [])
                except ModelError as exc:
                    outcomes.append(type(exc).__name__)
            state_open = (await gateway.breakers.astate("model:main")).state
            await asyncio.sleep(0.35)  # the breaker's reset time passing, not synchronisation
            response = await gateway.complete(HI, [])
            await gateway.aclose()
            return outcomes, state_open, response

        outcomes, state_open, response = asyncio.run(main())
    assert outcomes == ["ModelError", "ModelError", "ProviderUnavailable"]
    assert state_open == "open"
    assert len(server.requests) == 3  # the third call never reached the server
    assert response.content == "back"
    assert gateway.breakers.state("model:main").state == "closed"
    assert gateway.metrics.breaker_rejections["main"] == 1


def test_an_open_primary_sends_normal_calls_to_the_fallback_but_critical_ones_fail_fast():
    with (
        OpenAITestServer([server_error()]) as primary,
        OpenAITestServer(default=completion("from vllm")) as fallback,
    ):
        config = gateway_config(
            provider("primary", primary.base_url),
            provider("vllm", fallback.base_url, serves=["normal", "background"]),
            breaker={"threshold": 1, "reset_after": 30},
            retry={"max_attempts": 1, "base_delay": 0.01, "max_delay": 0.01},
        )
        gateway = Gateway(config)

        async def main():
            first = await gateway.complete(HI, [])  # primary 500 -> breaker opens -> vllm
            second = await gateway.complete(HI, [])  # primary skipped
            with call_context(priority="critical"), pytest.raises(ProviderUnavailable):
                await gateway.complete(HI, [])
            circuits = await gateway.breakers.asnapshot()
            await gateway.aclose()
            return first, second, circuits

        first, second, circuits = asyncio.run(main())
    assert (first.provider, second.provider) == ("vllm", "vllm")
    assert len(primary.requests) == 1
    assert circuits["model:primary"].state == "open"


def test_a_call_that_cannot_get_capacity_before_its_deadline_is_rate_limited():
    with OpenAITestServer(default=completion("ok")) as server:
        config = gateway_config(
            provider("main", server.base_url, limits={"requests_per_minute": 60})  # 1 per second
        )
        gateway = Gateway(config)

        async def main():
            with call_context(priority="critical", timeout=0.2):
                await gateway.complete(HI, [])  # takes the one request in the bucket
                with pytest.raises(RateLimited) as info:
                    await gateway.complete(HI, [])
            await gateway.aclose()
            return info.value

        error = asyncio.run(main())
    assert error.retryable
    assert len(server.requests) == 1
    assert gateway.metrics.refused["main"] == 1


def test_cost_is_priced_from_usage_and_accumulated_per_run_and_tenant():
    with OpenAITestServer(
        [completion("a", usage=(1000, 500)), completion("b", usage=(2000, 0))]
    ) as server:
        config = gateway_config(
            provider("main", server.base_url, price={"input": 5.0, "output": 15.0})
        )
        gateway = Gateway(config)

        async def main():
            with call_context(run_id="run_1", tenant="acme"):
                first = await gateway.complete(HI, [])
                second = await gateway.complete(HI, [])
            snap = await gateway.snapshot()
            await gateway.aclose()
            return first, second, snap

        first, second, snap = asyncio.run(main())
    assert first.cost_usd == pytest.approx(1000 * 5 / 1e6 + 500 * 15 / 1e6)
    assert second.cost_usd == pytest.approx(2000 * 5 / 1e6)
    spend = gateway.ledger.run("run_1")
    assert (spend.calls, spend.input_tokens, spend.output_tokens) == (2, 3000, 500)
    assert spend.cost_usd == pytest.approx(first.cost_usd + second.cost_usd)
    assert gateway.ledger.tenant("acme").cost_usd == pytest.approx(spend.cost_usd)
    assert gateway.ledger.tenant("other").calls == 0
    assert snap["spend"]["main"]["calls"] == 2
    assert snap["metrics"]["calls"] == {"main": 2}
    assert snap["breakers"]["model:main"]["state"] == "closed"


def test_usage_is_counted_when_the_server_reports_none():
    with OpenAITestServer([completion("hello there", usage=None)]) as server:
        _, response = _run(gateway_config(provider("main", server.base_url, price={"input": 1})))
    assert response.usage.input_tokens > 0
    assert response.usage.output_tokens == 2  # "hello there" in o200k_base
    assert response.cost_usd == pytest.approx(response.usage.input_tokens / 1e6)


def test_the_estimate_bounds_the_cost_of_the_next_call_on_any_provider_it_may_use():
    config = gateway_config(
        provider("cheap", "http://a/v1", max_output_tokens=100, price={"input": 1, "output": 2}),
        provider(
            "dear",
            "http://b/v1",
            max_output_tokens=1000,
            price={"input": 10, "output": 30},
            serves=["background"],
        ),
    )
    gateway = Gateway(config)
    tokens, max_cost = gateway.estimate(HI, [], priority="background")
    assert tokens == gateway.counter(config.providers[0]).messages(HI, [])
    assert max_cost == pytest.approx((tokens * 10 + 1000 * 30) / 1e6)
    _, critical_cost = gateway.estimate(HI, [], priority="critical")
    assert critical_cost == pytest.approx((tokens * 1 + 100 * 2) / 1e6)


def test_429s_do_not_open_the_circuit():
    with OpenAITestServer([rate_limited(0.01), rate_limited(0.01), completion("ok")]) as server:
        config = gateway_config(
            provider("main", server.base_url),
            breaker={"threshold": 1, "reset_after": 30},
            retry={"max_attempts": 3, "base_delay": 0.01, "max_delay": 0.01},
        )
        gateway, response = _run(config)
    assert response.content == "ok"
    assert gateway.breakers.state("model:main").state == "closed"
