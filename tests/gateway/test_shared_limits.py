"""Two worker processes sharing a Redis bucket never together exceed the provider's limit; the
same two processes with in-process buckets do (which is why the shared bucket exists)."""

import subprocess
import sys
import textwrap

import pytest

from autonomic.testing.openai_server import OpenAITestServer, completion, max_in_window

RATE = 20.0  # per second
CALLS = 30  # per process
JITTER = 4

WORKER = textwrap.dedent(
    """
    import asyncio, sys
    from autonomic.core.messages import Message, Role
    from autonomic.gateway import Gateway, LocalBuckets, RedisBuckets, call_context
    from autonomic.testing.gateway import gateway_config, provider

    base_url, mode, redis_url, prefix, rate, calls = sys.argv[1:]
    config = gateway_config(
        provider("main", base_url, limits={"requests_per_minute": float(rate) * 60})
    )
    buckets = RedisBuckets(redis_url, prefix=prefix) if mode == "redis" else LocalBuckets()
    gateway = Gateway(config, buckets=buckets)

    async def one(i):
        with call_context(priority="critical", timeout=30):
            await gateway.complete([Message(Role.USER, f"{i}")], [])

    async def main():
        try:
            await asyncio.gather(*(one(i) for i in range(int(calls))))
        finally:
            await gateway.aclose()

    print("ready", flush=True)
    sys.stdin.readline()  # start together: the test says go to both at once
    asyncio.run(main())
    print("done", flush=True)
    """
)


def _two_workers(base_url, mode, redis_url, prefix):
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                WORKER,
                base_url,
                mode,
                redis_url,
                prefix,
                str(RATE),
                str(CALLS),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    for p in procs:
        assert p.stdout.readline().strip() == "ready"
    for p in procs:
        p.stdin.write("go\n")
        p.stdin.flush()
    for p in procs:
        out, _ = p.communicate(timeout=60)
        assert p.returncode == 0
        assert out.strip() == "done"


@pytest.mark.parametrize("mode", ["redis", "local"])
def test_two_processes_share_one_limit_through_redis(mode, redis_server, redis_prefix):
    with OpenAITestServer(default=completion("ok"), keep_alive=True) as server:
        _two_workers(server.base_url, mode, redis_server, redis_prefix)
    times = [a.at for a in server.arrivals]
    assert len(times) == 2 * CALLS
    peak = max_in_window(times, 1.0)
    if mode == "redis":
        assert peak <= RATE + RATE + JITTER  # the limit over the window plus one bucket
    else:
        assert peak > RATE + RATE + JITTER  # each process spends a whole limit of its own
