"""The escape and abuse probes: none succeeds in the namespace sandbox, and they can succeed."""

from __future__ import annotations

import asyncio
import os

import pytest

from autonomic.adapters.sandbox.namespace import NamespaceSandbox
from autonomic.ports.sandbox import Ended, Execution
from autonomic.sandbox.probe_host import HostRunner, run_probes
from autonomic.sandbox.probes import ABUSES, ESCAPES, ProbeOutcome
from autonomic.testing.sandbox import require_bwrap, sandbox_processes

# What this host's own kernel refuses even to root, so no probe can show it (kernels built
# without module or kexec support answer ENOSYS). Allowed to hold without a sandbox, only for
# that reason.
HOST_KERNEL_LACKS = {"load_kernel_module", "unload_kernel_module", "kexec"}


def test_there_are_at_least_thirty_escape_probes_and_every_abuse() -> None:
    assert len(ESCAPES) >= 30
    assert len({p.name for p in ESCAPES + ABUSES}) == len(ESCAPES) + len(ABUSES)
    assert {p.name for p in ABUSES} >= {
        "fork_bomb",
        "memory_bomb",
        "disk_fill",
        "many_fds",
        "cpu_spin",
        "sleep_forever",
        "output_flood",
    }


def _table(outcomes: list[ProbeOutcome]) -> str:
    return "\n".join(f"{o.probe}: held={o.held} {o.ended} {o.evidence}" for o in outcomes)


def test_no_probe_escapes_the_namespace_sandbox() -> None:
    require_bwrap()

    async def main() -> list[ProbeOutcome]:
        sandbox = NamespaceSandbox()
        try:
            return await run_probes(sandbox, kinds=("escape",))
        finally:
            await sandbox.close()

    outcomes = asyncio.run(main())
    assert len(outcomes) == len(ESCAPES)
    escaped = [o for o in outcomes if not o.held]
    assert escaped == [], _table(escaped)
    assert sandbox_processes() == []


def test_abuse_is_contained_for_the_right_reason_while_the_host_keeps_serving() -> None:
    require_bwrap()

    async def main() -> tuple[list[ProbeOutcome], list[bool]]:
        sandbox = NamespaceSandbox()
        served: list[bool] = []
        stop = asyncio.Event()

        async def bystander() -> None:
            while not stop.is_set():
                result = await sandbox.execute(Execution(code="print(6 * 7)"))
                served.append(result.ok and result.stdout == "42\n")

        try:
            task = asyncio.ensure_future(bystander())
            outcomes = await run_probes(sandbox, kinds=("abuse",))
            stop.set()
            await task
            return outcomes, served
        finally:
            await sandbox.close()

    outcomes, served = asyncio.run(main())
    assert len(outcomes) == len(ABUSES)
    failed = [o for o in outcomes if not o.held]
    assert failed == [], _table(failed)
    reasons = {o.probe: o.ended for o in outcomes}
    assert reasons["memory_bomb"] is Ended.MEMORY
    assert reasons["output_flood"] is Ended.OUTPUT_LIMIT
    assert reasons["sleep_forever"] is Ended.TIMEOUT
    assert reasons["cpu_spin"] is Ended.CPU
    assert len(served) >= 5
    assert all(served)
    assert sandbox_processes() == []


def test_the_escape_probes_succeed_with_no_sandbox() -> None:
    """The same probes, aimed at harmless stand-ins, run as plain python3 on the host."""
    if os.geteuid() != 0:
        pytest.skip("the privileged probes (mount, ptrace of others, modules) need root to succeed")

    async def main() -> list[ProbeOutcome]:
        return await run_probes(HostRunner(), harmless=True, kinds=("escape",))

    outcomes = asyncio.run(main())
    held = [o for o in outcomes if o.held]
    unexplained = [o for o in held if o.probe not in HOST_KERNEL_LACKS]
    assert unexplained == [], _table(unexplained)
    for o in held:
        assert "ENOSYS" in o.evidence, o
    assert len(outcomes) - len(held) >= 30
