"""How long the console takes to render, server-side: the approvals inbox and a 500-step run's
timeline (the target: each within 100 ms).

The app runs in process (the real ``create_app`` with the console mounted, a real session made by
signing in with an API key); requests go through httpx's ASGI transport, so what is timed is the
server's work - authentication, the tenant-scoped reads, folding the journal into timeline rows,
rendering the HTML - with no network in between.

    .venv/bin/python benchmarks/console_bench.py [--db URL] [--rounds 30] [--approvals 20]

The run page is measured twice, round by round: as served (its cost kept per run version, the
service's ``SpendCache``) and with its cost summed from the run's model calls on every request.

Prints one JSON object per page: median, p95 and max wall-clock milliseconds, the median CPU
milliseconds of this process (the server's own work, less inflated than wall time on a host
whose other processes compete for the CPU), the load average, the HTML size, the rows drawn.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

from autonomic import Agent, AgentRegistry, Engine, FunctionModel, Runaway, build_store, tool
from autonomic.adapters.model.scripted import ScriptedModel
from autonomic.core.canonical import canonical_json
from autonomic.core.messages import Message, ModelResponse, Role, ToolCall, ToolSpec
from autonomic.governance.policy.risk import parse_policy_text
from autonomic.service.app import create_app
from autonomic.service.console import console_router
from autonomic.service.console.views import WINDOW
from autonomic.service.settings import ServiceSettings
from autonomic.service.spend_cache import SpendCache

STEPS = 500
TENANT = "bench"
POLICY = """
approval:
  expires_after: 1h
rules:
  - name: big-payment
    tool: pay
    when: args.amount > 100
    risk: medium
    reason: payments above 100 need a second person
"""


@tool(idempotent=True)
async def add_one(arg: int) -> dict[str, int]:
    """The trivial tool of the long run."""
    return {"value": arg + 1}


@tool(idempotent=True)
def pay(to: str, amount: int) -> dict[str, Any]:
    """Pay ``amount`` to ``to`` (the approvals' tool)."""
    return {"paid": amount, "to": to}


def counting_model(messages: Sequence[Message], tools: Sequence[ToolSpec]) -> ModelResponse:
    done = sum(1 for m in messages if m.role is Role.TOOL)
    if done < STEPS:
        call = ToolCall(f"c{done + 1}", "add_one", canonical_json({"arg": done + 1}))
        return ModelResponse(content=None, tool_calls=(call,), model="fake")
    return ModelResponse(content=f"done after {done} steps", model="fake")


async def prepare(url: str, approvals: int) -> str:
    """A 500-step run and ``approvals`` runs waiting for an approval, in tenant ``bench``."""
    store = build_store(url)
    await store.migrate()
    long_agent = Agent(name="counter", instructions="", tools=(add_one,), max_turns=STEPS + 1)
    model = FunctionModel(counting_model, name="fake")
    engine = Engine(
        store,
        AgentRegistry([long_agent]),
        lambda spec: model,
        runaway=Runaway(enabled=False),  # 500 near-identical steps would be a loop otherwise
    )
    run = await engine.run("counter", "count", tenant=TENANT)
    assert run.status.value == "COMPLETED", run.status_reason
    payer = Agent(name="payer", instructions="pay", tools=(pay,))
    for i in range(approvals):
        script = ScriptedModel(
            [{"tool_calls": [{"name": "pay", "arguments": {"to": f"p{i}", "amount": 500 + i}}]}]
        )
        governed = Engine(
            store,
            AgentRegistry([payer]),
            lambda spec, script=script: script,
            gates=[parse_policy_text(POLICY).risk.gate()],
        )
        waiting = await governed.run("payer", f"pay p{i}", tenant=TENANT, requester="ann@bench")
        assert waiting.status.value == "WAITING_FOR_HUMAN", waiting.status_reason
    await store.close()
    return run.id


async def measure(url: str, run_id: str, rounds: int) -> list[dict[str, Any]]:
    app = create_app(ServiceSettings(db=url, session_secret=b"b" * 32), routers=[console_router()])
    async with app.router.lifespan_context(app):
        service = app.state.service
        _key, secret = await service.keys.create(
            tenant=TENANT, role="approver", name="bob", by="bench", expires_in=None
        )
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            signed = await client.post("/console/signin", data={"key": secret})
            assert signed.status_code == 303, signed.text
            journal = await service.store.load_journal(run_id)
            kept, summed = service.spending, SpendCache(size=0)
            pages = [
                ("approvals inbox", "/console/approvals", "<article", kept),
                (
                    f"a {STEPS}-step run's page (latest {WINDOW} rows)",
                    f"/console/runs/{run_id}",
                    '<li id="step-',
                    kept,
                ),
                (
                    f"a {STEPS}-step run's page, its cost summed again (no spend cache)",
                    f"/console/runs/{run_id}",
                    '<li id="step-',
                    summed,
                ),
                (
                    f"a {STEPS}-step run's whole timeline (?all=1)",
                    f"/console/runs/{run_id}?all=1",
                    '<li id="step-',
                    kept,
                ),
            ]
            times: dict[str, list[float]] = {name: [] for name, *_ in pages}
            cpu: dict[str, list[float]] = {name: [] for name, *_ in pages}
            answers: dict[str, httpx.Response] = {}
            for _, path, _, cache in pages:
                service.spending = cache
                await client.get(path)  # warm: templates compiled, connections open
            for _ in range(rounds):  # the pages in turn, round by round: the same load for all
                for name, path, _, cache in pages:
                    service.spending = cache
                    start, start_cpu = time.perf_counter(), time.process_time()
                    answer = await client.get(path)
                    cpu[name].append((time.process_time() - start_cpu) * 1000)
                    times[name].append((time.perf_counter() - start) * 1000)
                    assert answer.status_code == 200, answer.text[:300]
                    answers[name] = answer
            service.spending = kept
            results = []
            for name, _, row, _ in pages:
                walls, answer = sorted(times[name]), answers[name]
                results.append(
                    {
                        "page": name,
                        "db": url.split(":", 1)[0],
                        "rounds": rounds,
                        "median_ms": round(statistics.median(walls), 2),
                        "p95_ms": round(walls[int(len(walls) * 0.95) - 1], 2),
                        "max_ms": round(walls[-1], 2),
                        "median_cpu_ms": round(statistics.median(cpu[name]), 2),
                        "load_average": round(os.getloadavg()[0], 1),
                        "rows": answer.text.count(row),
                        "html_kib": round(len(answer.content) / 1024, 1),
                        "journal_entries": len(journal) if "run" in name else None,
                        "within_100_ms": statistics.median(walls) <= 100,
                    }
                )
            return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", help="store URL (default: a SQLite file in a temporary dir)")
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--approvals", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = args.db or f"sqlite:///{Path(tmp) / 'console-bench.db'}"
        run_id = asyncio.run(prepare(url, args.approvals))
        for result in asyncio.run(measure(url, run_id, args.rounds)):
            print(json.dumps(result))


if __name__ == "__main__":
    main()
