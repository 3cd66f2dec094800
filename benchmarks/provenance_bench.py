"""The provenance gate per tool call, and the screen on a 100 KB output.

* ``provenance + plan check`` - ``ProvenanceGate.check`` on a consequential call (a payment with
  a recipient, an account, an amount and free text with a link) in a run whose history holds 200
  tool steps (structured outputs of ~400 bytes: e-mails, invoices), as the engine asks it: the
  ledger is cached per run and extended by one new tool output before each check;
* the same with the ledger rebuilt from scratch each time (what a fresh worker pays once after
  taking a run over);
* ``screen 100 KB`` - the injection screen on a 100 KB tool output (JSON, some base64 in it).

Targets (issue 15): 0.2 ms P50 per call with a 200-step history; 5 ms for 100 KB.

Usage: .venv/bin/python benchmarks/provenance_bench.py [--steps 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import gc
import json
import statistics
import time
from typing import Any

from autonomic.core.entries import PlanOutcome
from autonomic.core.run import Lease, Run, RunStatus
from autonomic.core.state import Content, RunState
from autonomic.governance.action import ProposedAction
from autonomic.governance.injection import screen
from autonomic.governance.provenance import Provenance, Source
from autonomic.governance.provenance_gate import ProvenanceGate
from autonomic.tools.contract import tool


@tool(idempotent=True, trusted_fields=("messages[].from",))
def read_inbox() -> dict[str, Any]:
    """Mail."""
    return {}


@tool(effects=("pay",))
def pay(account: str, amount: float, to: str, memo: str) -> str:
    """Pay."""
    return "ok"


def _output(i: int) -> dict[str, Any]:
    return {
        "messages": [
            {
                "id": f"m{i}",
                "from": f"person{i}@corp.example",
                "subject": f"Invoice {i}",
                "body": f"Please pay invoice INV-{i} of {i * 7 % 1000}.50 EUR to "
                f"DE44 5001 0517 5407 {i:04d} 31 by Friday. See https://corp.example/inv/{i}. "
                "Thanks, accounts team.",
            }
        ]
    }


def _percentiles(samples: list[int]) -> dict[str, float]:
    ordered = sorted(samples)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1e6  # noqa: E731
    return {"p50_ms": pick(0.5), "p99_ms": pick(0.99), "mean_ms": statistics.fmean(ordered) / 1e6}


def measure_gate(steps: int, history: int, *, cached: bool) -> dict[str, float]:
    run = Run(
        id="run_bench",
        agent="a",
        agent_version="1",
        model="m",
        status=RunStatus.RUNNING,
        version=1,
        lease=Lease(None, 0.0, 0),
        created_at=0.0,
        updated_at=0.0,
    )
    state = RunState("run_bench")
    state.plan = PlanOutcome(key="k", pattern="p", steps=("read with read_inbox", "pay with pay"))
    state.contents.append(Content(1, "operator", "task", "Pay the invoices from my inbox."))
    for i in range(history):
        state.contents.append(Content(i + 2, "tool_output", "read_inbox", _output(i)))
    contracts = {"read_inbox": read_inbox, "pay": pay}
    shared = ProvenanceGate()
    samples: list[int] = []

    async def go() -> None:
        gc.collect()
        for n in range(steps):
            state.contents.append(
                Content(history + n + 2, "tool_output", "read_inbox", _output(history + n))
            )
            action = ProposedAction.tool_call(
                run,
                state,
                pay,
                {
                    "account": "DE44500105175407000131",
                    "amount": 7.5,
                    "to": "person1@corp.example",
                    "memo": "invoice INV-1, see https://corp.example/inv/1",
                },
                contracts=contracts,
            )
            gate = shared if cached else ProvenanceGate()
            started = time.perf_counter_ns()
            await gate.check(action)
            samples.append(time.perf_counter_ns() - started)
            if not cached:
                del state.contents[-1]

    asyncio.run(go())
    return _percentiles(samples)


def measure_screen_2kb(steps: int) -> dict[str, float]:
    """The 2 KB JSON output ``guards_bench.py`` screens: the scale the 100 KB row is read on."""
    body = json.dumps(
        {"results": [{"id": i, "title": f"Invoice {i}", "note": "paid in full"} for i in range(40)]}
    )[:2048]
    source = Provenance(Source.TOOL_OUTPUT, "http_get")
    samples = []
    for _ in range(steps):
        started = time.perf_counter_ns()
        screen(body, source)
        samples.append(time.perf_counter_ns() - started)
    return _percentiles(samples)


def measure_screen(steps: int) -> dict[str, float]:
    rows = [
        {"id": i, "title": f"Invoice {i}", "note": "paid in full", "blob": ""} for i in range(1400)
    ]
    rows[450]["blob"] = base64.b64encode(b"quarterly numbers attached " * 8).decode()
    body = json.dumps({"results": rows})[:102_400]
    source = Provenance(Source.TOOL_OUTPUT, "http_get")
    samples = []
    for _ in range(steps):
        started = time.perf_counter_ns()
        screen(body, source)
        samples.append(time.perf_counter_ns() - started)
    return _percentiles(samples)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=1000)
    args = parser.parse_args()
    from guards_bench import measure as measure_guards  # benchmarks/ is on the path

    from autonomic.governance.runaway import Budget, Guards, GuardState

    budget = Budget(turns=100_000, tokens=10**9, cost=1e6, tool_calls={"*": 100_000})
    rows = [
        (
            "all runaway guards (guards_bench.py), for scale",
            50,
            measure_guards(Guards.default(budget=budget), GuardState, 50, args.steps),
        ),
        ("provenance + plan check, ledger cached", 200, measure_gate(args.steps, 200, cached=True)),
        (
            "provenance + plan check, ledger rebuilt",
            200,
            measure_gate(max(args.steps // 10, 20), 200, cached=False),
        ),
        (
            "screen a 2 KB tool output (guards_bench.py), for scale",
            0,
            measure_screen_2kb(args.steps),
        ),
        ("screen a 100 KB tool output", 0, measure_screen(max(args.steps // 10, 20))),
    ]
    base = rows[0][2]["p50_ms"]
    print("| what | history (steps) | P50 (ms) | P99 (ms) | mean (ms) | P50 / all guards |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name, history, r in rows:
        print(
            f"| {name} | {history or ''} | {r['p50_ms']:.3f} | {r['p99_ms']:.3f} | "
            f"{r['mean_ms']:.3f} | x{r['p50_ms'] / base:.1f} |"
        )


if __name__ == "__main__":
    main()
