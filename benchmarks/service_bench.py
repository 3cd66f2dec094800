"""Service benchmark: what the HTTP layer costs over the Python API, and how fast the approvals
inbox and a long run's timeline render server-side.

1. **Load** (PostgreSQL, a worker running): ``--clients`` concurrent API clients, each in a loop
   for ``--duration`` seconds: start a run of the triage demo agent (``POST /runs``), then read a
   timeline (``GET /runs/{id}/timeline`` of the run it started before). The service is a real
   ``autonomic serve`` process on 127.0.0.1 and the worker a real ``autonomic worker`` process,
   both on a fresh schema. Requests/s, P50/P99 latency, errors.
2. **The same work through the Python API**, in one process: the same number of concurrent
   tasks calling ``Engine.start`` and reading what the timeline route reads (the run, a page of
   its journal, its model calls) into the same rows and cost, with a ``Worker`` in the same
   process, on another fresh schema. Operations/s; the ratio of the two
   says what the service layer (HTTP, JSON, authentication, authorization, tenant scope) costs.
3. **Server-side rendering** (in process, ASGI transport, no network): ``GET /approvals`` with
   ``--inbox`` pending approvals in the tenant, and ``GET /runs/{id}/timeline`` of a 500-step run
   (500 tool calls, about 1,500 journal entries): its first page (the default 500 rows) and the
   whole timeline read page by page (``?after=``). Median and P99 of ``--repeats`` requests.

Usage: .venv/bin/python benchmarks/service_bench.py [--duration 60] [--clients 50]
       [--pg postgresql://postgres@127.0.0.1:5432/test] [--inbox 100] [--steps 500]
       [--repeats 30] [--render-only]
The client processes share the machine with the server: on 2 cores the clients take CPU the
server would have had, so requests/s here is a floor.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import psycopg

from autonomic.adapters.model.scripted import FunctionModel
from autonomic.bootstrap import build_agents, build_model, build_store
from autonomic.core.messages import ModelResponse, ToolCall
from autonomic.core.timeline import spend, spend_of, timeline
from autonomic.engine.agent import Agent, AgentRegistry
from autonomic.engine.executor import Engine
from autonomic.engine.worker import Worker
from autonomic.governance.runaway.gate import Runaway
from autonomic.service.app import create_app
from autonomic.service.routes.runs import TIMELINE_PAGE
from autonomic.service.settings import ServiceSettings
from autonomic.tools.contract import tool

CLI = [sys.executable, "-m", "autonomic.cli"]
STARTUP_S = 120.0
"""How long the service may take to answer ``/healthz`` before the benchmark gives up."""
STOP_S = 60.0
"""How long the service, the worker and the in-process worker get to stop after the load."""
REQUEST_TIMEOUT_S = 30.0
"""A request slower than this counts as an error: the load ends at most this long after
``--duration`` on any machine."""
TASKS = [
    "Where is my order 1234? - ann@example.com",
    "Please cancel order 5678, I changed my mind. - bob@example.org",
]


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


@contextlib.contextmanager
def schema(base: str) -> Iterator[str]:
    """A fresh PostgreSQL schema (dropped after), as a URL with its search_path."""
    name = f"i14_api_bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{name}"')
    try:
        yield f"{base}{'&' if '?' in base else '?'}options=-csearch_path%3D{name}"
    finally:
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{name}" CASCADE')


async def migrate(url: str) -> None:
    store = build_store(url)
    await store.migrate()
    await store.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cli(*args: str, url: str, wait: bool = True) -> Any:
    env = os.environ | {"AUTONOMIC_DB": url}
    if wait:
        return subprocess.run([*CLI, *args], env=env, capture_output=True, text=True, check=True)
    return subprocess.Popen(
        [*CLI, *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )


# -- 1. the API under load -------------------------------------------------------------------------


async def api_load(url: str, clients: int, duration: float) -> dict[str, Any]:
    made = cli("keys", "create", "--tenant", "bench", "--role", "member", "--name", "load", url=url)
    secret = next(line for line in made.stdout.splitlines() if line.startswith("ak_"))
    port = free_port()
    server = cli("serve", "--port", str(port), url=url, wait=False)
    worker = cli("worker", "--concurrency", "8", url=url, wait=False)
    base = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Bearer {secret}"}
    try:
        async with httpx.AsyncClient(base_url=base, headers=headers, timeout=30) as probe:
            ready_by = time.monotonic() + STARTUP_S
            while True:
                with contextlib.suppress(httpx.TransportError):
                    if (await probe.get("/healthz")).status_code == 200:
                        break
                if server.poll() is not None or time.monotonic() > ready_by:
                    raise SystemExit(
                        f"`autonomic serve` did not answer /healthz within {STARTUP_S:.0f} s "
                        f"(exit code {server.poll()}); run it by hand to see why"
                    )
                await asyncio.sleep(0.1)
        latencies: dict[str, list[float]] = {"start": [], "timeline": []}
        errors = {"start": 0, "timeline": 0}
        limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
        stop_at = time.perf_counter() + duration

        async def client(n: int, http: httpx.AsyncClient) -> None:
            previous: str | None = None
            i = 0
            while time.perf_counter() < stop_at:
                i += 1
                t0 = time.perf_counter()
                try:
                    answer = await http.post(
                        "/runs", json={"agent": "triage", "task": TASKS[i % 2]}
                    )
                    ok = answer.status_code == 201
                except httpx.HTTPError:
                    ok = False
                latencies["start"].append(time.perf_counter() - t0)
                if not ok:
                    errors["start"] += 1
                    continue
                run_id = answer.json()["id"]
                if previous is not None:
                    t0 = time.perf_counter()
                    try:
                        got = await http.get(f"/runs/{previous}/timeline")
                        ok = got.status_code == 200
                    except httpx.HTTPError:
                        ok = False
                    latencies["timeline"].append(time.perf_counter() - t0)
                    errors["timeline"] += 0 if ok else 1
                previous = run_id

        async with httpx.AsyncClient(
            base_url=base, headers=headers, timeout=REQUEST_TIMEOUT_S, limits=limits
        ) as http:
            began = time.perf_counter()
            await asyncio.gather(*(client(n, http) for n in range(clients)))
            elapsed = time.perf_counter() - began
    finally:
        for proc in (server, worker):
            proc.terminate()
        for proc in (server, worker):
            try:
                proc.wait(timeout=STOP_S)
            except subprocess.TimeoutExpired:  # a loaded machine: do not wait for ever
                proc.kill()
                proc.wait()
    every = latencies["start"] + latencies["timeline"]
    return {
        "mode": "api",
        "clients": clients,
        "seconds": round(elapsed, 2),
        "requests": len(every),
        "requests_per_s": round(len(every) / elapsed, 1),
        "runs_started": len(latencies["start"]) - errors["start"],
        "p50_ms": round(pct(every, 0.50) * 1000, 2),
        "p99_ms": round(pct(every, 0.99) * 1000, 2),
        "start_p50_ms": round(pct(latencies["start"], 0.50) * 1000, 2),
        "timeline_p50_ms": round(pct(latencies["timeline"], 0.50) * 1000, 2),
        "errors": errors["start"] + errors["timeline"],
    }


# -- 2. the same work through the Python API ------------------------------------------------------


async def python_load(url: str, clients: int, duration: float) -> dict[str, Any]:
    store = build_store(url)
    engine = Engine(store, build_agents(), build_model)
    worker_engine = Engine(store, build_agents(), build_model)
    worker = Worker(worker_engine, concurrency=8, poll_interval=0.2)
    driving = asyncio.create_task(worker.run())
    latencies: list[float] = []
    errors = 0
    stop_at = time.perf_counter() + duration

    async def client(n: int) -> None:
        nonlocal errors
        previous: str | None = None
        i = 0
        while time.perf_counter() < stop_at:
            i += 1
            t0 = time.perf_counter()
            try:
                run = await engine.start(
                    "triage", TASKS[i % 2], tenant="bench", requester="load@bench"
                )
            except Exception:
                errors += 1
                continue
            latencies.append(time.perf_counter() - t0)
            if previous is not None:  # what GET /runs/{id}/timeline reads and computes
                t0 = time.perf_counter()
                read = await store.get_run(previous)
                entries = await store.page_journal(previous, limit=TIMELINE_PAGE + 1)
                rows = [item.to_dict() for item in timeline(entries[:TIMELINE_PAGE],
                                                            start=read.created_at)]  # fmt: skip
                cost = spend_of(await store.model_calls(previous))
                json.dumps({"items": rows, "cost": cost})
                latencies.append(time.perf_counter() - t0)
            previous = run.id

    began = time.perf_counter()
    await asyncio.gather(*(client(n) for n in range(clients)))
    elapsed = time.perf_counter() - began
    worker.stop()
    with contextlib.suppress(TimeoutError):  # runs in flight finish, within STOP_S under load
        await asyncio.wait_for(driving, STOP_S)
    await engine.aclose()
    await worker_engine.aclose()
    await store.close()
    return {
        "mode": "python",
        "clients": clients,
        "seconds": round(elapsed, 2),
        "requests": len(latencies),
        "requests_per_s": round(len(latencies) / elapsed, 1),
        "p50_ms": round(pct(latencies, 0.50) * 1000, 2),
        "p99_ms": round(pct(latencies, 0.99) * 1000, 2),
        "errors": errors,
    }


# -- 3. server-side rendering -----------------------------------------------------------------------


@tool(idempotent=True)
def tick(n: int) -> int:
    """Count."""
    return n


def long_agent(steps: int) -> tuple[Agent, FunctionModel]:
    def policy(messages: Any, tools: Any) -> ModelResponse:
        done = sum(1 for m in messages if m.role.value == "tool")
        if done >= steps:
            return ModelResponse(content="counted")
        return ModelResponse(
            content=None, tool_calls=(ToolCall(f"c{done}", "tick", json.dumps({"n": done})),)
        )

    agent = Agent(name="counter", instructions="count", tools=(tick,), model="function:counter",
                  max_turns=steps + 5)  # fmt: skip
    return agent, FunctionModel(policy, name="counter")


async def first_page_parts(store: Any, run: Any, repeats: int) -> dict[str, Any]:
    """The timeline's first page computed in process, no HTTP: from the whole journal (how the
    route read it before 2026-12-04) and from a page and the model calls (how it reads now),
    with the same rows and cost; median milliseconds, and the new way's parts."""
    times: dict[str, list[float]] = {}

    def took(name: str, since: float) -> float:
        now = time.perf_counter()
        times.setdefault(name, []).append((now - since) * 1000)
        return now

    for _ in range(repeats + 3):
        t0 = time.perf_counter()
        entries = await store.load_journal(run.id)
        rows = [i.to_dict() for i in timeline(entries[:TIMELINE_PAGE], start=run.created_at)]
        whole = json.dumps({"items": rows, "cost": spend(entries)})
        t = took("whole journal", t0)
        page = await store.page_journal(run.id, limit=TIMELINE_PAGE + 1)
        t = took("page read", t)
        rows = [i.to_dict() for i in timeline(page[:TIMELINE_PAGE], start=run.created_at)]
        t = took("rows", t)
        cost = spend_of(await store.model_calls(run.id))
        t = took("cost", t)
        paged = json.dumps({"items": rows, "cost": cost})
        took("json", t)
        assert paged == whole, "the page and its cost must not depend on how they were read"
    parts = ("page read", "rows", "cost", "json")
    times["paged"] = [sum(one) for one in zip(*(times[p] for p in parts), strict=True)]
    return {"render": "first page in process, median ms"} | {
        name: round(statistics.median(values[3:]), 2) for name, values in times.items()
    }


@contextlib.asynccontextmanager
async def app_client(url: str) -> AsyncIterator[tuple[Any, httpx.AsyncClient]]:
    app = create_app(ServiceSettings(db=url))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            yield app.state.service, client


async def rendering(url: str, inbox: int, steps: int, repeats: int) -> list[dict[str, Any]]:
    from autonomic.governance.policy.risk import parse_policy_text

    policy = parse_policy_text(
        "rules:\n  - name: every-tick\n    tool: tick\n    risk: medium\n    reason: review\n"
    )
    store = build_store(url)
    agent, model = long_agent(steps)
    long_engine = Engine(
        store, AgentRegistry([agent]), lambda s: model, runaway=Runaway(enabled=False)
    )
    t0 = time.perf_counter()
    long_run = await long_engine.run("counter", "count", tenant="bench")
    built = time.perf_counter() - t0
    waiting_agent, waiting_model = long_agent(1)
    waiting = Engine(store, AgentRegistry([waiting_agent]), lambda s: waiting_model,
                     gates=[policy.risk.gate()], runaway=Runaway(enabled=False))  # fmt: skip
    for _ in range(inbox):
        await waiting.run("counter", "count", tenant="bench", requester="someone@bench")
    results = [await first_page_parts(store, long_run, repeats)]
    await store.close()
    entries_count = 0
    async with app_client(url) as (service, client):
        _, secret = await service.keys.create(
            tenant="bench", role="approver", name="r", by="b", expires_in=None
        )
        headers = {"Authorization": f"Bearer {secret}"}

        async def every_page(path: str) -> tuple[int, int]:
            rows, size, after = 0, 0, 0
            while True:
                answer = await client.get(f"{path}?after={after}", headers=headers)
                assert answer.status_code == 200, answer.text
                body = answer.json()
                rows, size = rows + len(body["items"]), size + len(answer.content)
                if body["next_after"] is None:
                    return rows, size
                after = body["next_after"]

        timeline_path = f"/runs/{long_run.id}/timeline"
        for name, path in (
            ("approvals inbox", "/approvals?limit=500"),
            (f"{steps}-step timeline, first page", timeline_path),
            (f"{steps}-step timeline, every page", ""),
        ):
            times = []
            for _ in range(repeats + 3):
                t0 = time.perf_counter()
                if path:
                    answer = await client.get(path, headers=headers)
                    assert answer.status_code == 200, answer.text
                else:
                    size, nbytes = await every_page(timeline_path)
                times.append(time.perf_counter() - t0)
            if path:
                body = answer.json()
                size = len(body) if isinstance(body, list) else len(body["items"])
                nbytes = len(answer.content)
            if "every page" in name:
                entries_count = size
            times = times[3:]  # the first few warm caches
            results.append({
                "render": name, "rows": size, "bytes": nbytes,
                "p50_ms": round(pct(times, 0.5) * 1000, 2), "p99_ms": round(pct(times, 0.99) * 1000, 2),
            })  # fmt: skip
    results.append(
        {"render": "(building the long run)", "rows": entries_count, "seconds": round(built, 2)}
    )
    return results


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument(
        "--pg",
        default=os.environ.get(
            "AUTONOMIC_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test"
        ),
    )
    parser.add_argument("--inbox", type=int, default=100)
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument(
        "--render-only", action="store_true", help="skip the load parts (1 and 2): render only"
    )
    args = parser.parse_args()
    rows: list[dict[str, Any]] = []
    if not args.render_only:
        with schema(args.pg) as url:
            await migrate(url)
            rows.append(await api_load(url, args.clients, args.duration))
        with schema(args.pg) as url:
            await migrate(url)
            rows.append(await python_load(url, args.clients, args.duration))
    with schema(args.pg) as url:
        await migrate(url)
        render = await rendering(url, args.inbox, args.steps, args.repeats)
    for row in rows + render:
        print(json.dumps(row))
    if not rows:
        return
    api, py = rows
    print()
    print("| mode | clients | requests/s | P50 ms | P99 ms | errors |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(
            f"| {r['mode']} | {r['clients']} | {r['requests_per_s']} | {r['p50_ms']} | {r['p99_ms']} | {r['errors']} |"
        )
    print(f"\nAPI / Python API throughput: x{api['requests_per_s'] / py['requests_per_s']:.2f}")
    print("\n| server-side render | rows | P50 ms | P99 ms |")
    print("| --- | ---: | ---: | ---: |")
    for r in render:
        if "p50_ms" in r:
            print(f"| {r['render']} | {r['rows']} | {r['p50_ms']} | {r['p99_ms']} |")


if __name__ == "__main__":
    asyncio.run(main())
