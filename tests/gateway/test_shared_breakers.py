"""Worker processes share the gateway's circuits through Redis: failures seen by one worker open a
provider's circuit, and another worker is refused without ever calling the provider. The control
runs the same workers with in-process circuits, and there the second worker calls the provider
again (which is why the shared circuits exist). A Redis outage falls back to in-process circuits
instead of failing calls. ``RedisBreakers`` itself is tested in ``tests/adapters/redis``."""

import asyncio
import json
import logging
import subprocess
import sys
import textwrap

import pytest

from autonomic.core.messages import Message, Role
from autonomic.errors import ProviderUnavailable
from autonomic.gateway import Gateway, call_context
from autonomic.testing.gateway import gateway_config, provider
from autonomic.testing.openai_server import OpenAITestServer, completion, server_error

HI = [Message(Role.USER, "hi")]

# One worker: ``calls`` model calls through a gateway, then what it saw as JSON on one line.
WORKER = textwrap.dedent(
    """
    import asyncio, json, sys
    from autonomic.core.messages import Message, Role
    from autonomic.errors import ModelError
    from autonomic.gateway import Gateway, call_context
    from autonomic.testing.gateway import gateway_config, provider

    base_url, redis_url, prefix, calls = sys.argv[1:]
    shared = {"redis_url": redis_url, "redis_prefix": prefix} if redis_url else {}
    config = gateway_config(
        provider("main", base_url),
        breaker={"threshold": 2, "reset_after": 60},
        retry={"max_attempts": 1, "base_delay": 0.01, "max_delay": 0.01},
        **shared,
    )

    async def main():
        gateway = Gateway(config)
        outcomes = []
        try:
            for i in range(int(calls)):
                with call_context(priority="critical", timeout=10):
                    try:
                        await gateway.complete([Message(Role.USER, str(i))], [])
                        outcomes.append("ok")
                    except ModelError as exc:
                        outcomes.append(type(exc).__name__)
            snap = await gateway.snapshot()
        finally:
            await gateway.aclose()
        print(json.dumps({
            "outcomes": outcomes,
            "circuit": snap["breakers"]["model:main"]["state"],
            "rejections": gateway.metrics.breaker_rejections["main"],
            "fallbacks": gateway.metrics.breaker_fallbacks,
        }))

    asyncio.run(main())
    """
)


def _worker(base_url, redis_url, prefix, calls):
    done = subprocess.run(
        [sys.executable, "-c", WORKER, base_url, redis_url, prefix, str(calls)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("mode", [pytest.param("redis", marks=pytest.mark.redis), "local"])
def test_a_circuit_opened_by_one_worker_process_refuses_calls_in_another(mode, request):
    redis_url = request.getfixturevalue("redis_server") if mode == "redis" else ""
    prefix = request.getfixturevalue("redis_prefix") if mode == "redis" else ""
    with OpenAITestServer(default=server_error()) as server:
        a = _worker(server.base_url, redis_url, prefix, 2)
        after_a = len(server.requests)
        b = _worker(server.base_url, redis_url, prefix, 1)
        after_b = len(server.requests)
    # A: two 500s, the second opens the circuit (threshold 2)
    assert a["outcomes"] == ["ModelError", "ModelError"]
    assert a["circuit"] == "open"
    assert after_a == 2
    assert a["fallbacks"] == b["fallbacks"] == 0
    if mode == "redis":
        # B never called the provider: the circuit A opened was already open for B
        assert b["outcomes"] == ["ProviderUnavailable"]
        assert b["rejections"] == 1
        assert b["circuit"] == "open"
        assert after_b == after_a
    else:  # in-process circuits: B has to find out by itself, at the provider's expense
        assert b["outcomes"] == ["ModelError"]
        assert b["rejections"] == 0
        assert b["circuit"] == "closed"
        assert after_b == after_a + 1


def test_an_unreachable_redis_does_not_take_model_calls_down(caplog):
    # no rate limits configured, so only the circuits need Redis here
    with OpenAITestServer([server_error(), completion("ok")]) as server:
        config = gateway_config(
            provider("main", server.base_url),
            redis_url="redis://127.0.0.1:1/0",
            breaker={"threshold": 1, "reset_after": 60},
            retry={"max_attempts": 1, "base_delay": 0.01, "max_delay": 0.01},
        )
        gateway = Gateway(config)

        async def main():
            try:
                with call_context(priority="critical", timeout=10):
                    first = None
                    try:
                        await gateway.complete(HI, [])
                    except Exception as exc:
                        first = type(exc).__name__
                    # the local circuit opened on the 500: the next call is refused locally
                    with pytest.raises(ProviderUnavailable):
                        await gateway.complete(HI, [])
                    await gateway.breakers.aexpire("model:main")
                    response = await gateway.complete(HI, [])  # the probe, served
                return first, response, await gateway.snapshot()
            finally:
                await gateway.aclose()

        with caplog.at_level(logging.WARNING):
            first, response, snap = asyncio.run(main())
    assert first == "ModelError"
    assert response.content == "ok"
    assert len(server.requests) == 2
    assert snap["breakers"]["model:main"]["state"] == "closed"
    assert gateway.metrics.breaker_fallbacks >= 5
    assert snap["metrics"]["breaker_fallbacks"] == gateway.metrics.breaker_fallbacks
    assert len([r for r in caplog.records if "Redis unreachable" in r.getMessage()]) == 1
