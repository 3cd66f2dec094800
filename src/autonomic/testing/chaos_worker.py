"""A chaos worker: ``python -m autonomic.testing.chaos_worker CONFIG.json``, started (and
restarted after every SIGKILL) by ``testing/chaos.py``. Drives the trial's runs with the user's
agent wrapped in the faults of the plan until the stop file appears and no run is left to claim."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from autonomic.testing.chaos import (
    ChaosHook,
    ChaosModel,
    ChaosTools,
    CrashFaults,
    FaultPlan,
    Injections,
)


async def work(config: dict[str, object]) -> None:
    from autonomic.bootstrap import build_model, build_store, load_object
    from autonomic.engine.agent import Agent, AgentRegistry
    from autonomic.engine.executor import Engine

    plan = FaultPlan(**config["plan"])  # type: ignore[arg-type]
    seed = int(config["seed"])  # type: ignore[call-overload]
    agent = load_object(str(config["agent"]))
    assert isinstance(agent, Agent)
    Injections.path = Path(str(config["injections"]))
    store = build_store(str(config["db"]))
    models: dict[str, ChaosModel] = {}

    def model(spec: str) -> ChaosModel:
        if spec not in models:
            models[spec] = ChaosModel(build_model(spec), plan, seed)
        return models[spec]

    engine = Engine(
        store,
        AgentRegistry([ChaosTools(plan, seed).agent(agent)]),
        model,
        faults=CrashFaults(),
        hooks=[ChaosHook()],
        lease_ttl=float(config["lease_ttl"]),  # type: ignore[arg-type]
    )
    stop = Path(str(config["stop"]))
    try:
        while True:
            run = await engine.claim()
            if run is not None:
                await engine.drive(run)
                continue
            if _stopped(stop):
                return
            await asyncio.sleep(0.05)  # idle: poll for work (or a lease to expire)
    finally:
        await engine.aclose()
        await store.close()


def _stopped(stop: Path) -> bool:
    return stop.exists()


def main() -> None:
    config = json.loads(Path(sys.argv[1]).read_text())
    sys.path.insert(0, str(config["cwd"]))
    asyncio.run(work(config))


if __name__ == "__main__":
    main()
