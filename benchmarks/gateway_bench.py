"""Model gateway benchmark: overhead per call over the bare openai SDK, and the pooled client's
throughput against a client per call, on one local OpenAI-compatible test server.

Overhead: the same chat completion (a short conversation, one tool offered) is sent N times by
three callers, interleaved call by call so machine noise hits all of them alike:
  * ``sdk``      - ``openai.AsyncOpenAI().chat.completions.create`` (the floor);
  * ``adapter``  - autonomic's ``OpenAICompatModel`` (request/response conversion);
  * ``gateway``  - ``Gateway.complete`` with rate limits configured (buckets reserved and settled),
                   the breaker, token counting of the prompt, cost accounting and tool-call checks.
The gateway's overhead is its P50 minus the SDK's P50 (and the adapter's share of it).

In process: the gateway over a model that answers at once (no HTTP), against calling that model
directly: the gateway's own CPU cost per call, free of network noise.

Pool: 50 concurrent callers make ``--pool-calls`` calls in total, through one pooled client
(keep-alive, bounded connections) and through a new client per call.

Usage: .venv/bin/python benchmarks/gateway_bench.py [--calls 2000] [--pool-calls 2000]
Prints JSON lines and a Markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from typing import Any

import openai

from autonomic.adapters.model.openai_compat import OpenAICompatModel, to_openai_message
from autonomic.core.messages import Message, ModelResponse, Role, ToolCall, ToolSpec, Usage
from autonomic.gateway import Gateway
from autonomic.testing.gateway import gateway_config, provider
from autonomic.testing.openai_server import OpenAITestServer, completion

MESSAGES = [
    Message(Role.SYSTEM, "You reconcile ledgers. Use the tools; be brief."),
    Message(Role.USER, "Reconcile account 4711 for November against the bank statement."),
]
TOOLS = [
    ToolSpec(
        "read_ledger",
        "Read ledger entries of an account",
        {"type": "object", "properties": {"account": {"type": "integer"}}},
    )
]


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def overhead(base_url: str, calls: int) -> dict[str, Any]:
    sdk = openai.AsyncOpenAI(base_url=base_url, api_key="k", max_retries=0)
    adapter = OpenAICompatModel("gpt-4o-mini", base_url=base_url, api_key="k")
    gateway = Gateway(
        gateway_config(
            provider(
                "main",
                base_url,
                price={"input": 0.15, "output": 0.6},
                limits={"requests_per_minute": 10_000_000, "tokens_per_minute": 10_000_000_000},
            )
        )
    )
    request = {
        "model": "gpt-4o-mini",
        "messages": [to_openai_message(m) for m in MESSAGES],
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": t.name,
                    "description": t.description,
                    "parameters": t.parameters,
                },
            }
            for t in TOOLS
        ],
    }

    async def via_sdk() -> None:
        await sdk.chat.completions.create(**request)

    async def via_adapter() -> None:
        await adapter.complete(MESSAGES, TOOLS)

    async def via_gateway() -> None:
        await gateway.complete(MESSAGES, TOOLS)

    runners = {"sdk": via_sdk, "adapter": via_adapter, "gateway": via_gateway}
    samples: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(50):  # warm up connections, encodings, code paths
        for run in runners.values():
            await run()
    for i in range(calls):
        order = list(runners.items())
        if i % 2:
            order.reverse()
        for name, run in order:
            started = time.perf_counter()
            await run()
            samples[name].append((time.perf_counter() - started) * 1000)
    await sdk.close()
    await adapter.aclose()
    await gateway.aclose()
    out: dict[str, Any] = {"bench": "overhead", "calls": calls}
    for name, values in samples.items():
        out[f"{name}_p50_ms"] = round(statistics.median(values), 4)
        out[f"{name}_p90_ms"] = round(_pct(values, 0.9), 4)
    out["gateway_overhead_p50_ms"] = round(out["gateway_p50_ms"] - out["sdk_p50_ms"], 4)
    out["adapter_overhead_p50_ms"] = round(out["adapter_p50_ms"] - out["sdk_p50_ms"], 4)
    # the per-call difference, paired (same iteration), is less noisy than a difference of P50s
    paired = [g - s for g, s in zip(samples["gateway"], samples["sdk"], strict=True)]
    out["gateway_overhead_paired_p50_ms"] = round(statistics.median(paired), 4)
    return out


class InstantModel:
    """Answers at once, without I/O: isolates the gateway's own cost from HTTP noise."""

    name = "instant"

    def __init__(self) -> None:
        self.response = ModelResponse(
            None, (ToolCall("c1", "read_ledger", '{"account": 4711}'),), "m", Usage(60, 12)
        )

    async def complete(self, messages: Any, tools: Any) -> ModelResponse:
        return self.response


async def in_process(calls: int) -> dict[str, Any]:
    model = InstantModel()
    gateway = Gateway(
        gateway_config(
            provider(
                "main",
                "http://127.0.0.1:1/v1",
                price={"input": 0.15, "output": 0.6},
                limits={"requests_per_minute": 10_000_000, "tokens_per_minute": 10_000_000_000},
            )
        ),
        models={"main": model},
    )
    samples: dict[str, list[float]] = {"direct": [], "gateway": []}
    for i in range(calls + 200):
        for name, run in (("direct", model), ("gateway", gateway)):
            started = time.perf_counter()
            await run.complete(MESSAGES, TOOLS)
            if i >= 200:
                samples[name].append((time.perf_counter() - started) * 1000)
    await gateway.aclose()
    return {
        "bench": "in_process",
        "calls": calls,
        "direct_p50_ms": round(statistics.median(samples["direct"]), 4),
        "gateway_p50_ms": round(statistics.median(samples["gateway"]), 4),
        "gateway_p90_ms": round(_pct(samples["gateway"], 0.9), 4),
        "gateway_overhead_p50_ms": round(
            statistics.median(samples["gateway"]) - statistics.median(samples["direct"]), 4
        ),
    }


async def pool(base_url: str, calls: int, concurrency: int = 50) -> dict[str, Any]:
    shared = OpenAICompatModel("m", base_url=base_url, api_key="k", max_connections=concurrency)

    async def pooled() -> None:
        await shared.complete(MESSAGES, TOOLS)

    async def per_call() -> None:
        model = OpenAICompatModel("m", base_url=base_url, api_key="k")
        try:
            await model.complete(MESSAGES, TOOLS)
        finally:
            await model.aclose()

    async def measure(run: Any) -> float:
        queue = iter(range(calls))

        async def worker() -> None:
            for _ in queue:
                await run()

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return calls / (time.perf_counter() - started)

    await measure(pooled)  # warm up
    results = {"pooled": [], "per_call": []}  # type: dict[str, list[float]]
    for _ in range(3):
        results["pooled"].append(await measure(pooled))
        results["per_call"].append(await measure(per_call))
    await shared.aclose()
    pooled_rps = statistics.median(results["pooled"])
    per_call_rps = statistics.median(results["per_call"])
    return {
        "bench": "pool",
        "calls": calls,
        "concurrency": concurrency,
        "pooled_calls_per_s": round(pooled_rps, 1),
        "client_per_call_calls_per_s": round(per_call_rps, 1),
        "gain": round(pooled_rps / per_call_rps, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--pool-calls", type=int, default=2000)
    args = parser.parse_args()
    body = completion(None, [("c1", "read_ledger", '{"account": 4711}')], usage=(60, 12))
    inproc = asyncio.run(in_process(args.calls))
    print(json.dumps(inproc), flush=True)
    with OpenAITestServer(default=body, keep_alive=True) as server:
        over = asyncio.run(overhead(server.base_url, args.calls))
        print(json.dumps(over), flush=True)
        pooled = asyncio.run(pool(server.base_url, args.pool_calls))
        print(json.dumps(pooled), flush=True)
    print()
    print("| caller | P50 (ms) | P90 (ms) | P50 over the SDK (ms) |")
    print("| --- | ---: | ---: | ---: |")
    for name in ("sdk", "adapter", "gateway"):
        delta = "" if name == "sdk" else f"{over[f'{name}_p50_ms'] - over['sdk_p50_ms']:+.3f}"
        print(f"| {name} | {over[f'{name}_p50_ms']:.3f} | {over[f'{name}_p90_ms']:.3f} | {delta} |")
    print(
        f"\npaired per-call gateway overhead, P50: {over['gateway_overhead_paired_p50_ms']:.3f} ms"
    )
    print("\n| client | calls/s (50 concurrent) | ratio |")
    print("| --- | ---: | ---: |")
    print(
        f"| one pooled client per provider | {pooled['pooled_calls_per_s']} | x{pooled['gain']} |"
    )
    print(f"| a new client per call | {pooled['client_per_call_calls_per_s']} | x1.00 |")


if __name__ == "__main__":
    main()
