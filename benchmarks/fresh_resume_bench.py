"""A fresh worker process resumes a run killed with SIGKILL: autonomic against LangGraph, A/B.

What a crashed fleet pays: a run dies after step 5 (its process SIGKILLed), and a *new* process, not
a worker that was already up, opens the store and resumes it. Per trial, for each system in turn
(the order alternates, so drift of the shared machine falls on both):

1. a crash child starts a run and SIGKILLs itself once step 5 is durable;
2. the parent notes the time and spawns a fresh process, which imports, opens the store as a worker
   does, resumes the run and prints the instants (``time.perf_counter``, CLOCK_MONOTONIC, which
   the parent's clock shares) at which it was imported, open, had step 6 durable, had finished.

Reported per system (medians over ``--trials``): ``open_ms`` (the store's open alone: autonomic's
``build_store`` + ``verify()``, what ``autonomic worker`` runs; LangGraph's
``PostgresSaver.from_conn_string`` / ``SqliteSaver`` + ``setup()``, as its documentation opens
it), ``first_step_ms`` (resume call -> step 6 durable, in the fresh process), ``spawn_to_open_ms``
and ``spawn_to_first_step_ms`` (from the parent's spawn: interpreter start and imports included);
and the ratio autonomic / LangGraph of each, computed in this one invocation.

Usage::

    .venv/bin/python benchmarks/fresh_resume_bench.py --store postgres \\
        --pg-url postgresql://postgres@127.0.0.1:5432/test --trials 9 [--guards]

LangGraph runs in ``benchmarks/.venv-peers`` (``benchmarks/run`` installs it).

Byte-code is compiled first (``--no-compile`` skips it), for this checkout's and the baseline's
``src`` and the virtualenv's packages: an installed package has it (pip compiles at install, as it
did LangGraph's), but ``uv sync`` leaves an editable ``src`` without it and
``PYTHONDONTWRITEBYTECODE=1`` keeps Python from caching it, and then every fresh process compiles
every module it imports - in its imports and in any step that imports a module lazily.
"""

from __future__ import annotations

import argparse
import asyncio
import compileall
import json
import os
import signal
import statistics
import subprocess
import sys
import sysconfig
import time
import uuid
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
PEER = HERE / "peers" / "langgraph_peer.py"
CHILD_TIMEOUT_S = 120.0
METRICS = ("open_ms", "first_step_ms", "spawn_to_open_ms", "spawn_to_first_step_ms")


# -- the autonomic children (this file run with --child) -------------------------------------------


def child(args: argparse.Namespace) -> None:
    sys.path.insert(0, str(HERE))
    import autonomic_bench as ab

    from autonomic import build_store
    from autonomic.engine.faults import CrashAt

    if args.store == "postgres":  # imported at the top, as LangGraph's saver is in its child
        import autonomic.adapters.store.postgres  # noqa: F401
    imported = time.perf_counter()

    ab.GUARDS = args.guards

    async def crash() -> None:
        store = build_store(args.url)
        await store.verify()
        engine = ab.engine_for(store, faults=CrashAt("step_done", ab.CRASH_AFTER))
        await engine.run_to_end(args.run_id)

    async def resume() -> dict[str, float]:
        store = build_store(args.url)
        await store.verify()  # what `autonomic worker` does on PostgreSQL before its first claim
        opened = time.perf_counter()
        probe = ab.FirstStep()
        engine = ab.engine_for(store, faults=probe)
        start = time.perf_counter()
        final = await engine.run_to_end(args.run_id)
        done = time.perf_counter()
        assert final.status.value == "COMPLETED", final.status_reason
        assert probe.at_time is not None
        await store.close()
        return {
            "imported": imported,
            "opened": opened,
            "resume": start,
            "first_step": probe.at_time,
            "done": done,
        }

    if args.child == "crash":
        asyncio.run(crash())
        raise RuntimeError("crash child survived past step 5")
    print(json.dumps(asyncio.run(resume())), flush=True)


# -- the parent ------------------------------------------------------------------------------------


def run_child(
    cmd: list[str], *, crash: bool, env: dict[str, str] | None = None
) -> dict[str, float]:
    """Run a child; a crash child must die of SIGKILL, a resume child prints its instants."""
    spawned = time.perf_counter()
    proc = subprocess.run(
        cmd, capture_output=True, text=True, timeout=CHILD_TIMEOUT_S, check=False, env=env
    )
    if crash:
        if proc.returncode != -signal.SIGKILL:
            raise RuntimeError(f"crash child exited {proc.returncode}: {proc.stderr[-2000:]}")
        return {}
    if proc.returncode != 0:
        raise RuntimeError(f"resume child exited {proc.returncode}: {proc.stderr[-2000:]}")
    times: dict[str, float] = json.loads(proc.stdout.strip().splitlines()[-1])
    return {
        "open_ms": (times["opened"] - times["imported"]) * 1000,
        "first_step_ms": (times["first_step"] - times["resume"]) * 1000,
        "spawn_to_open_ms": (times["opened"] - spawned) * 1000,
        "spawn_to_first_step_ms": (times["first_step"] - spawned) * 1000,
    }


class Autonomic:
    """This checkout's autonomic; or, with ``src``, another checkout's library (its ``src/``
    first on ``PYTHONPATH``) driven by this same harness: the "before" of a change."""

    def __init__(self, args: argparse.Namespace, src: Path | None = None) -> None:
        self.args = args
        self.url = self._fresh_store()
        self.name = "autonomic+guards" if args.guards else "autonomic"
        self.env: dict[str, str] | None = None
        if src is not None:
            self.name += "@baseline"
            self.env = dict(os.environ, PYTHONPATH=str(src.resolve() / "src"))

    def _fresh_store(self) -> str:
        sys.path.insert(0, str(HERE))
        import autonomic_bench as ab

        url = ab.fresh_url(self.args.store, self.args.workdir.resolve(), self.args.pg_url)
        asyncio.run(ab.migrate(url))
        return url

    def _cmd(self, what: str, run_id: str) -> list[str]:
        cmd = [sys.executable, __file__, "--child", what, "--url", self.url, "--run-id", run_id]
        cmd += ["--store", self.args.store] + (["--guards"] if self.args.guards else [])
        return cmd

    def trial(self) -> dict[str, float]:
        import autonomic_bench as ab

        from autonomic import build_store

        async def start() -> str:
            store = build_store(self.url)
            run = await ab.engine_for(store).start("bench", "count")
            await store.close()
            return run.id

        run_id = asyncio.run(start())
        run_child(self._cmd("crash", run_id), crash=True, env=self.env)
        return run_child(self._cmd("resume", run_id), crash=False, env=self.env)

    def cleanup(self) -> None:
        if self.url.startswith("sqlite"):
            base = self.url.removeprefix("sqlite:///")
            for suffix in ("", "-wal", "-shm"):
                Path(f"{base}{suffix}").unlink(missing_ok=True)
            return
        import psycopg

        with psycopg.connect(self.args.pg_url, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {self.url.rsplit('%3D', 1)[1]} CASCADE")


class LangGraph:
    name = "langgraph"

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.python = str(args.peers_python)
        if args.store == "sqlite":
            self.target = str(args.workdir.resolve() / f"langgraph-fresh-{os.getpid()}.sqlite")
        else:
            import psycopg
            from psycopg.conninfo import conninfo_to_dict, make_conninfo

            self.dbname = f"peer_langgraph_fresh_{os.getpid()}"
            with psycopg.connect(args.pg_url, autocommit=True) as conn:
                conn.execute(f"CREATE DATABASE {self.dbname}")
            params = conninfo_to_dict(args.pg_url) | {"dbname": self.dbname}
            self.target = make_conninfo(**params)

    def _cmd(self, flag: str, run_id: str) -> list[str]:
        cmd = [self.python, str(PEER), "--store", self.args.store, "--target", self.target]
        return [*cmd, flag, run_id]

    def trial(self) -> dict[str, float]:
        run_id = f"fresh-{uuid.uuid4().hex[:12]}"
        run_child(self._cmd("--crash-child", run_id), crash=True)
        return run_child(self._cmd("--fresh-resume", run_id), crash=False)

    def cleanup(self) -> None:
        if self.args.store == "sqlite":
            for suffix in ("", "-wal", "-shm", "-journal"):
                Path(f"{self.target}{suffix}").unlink(missing_ok=True)
            return
        import psycopg

        with psycopg.connect(self.args.pg_url, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {self.dbname} WITH (FORCE)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", choices=["sqlite", "postgres"], default="postgres")
    parser.add_argument("--pg-url", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--trials", type=int, default=9)
    parser.add_argument("--guards", action="store_true", help="runaway guards on (the default)")
    parser.add_argument("--workdir", type=Path, default=HERE / ".work")
    parser.add_argument("--peers-python", type=Path, default=HERE / ".venv-peers/bin/python")
    parser.add_argument(
        "--baseline",
        type=Path,
        help="another checkout (same schema): its library measured too, as autonomic@baseline",
    )
    parser.add_argument("--no-compile", dest="compile", action="store_false")
    parser.add_argument("--child", choices=["crash", "resume"], help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--run-id", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    args.workdir.mkdir(parents=True, exist_ok=True)
    if args.compile:
        trees = [HERE.parent / "src", Path(sysconfig.get_paths()["purelib"])]
        if args.baseline is not None:
            trees.append(args.baseline.resolve() / "src")
        for tree in trees:
            compileall.compile_dir(str(tree), quiet=2, workers=0)
    systems: list[Any] = [Autonomic(args), LangGraph(args)]
    if args.baseline is not None:
        systems.append(Autonomic(args, args.baseline))
    samples: dict[str, dict[str, list[float]]] = {s.name: {m: [] for m in METRICS} for s in systems}
    try:
        for trial in range(args.trials):
            order = systems if trial % 2 == 0 else systems[::-1]
            for system in order:
                for metric, value in system.trial().items():
                    samples[system.name][metric].append(value)
            print(f"trial {trial + 1}/{args.trials} done", file=sys.stderr, flush=True)
    finally:
        for system in systems:
            system.cleanup()
    peer = systems[1].name
    medians = {name: {m: statistics.median(v) for m, v in s.items()} for name, s in samples.items()}
    for system in systems:
        name = system.name
        row: dict[str, Any] = {"system": name, "store": args.store, "trials": args.trials}
        row |= {m: round(v, 2) for m, v in medians[name].items()}
        if name != peer:
            row |= {
                f"{m}_x_{peer}": round(v / medians[peer][m], 2) for m, v in medians[name].items()
            }
        row["load1"] = round(os.getloadavg()[0], 2)
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
