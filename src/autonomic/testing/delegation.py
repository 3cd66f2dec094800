"""Delegation test kit: deterministic delegating models, a fleet of worker processes over a
capability with a concurrency limit, and the measurement of how many of its subtasks were in
flight at once.

``python -m autonomic.testing.delegation --db URL --meter PATH`` is one worker process of the
fleet: it drives runs of the kit's agents (``fleet_agents``) until nothing is left to do. The
``unit`` tool of the ``unit`` agent counts itself in and out of ``PATH`` under a file lock and
keeps the largest count seen, so a test that starts several such processes reads the fleet-wide
maximum in flight from one small file, never from a process it shares anything else with.
"""

from __future__ import annotations

import argparse
import asyncio
import fcntl
import json
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from autonomic.adapters.model.scripted import FunctionModel
from autonomic.bootstrap import build_store
from autonomic.core.messages import Message, ModelResponse, Role, ToolCall, ToolSpec
from autonomic.engine.agent import Agent, AgentRegistry
from autonomic.engine.executor import Engine
from autonomic.engine.faults import Faults
from autonomic.engine.worker import Worker
from autonomic.governance.runaway.gate import Runaway
from autonomic.ports.store import Store
from autonomic.tools.capability import Capability
from autonomic.tools.contract import ToolContext, tool

Policy = Callable[[Sequence[Message], Sequence[ToolSpec]], ModelResponse]

UNIT = "work.unit"
"""The fleet's capability: at most ``LIMIT`` of its subtasks run at once across the fleet."""
LIMIT = 2


def observations(messages: Sequence[Message]) -> list[Any]:
    """The tool results the model has read so far (JSON where they are)."""
    return [_json(m.content or "") for m in messages if m.role is Role.TOOL]


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def delegating(to: str, task: Any, *, times: int = 1) -> Policy:
    """A model that delegates ``task`` to ``to`` (``times`` times), then answers with the last
    observation (the child's result, or the error it read)."""

    def policy(messages: Sequence[Message], tools: Sequence[ToolSpec]) -> ModelResponse:
        seen = observations(messages)
        if len(seen) < times:
            arguments = json.dumps({"to": to, "task": task})
            return ModelResponse(None, (ToolCall(f"d{len(seen)}", "delegate", arguments),))
        return ModelResponse(json.dumps(seen[-1]))

    return policy


def answering(text: str) -> Policy:
    """A model that answers ``text`` at once."""
    return lambda messages, tools: ModelResponse(text)


def calling(name: str, arguments: dict[str, Any], answer: str) -> Policy:
    """A model that calls ``name`` once, then answers ``answer``."""

    def policy(messages: Sequence[Message], tools: Sequence[ToolSpec]) -> ModelResponse:
        if observations(messages):
            return ModelResponse(answer)
        return ModelResponse(None, (ToolCall("c", name, json.dumps(arguments)),))

    return policy


def relaying(messages: Sequence[Message], tools: Sequence[ToolSpec]) -> ModelResponse:
    """A model that hands the task it was given to the agent its instructions name after
    ``next:``, then answers with what came back."""
    seen = observations(messages)
    if seen:
        return ModelResponse(json.dumps(seen[-1]))
    system = next((m.content for m in messages if m.role is Role.SYSTEM), "") or ""
    task = next((m.content for m in messages if m.role is Role.USER), "") or ""
    target = system.rpartition("next:")[2].strip()
    arguments = json.dumps({"to": target, "task": task})
    return ModelResponse(None, (ToolCall("r", "delegate", arguments),))


def resolver(policies: dict[str, Policy]) -> Callable[[str], FunctionModel]:
    """Model specs ``fn:NAME`` to the function models of ``policies``."""
    return lambda spec: FunctionModel(policies[spec.partition(":")[2]], name=spec)


# -- the fleet ------------------------------------------------------------------------------------


@contextmanager
def _locked(path: Path) -> Iterator[dict[str, int]]:
    with open(path, "a+", encoding="utf-8") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        f.seek(0)
        text = f.read()
        counts: dict[str, int] = json.loads(text) if text else {"now": 0, "max": 0, "done": 0}
        yield counts
        f.seek(0)
        f.truncate()
        f.write(json.dumps(counts))


def meter_reading(path: Path) -> dict[str, int]:
    """What the fleet's ``unit`` calls left in the meter: ``max`` in flight at once, ``done``."""
    return dict(json.loads(path.read_text()))


def fleet_agents(meter: Path, *, hold: float = 0.05) -> tuple[list[Agent], dict[str, Policy]]:
    """A ``boss`` that delegates one ``work.unit`` subtask, and the ``unit`` agent doing it with a
    tool that counts itself in flight in ``meter`` for ``hold`` seconds."""

    @tool(idempotent=True)
    def unit(n: int, ctx: ToolContext) -> dict[str, int]:
        """Do one unit of work (counted in flight while it runs)."""
        with _locked(meter) as counts:
            counts["now"] += 1
            counts["max"] = max(counts["max"], counts["now"])
        time.sleep(hold)  # the work itself: it overlaps with whatever else is in flight
        with _locked(meter) as counts:
            counts["now"] -= 1
            counts["done"] += 1
        return {"n": n}

    capability = Capability(
        UNIT,
        input_schema={"type": "object", "required": ["n"]},
        concurrency=LIMIT,
        cost=0.001,
        latency=hold,
    )
    boss = Agent("boss", "delegate a unit", model="fn:boss", delegates_to=[UNIT])
    worker = Agent("unit", "do the unit", tools=(unit,), model="fn:unit", capabilities=[capability])
    policies: dict[str, Policy] = {
        "boss": delegating(UNIT, {"n": 1}),
        "unit": calling("unit", {"n": 1}, "done"),
    }
    return [boss, worker], policies


def kit_agents() -> list[Agent]:
    """The fleet's agents for ``--agent autonomic.testing.delegation:kit_agents`` (their meter in
    the temporary directory)."""
    import tempfile

    return fleet_agents(Path(tempfile.gettempdir()) / "autonomic-unit-meter.json", hold=0)[0]


def fleet_engine(
    store: Store,
    meter: Path,
    *,
    hold: float = 0.05,
    clock: Callable[[], float] = time.time,
    faults: Faults | None = None,
) -> Engine:
    """An engine over the fleet's agents (``fleet_agents``)."""
    agents, policies = fleet_agents(meter, hold=hold)
    return Engine(
        store,
        AgentRegistry(agents),
        resolver(policies),
        runaway=Runaway(enabled=False),
        lease_ttl=5.0,
        clock=clock,
        faults=faults,
    )


async def _work(url: str, meter: Path) -> None:
    store = build_store(url)
    try:
        await Worker(fleet_engine(store, meter), concurrency=4, poll_interval=0.02).run(
            until_idle=True
        )
    finally:
        await store.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m autonomic.testing.delegation")
    parser.add_argument("--db", required=True)
    parser.add_argument("--meter", required=True, type=Path)
    args = parser.parse_args(argv)
    asyncio.run(_work(args.db, args.meter))
    print(json.dumps({"pid": os.getpid()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
