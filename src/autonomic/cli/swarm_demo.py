"""``autonomic demo --scenario swarm``: the seed's code-audit swarm, in three parts, offline.

1. **The audit.** A coordinator (driven here) hands "audit this repository" to a code analyzer and
   then every file at once to a security auditor; the auditor runs in two ``autonomic worker``
   processes, which audit in parallel. Once both are auditing, the demo SIGKILLs the one that
   started first; its lease expires, the other worker takes the child run over and finishes, and
   every subtask's effect lands once.
2. **Ping-pong.** A writer and a reviewer hand a lint fix back and forth; the delegation guards
   refuse the third hand-off, journaled.
3. **A runaway chain.** 47 agents each handing the task to the next; the depth guard stops it at
   the configured depth.

Exits 0 when all three came out as they should (``examples/swarm``, docs/multi-agent.md)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from rich.markup import escape

from autonomic.cli.common import Settings, acting, build_engine, open_store, out, run_coroutine
from autonomic.cli.exit_codes import ExitCode
from autonomic.cli.invocation import command
from autonomic.cli.tree import print_tree, run_tree
from autonomic.core.entries import DecisionRecord
from autonomic.core.principal import DEFAULT_TENANT
from autonomic.core.run import Run, RunStatus

if TYPE_CHECKING:
    from autonomic.engine.executor import Engine
    from autonomic.ports.store import Store

AGENTS = "autonomic.examples.swarm.agent:agents"
AUDITORS = "autonomic.examples.swarm.agent:auditors"
LEASE_TTL = 2.0
"""Seconds a worker's lease lasts: how soon a killed auditor's child run can be taken over."""
MAX_DEPTH = 5
"""The delegation depth the demo configures (the runaway chain aims for 47)."""
PATIENCE = 150.0
"""Seconds the audit may take before the demo gives up (it takes a few on an idle machine)."""
LOCAL = ("coordinator", "code-analyzer")
"""The agents this process drives; the security auditor runs in the worker processes."""


def demo_swarm(settings: Settings, workdir: Path) -> ExitCode:
    """The three parts, each told as it ends; ``OK`` when every outcome is the expected one."""
    from autonomic.engine.executor import new_run_id
    from autonomic.examples.swarm.agent import write_repository

    base = (workdir / f"swarm-{new_run_id()}").resolve()
    repo = write_repository(base)
    out.print(
        "[bold]autonomic demo --scenario swarm[/]: a coordinator audits a repository with a code "
        "analyzer and a security auditor (two worker processes, one killed mid-task); then a "
        "writer/reviewer ping-pong and a 47-level delegation chain meet the delegation guards.\n"
        f"database {escape(_shown(settings.db))}, repository {escape(str(repo))}"
    )

    async def go() -> list[bool]:
        from autonomic.governance.runaway.delegation import DelegationPolicy

        store = await open_store(settings.db)
        try:
            engine = build_engine(
                store,
                [AGENTS],
                settings.policy,
                lease_ttl=LEASE_TTL,
                delegation=DelegationPolicy(max_depth=MAX_DEPTH),
            )
            audited = await _audit(settings, store, engine, repo, base)
            bounced = await _ping_pong(store, engine)
            stopped = await _chain(store, engine)
            return [audited, bounced, stopped]
        finally:
            await store.close()

    held = run_coroutine(go)
    parts = ("the audit", "the ping-pong", "the runaway chain")
    out.print("")
    for part, ok in zip(parts, held, strict=True):
        out.print(f"{part}: " + ("[green]as expected[/]" if ok else "[red]NOT as expected[/]"))
    return ExitCode.OK if all(held) else ExitCode.ERROR


# -- part 1: the audit ----------------------------------------------------------------------------


def _auditor(settings: Settings, base: Path, n: int) -> subprocess.Popen[bytes]:
    """One ``autonomic worker`` process driving only the security auditor."""
    with open(base / f"auditor-{n}.log", "wb") as log:  # the process keeps its own copy
        return subprocess.Popen(  # noqa: S603 - our own CLI, fixed argv
            [
                sys.executable,
                "-m",
                "autonomic.cli",
                "worker",
                "--agent",
                AUDITORS,
                "--lease-ttl",
                str(LEASE_TTL),
                "--concurrency",
                "1",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=os.environ | {"AUTONOMIC_DB": settings.db},  # not in argv: ps shows argv
        )


async def _audit(settings: Settings, store: Store, engine: Engine, repo: Path, base: Path) -> bool:
    from autonomic.examples.swarm.agent import AUDIT, AUDIT_HOLD, REPOSITORY, attempts, effects

    out.print("\n[bold]1. the audit[/]")
    workers = [_auditor(settings, base, n) for n in (1, 2)]
    names = {w.pid: f"auditor-{n}" for n, w in enumerate(workers, start=1)} | {os.getpid(): "demo"}
    for w in workers:
        out.print(f"started auditor-{names[w.pid][-1]}: autonomic worker (pid {w.pid})")
    killed: int | None = None
    killed_file = ""
    first_busy: float | None = None
    try:
        root = await engine.start(
            "coordinator",
            f"audit this repository: {repo}",
            requester=acting(None, DEFAULT_TENANT),
        )
        out.print(f"coordinator run {root.id}: audit this repository")
        deadline = time.monotonic() + PATIENCE
        run: Run = root
        while time.monotonic() < deadline:
            run = await store.get_run(root.id)
            if run.status.terminal or run.status is RunStatus.SUSPENDED:
                break
            progressed = False
            for r in [run, *await store.children(root.id)]:
                if r.agent in LOCAL and r.status in (RunStatus.PENDING, RunStatus.RUNNING):
                    claimed = await engine.claim(r.id, take_over_dead=False)
                    if claimed is not None:
                        await engine.drive(claimed)
                        progressed = True
            if killed is None:
                # audits under way in the workers (started, effect not yet applied): once both
                # workers audit at the same moment (or one has been at it for a while), kill the
                # one that started first, in the middle of its audit
                done = {e["key"] for e in effects(repo)}
                busy = [
                    a for a in attempts(repo)
                    if a["tool"] == "audit_file" and a["key"] not in done
                    and a["pid"] in names and a["pid"] != os.getpid()
                ]  # fmt: skip
                if busy and first_busy is None:
                    first_busy = time.monotonic()
                together = {a["pid"]: a["file"] for a in busy}
                waited = first_busy is not None and time.monotonic() - first_busy > AUDIT_HOLD / 2
                if len(together) >= 2 or (busy and waited):
                    if len(together) >= 2:
                        out.print(
                            "auditing at the same moment: "
                            + ", ".join(f"{names[p]} {f}" for p, f in sorted(together.items()))
                        )
                    killed, killed_file = busy[0]["pid"], busy[0]["file"]
                    os.kill(killed, signal.SIGKILL)
                    out.print(
                        f"[bold red]SIGKILL[/] {names[killed]} (pid {killed}) in the middle of "
                        f"its audit of {killed_file}: its child run is left RUNNING, leased to "
                        f"a dead process for up to {LEASE_TTL:g}s"
                    )
            if all(w.poll() is not None for w in workers):
                out.print(
                    f"[red]both auditor workers exited[/] (their output: {escape(str(base))}/"
                    "auditor-N.log); the audit cannot go on"
                )
                break
            if not progressed:
                await asyncio.sleep(0.05)
    finally:
        for w in workers:
            if w.poll() is None:
                w.send_signal(signal.SIGTERM)
        for w in workers:
            try:
                await asyncio.to_thread(w.wait, 30)
            except subprocess.TimeoutExpired:
                w.kill()
                await asyncio.to_thread(w.wait)

    run = await store.get_run(root.id)
    children = await store.children(root.id)
    tree = await run_tree(store, root.id)
    out.print(f"coordinator {run.status.value}: {escape(str(run.output or run.status_reason))}")
    print_tree(out, tree)
    tried, applied = attempts(repo), effects(repo)
    out.print("which process did what:")
    for a in tried:
        fate = ""
        if a["pid"] == killed and not any(
            e["key"] == a["key"] and e["pid"] == killed for e in applied
        ):
            fate = " - killed before it finished"
        what = "analyzed the repository" if a["tool"] == "analyze_repo" else f"audited {a['file']}"
        out.print(f"  {names.get(a['pid'], 'pid')} (pid {a['pid']}) {what}{fate}")
    keys = [e["key"] for e in applied]
    out.print(
        f"effects: {len(applied)} applied for {len(tried)} executions, one per subtask "
        f"(the ledger in {escape(str(base / 'effects.db'))})"
    )
    audits = [c for c in children if c.capability == AUDIT]
    files = sorted(str(c.input.get("task", {}).get("file")) for c in audits)
    holds = (
        run.status is RunStatus.COMPLETED
        and killed is not None
        and all(c.status is RunStatus.COMPLETED for c in children)
        and len(children) == 1 + len(REPOSITORY)
        and files == sorted(REPOSITORY)
        and len(keys) == len(set(keys)) == len(children)
    )
    if killed is not None:
        survivor = next((n for p, n in names.items() if p not in (killed, os.getpid())), "")
        redone = [a for a in tried if a["file"] == killed_file and a["pid"] != killed]
        out.print(
            f"{survivor} took over the audit of {killed_file} after the lease expired"
            if redone
            else f"the audit of {killed_file} had finished before the kill landed"
        )
    out.print(
        f"the tree again: {escape(command(settings.db, 'show', root.id))}\n"
        f"the workers' output: {escape(str(base))}/auditor-1.log, auditor-2.log"
    )
    return holds


# -- part 2: ping-pong ----------------------------------------------------------------------------


async def _ping_pong(store: Store, engine: Engine) -> bool:
    out.print("\n[bold]2. the lint ping-pong[/]")
    root: Run = await engine.run(
        "writer", "Write slugify() in text.py", requester=acting(None, DEFAULT_TENANT)
    )
    tree = await run_tree(store, root.id)
    out.print(f"writer run {root.id} {root.status.value}")
    print_tree(out, tree)
    stopped = [n for n in tree if n["status"] == RunStatus.SUSPENDED.value]
    codes = await _refusal(store, stopped[0]["id"]) if len(stopped) == 1 else []
    return (
        len(tree) <= 3  # stopped within three hand-offs
        and len(stopped) == 1
        and "delegation.ping_pong" in codes
    )


async def _refusal(store: Store, run_id: str) -> list[str]:
    """Print the delegation gate's journaled refusal in ``run_id``; the guards' codes."""
    refusals = [
        (e.seq, e.body)
        for e in await store.load_journal(run_id)
        if isinstance(e.body, DecisionRecord) and e.body.gate == "delegation"
    ]
    if not refusals:
        out.print(f"[red]no journaled refusal in {run_id}[/]")
        return []
    seq, decision = refusals[-1]
    findings = decision.evidence.get("findings") or [
        {"code": decision.evidence.get("code"), "reason": decision.explanation}
    ]
    out.print(f"the guard refused, journaled in {run_id} (seq {seq}):")
    for f in findings:
        out.print(f'  [bold]{escape(str(f["code"]))}[/]: "{escape(str(f["reason"]))}"')
    return [str(f["code"]) for f in findings]


# -- part 3: the runaway chain --------------------------------------------------------------------


async def _chain(store: Store, engine: Engine) -> bool:
    from autonomic.examples.swarm.agent import CHAIN_LEVELS

    out.print(f"\n[bold]3. the runaway chain[/] (aiming for {CHAIN_LEVELS} levels)")
    root: Run = await engine.run(
        "level-0", "Audit the payments service", requester=acting(None, DEFAULT_TENANT)
    )
    tree = await run_tree(store, root.id)
    out.print(f"level-0 run {root.id} {root.status.value}")
    print_tree(out, tree)
    deepest = max((n["depth"] for n in tree), default=0)
    stopped = [n for n in tree if n["status"] == RunStatus.SUSPENDED.value]
    codes = await _refusal(store, stopped[0]["id"]) if len(stopped) == 1 else []
    out.print(f"stopped at depth {deepest} of {CHAIN_LEVELS} (configured max_depth {MAX_DEPTH})")
    return deepest == MAX_DEPTH == len(tree) and "delegation.depth" in codes


def _shown(db: str) -> str:
    from autonomic.adapters.store.rows import redact_url

    return redact_url(db)
