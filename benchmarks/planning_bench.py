"""Planning benchmark: what a plan costs from the plan cache against a planning call, and how many
planning calls the cache saves on a stream of tasks of a few kinds.

Per plan, interleaved round by round so machine noise hits all alike:
  * ``local``   - ``LocalPlanCache`` lookup plus the check every cached plan gets (shape and the
                  injection screen), keyed by ``task_pattern`` of a fresh task;
  * ``redis``   - the same through ``RedisPlanCache`` (one GET and one INCR on 127.0.0.1);
  * ``planner`` - the planning call through the model gateway to a local OpenAI-compatible server
                  that answers at once: the floor of a planning call (a real model adds its
                  generation time, typically hundreds of milliseconds or more, on top).

Stream: ``--runs`` triage e-mails drawn from ``--kinds`` kinds (other numbers, dates and addresses
each time) through the engine on SQLite with the in-process cache: planning calls made and saved.

Usage: .venv/bin/python benchmarks/planning_bench.py [--plans 2000] [--runs 200] [--kinds 4]
       [--redis redis://127.0.0.1:6379/15]
Prints JSON lines and a Markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from autonomic.adapters.model.scripted import FunctionModel
from autonomic.adapters.redis.plan_cache import RedisPlanCache
from autonomic.bootstrap import build_store
from autonomic.core.messages import Message, Role
from autonomic.engine.agent import AgentRegistry
from autonomic.engine.executor import Engine
from autonomic.engine.planning import check_steps, parse_plan
from autonomic.examples.triage.agent import act_policy, plan_policy, triage_agent
from autonomic.gateway import Gateway
from autonomic.gateway.plan_cache import LocalPlanCache, plan_key, task_pattern
from autonomic.testing.gateway import gateway_config, provider
from autonomic.testing.openai_server import OpenAITestServer, completion

PLAN = [
    "Look up order <n> with order_status",
    "Draft the reply to the customer with draft_reply: status, carrier, days in transit",
    "Answer with the drafted reply",
]
KINDS = [
    "Where is my order {n}? I ordered it on 2026-11-{d:02d}. - {who}@example.com",
    "Please cancel order {n}, I changed my mind. - {who}@example.org",
    "My order {n} arrived damaged on 2026-10-{d:02d}, what now? - {who}@example.net",
    "Can I change the address of order {n} to '{d} Main Street'? - {who}@example.com",
    "Order {n} was charged twice on 2026-11-{d:02d}, please refund one. - {who}@example.org",
    "How long does a return of order {n} take? - {who}@example.net",
]


def _task(rng: random.Random, kinds: int) -> str:
    kind = KINDS[rng.randrange(kinds)]
    return kind.format(
        n=rng.randrange(1000, 99999), d=rng.randrange(1, 28), who=uuid.uuid4().hex[:6]
    )


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def per_plan(plans: int, redis_url: str | None) -> dict[str, dict[str, float]]:
    rng = random.Random(7)
    local = LocalPlanCache()
    shared = RedisPlanCache(redis_url, prefix=f"bench:{uuid.uuid4().hex}") if redis_url else None
    first = _task(rng, 1)
    key = plan_key(task_pattern(first), agent="triage", version="1", tenant="default")
    await local.store(key, PLAN)
    if shared is not None:
        await shared.store(key, PLAN, ttl=600)
    body = json.dumps({"steps": PLAN})
    times: dict[str, list[float]] = {"local": [], "redis": [], "planner": []}
    with OpenAITestServer(default=completion(body)) as server:
        gateway = Gateway(gateway_config(provider("small", server.base_url)))
        try:
            for _ in range(plans):
                task = _task(rng, 1)
                for name in ("local", "redis", "planner"):
                    started = time.perf_counter()
                    if name == "planner":
                        pattern = task_pattern(task)
                        answer = await gateway.complete(
                            [Message(Role.SYSTEM, "Plan."), Message(Role.USER, pattern)], []
                        )
                        steps, problem = parse_plan(answer.content, 10)
                    else:
                        cache = local if name == "local" else shared
                        if cache is None:
                            continue
                        k = plan_key(
                            task_pattern(task), agent="triage", version="1", tenant="default"
                        )
                        steps, problem = check_steps(await cache.lookup(k), 10)
                    assert problem is None
                    assert steps == PLAN
                    times[name].append((time.perf_counter() - started) * 1000)
        finally:
            await gateway.aclose()
            if shared is not None:
                await shared.aclose()
    return {
        name: {"p50_ms": round(_pct(v, 0.5), 4), "p99_ms": round(_pct(v, 0.99), 4), "n": len(v)}
        for name, v in times.items()
        if v
    }


async def stream(runs: int, kinds: int) -> dict[str, Any]:
    rng = random.Random(11)
    planner_calls = 0

    def counting(messages: Any, tools: Any) -> Any:
        nonlocal planner_calls
        planner_calls += 1
        return plan_policy(messages, tools)

    models = {
        "function:triage": FunctionModel(act_policy, name="function:triage"),
        "function:triage-planner": FunctionModel(counting, name="function:triage-planner"),
    }
    with tempfile.TemporaryDirectory() as tmp:
        store = build_store(f"sqlite:///{Path(tmp) / 'bench.db'}")
        await store.migrate()
        cache = LocalPlanCache()
        engine = Engine(
            store, AgentRegistry([triage_agent()]), models.__getitem__, plan_cache=cache
        )
        started = time.perf_counter()
        try:
            for _ in range(runs):
                await engine.run("triage", _task(rng, kinds))
        finally:
            await store.close()
        elapsed = time.perf_counter() - started
    return {
        "runs": runs,
        "kinds": kinds,
        "planning_calls": planner_calls,
        "saved": runs - planner_calls,
        "hits": cache.hits,
        "misses": cache.misses,
        "runs_per_s": round(runs / elapsed, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--plans", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--kinds", type=int, default=4, choices=range(1, len(KINDS) + 1))
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/15")
    args = parser.parse_args()
    plans = asyncio.run(per_plan(args.plans, args.redis or None))
    flow = asyncio.run(stream(args.runs, args.kinds))
    for name, row in plans.items():
        print(json.dumps({"bench": "plan", "source": name, **row}))
    print(json.dumps({"bench": "stream", **flow}))
    floor = plans["planner"]["p50_ms"]
    print("\n| a plan from | P50 ms | P99 ms | vs a planning call (P50) |")
    print("| --- | ---: | ---: | ---: |")
    labels = {
        "local": "the in-process cache",
        "redis": "the Redis cache",
        "planner": "a planning call (gateway, local server answering at once)",
    }
    for name, row in plans.items():
        ratio = floor / row["p50_ms"] if row["p50_ms"] else float("inf")
        print(f"| {labels[name]} | {row['p50_ms']} | {row['p99_ms']} | x{ratio:.1f} |")
    print(
        f"\n{flow['runs']} runs of {flow['kinds']} kinds: {flow['planning_calls']} planning calls, "
        f"{flow['saved']} saved ({flow['hits']} hits, {flow['misses']} misses), "
        f"{flow['runs_per_s']} runs/s"
    )


if __name__ == "__main__":
    main()
