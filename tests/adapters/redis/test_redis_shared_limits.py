"""Two worker processes sharing a Redis bucket never together exceed the provider's limit; the
same two processes with in-process buckets do (which is why the shared bucket exists)."""

import subprocess
import sys
import textwrap

import pytest

from autonomic.testing.openai_server import OpenAITestServer, completion, max_in_window

RATE = 20.0  # per second
CALLS = 40  # per process
JITTER = 6  # requests: HTTP arrival jitter of two processes at the one test server

WORKER = textwrap.dedent(
    """
    import asyncio, sys
    from autonomic.core.messages import Message, Role
    from autonomic.adapters.redis.buckets import RedisBuckets
    from autonomic.gateway import Gateway, LocalBuckets, call_context
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
    print(f"done {gateway.metrics.max_late_s}", flush=True)
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
    late = 0.0
    for p in procs:
        out, _ = p.communicate(timeout=60)
        assert p.returncode == 0
        word, value = out.split()
        assert word == "done"
        late = max(late, float(value))
    return late


@pytest.mark.parametrize("mode", ["redis", "local"])
def test_two_processes_share_one_limit_through_redis(mode, redis_server, redis_prefix):
    with OpenAITestServer(default=completion("ok"), keep_alive=True) as server:
        late = _two_workers(server.base_url, mode, redis_server, redis_prefix)
    times = [a.at for a in server.arrivals]
    assert len(times) == 2 * CALLS
    # the limit over a window plus one bucket (plus what an event-loop stall of ``late`` seconds
    # pushes together on a starved machine, and arrival jitter)
    peaks = {w: max_in_window(times, w) for w in (1.0, 2.0)}
    allowed = {w: RATE * w + RATE + RATE * late + JITTER for w in (1.0, 2.0)}
    if mode == "redis":
        assert all(peaks[w] <= allowed[w] for w in peaks), (peaks, allowed)
    else:  # each process spends a whole limit of its own: 80 calls inside two seconds
        assert peaks[2.0] > 2 * RATE + RATE + JITTER, peaks
