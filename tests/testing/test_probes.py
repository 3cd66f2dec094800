"""The escape and abuse probes: none succeeds on any backend, and they can succeed.

Each backend is skipped only when its own ``doctor()`` says it cannot run here (under ``CI``
that fails instead). The microVM backend (about 2 s per execution under emulation) runs its
escape probes several at a time (``ProbePlan``); its abuse probes one at a time, since a guest
waiting for a host core still sees its clock run.
"""

from __future__ import annotations

import asyncio
import os
import re

import pytest

from autonomic.adapters.sandbox import build_sandbox
from autonomic.ports.sandbox import Ended, Execution, Sandbox
from autonomic.testing.probe_host import (
    HostRunner,
    ProbeHost,
    ProbePlan,
    plan_for,
    probe_source,
    run_probes,
)
from autonomic.testing.probes import ABUSES, ESCAPES, PROBES, ProbeOutcome
from autonomic.testing.sandbox import require_backend, sandbox_processes

# What this host's own kernel refuses even to root, so no probe can show it (kernels built
# without module or kexec support answer ENOSYS). Allowed to hold without a sandbox, only for
# that reason.
HOST_KERNEL_LACKS = {"load_kernel_module", "unload_kernel_module", "kexec"}

BACKENDS = [
    "namespace",
    "oci",
    "oci-runsc",
    pytest.param("microvm", marks=pytest.mark.microvm),
]


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


@pytest.mark.parametrize("backend", BACKENDS)
def test_no_probe_escapes(backend: str) -> None:
    require_backend(backend)

    async def main() -> list[ProbeOutcome]:
        sandbox = build_sandbox(backend)
        try:
            return await run_probes(sandbox, kinds=("escape",))
        finally:
            await sandbox.close()

    outcomes = asyncio.run(main())
    assert [o.probe for o in outcomes] == [p.name for p in ESCAPES]
    escaped = [o for o in outcomes if not o.held]
    assert escaped == [], _table(escaped)
    assert sandbox_processes() == []


def test_the_microvm_plan_raises_the_cpu_limit_only_of_probes_not_meant_to_end_on_cpu() -> None:
    """A raised CPU limit on the CPU spin asks a busy host for more of QEMU's CPU time before
    the wall limit: in CI (2 cores, 4 test workers and a bystander VM) 5 s of it did not come
    in 14.3 s and the spin ended on its wall limit. The spin keeps its own 1 s."""
    plan = plan_for("microvm")
    by_name = {p.name: p for p in ABUSES}
    spin = by_name["cpu_spin"]
    assert plan.limits_for(spin).cpu_seconds == spin.limits.cpu_seconds == 1.0
    for name in ("memory_bomb", "disk_fill", "many_fds"):
        assert plan.limits_for(by_name[name]).cpu_seconds >= plan.min_cpu_seconds > 1.0


_IN_GUEST = re.compile(r"([\d.]+) s in the guest")


@pytest.mark.parametrize("backend", BACKENDS)
def test_abuse_is_contained_for_the_right_reason_while_the_host_keeps_serving(
    backend: str,
) -> None:
    require_backend(backend)
    plan = plan_for(build_sandbox(backend).name)

    async def main() -> tuple[list[ProbeOutcome], list[bool]]:
        sandbox = build_sandbox(backend)
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
    # Each bystander run is one execution; a microVM under emulation manages fewer meanwhile.
    assert len(served) >= (5 if plan.start_allowance_s == 0 else 2)
    assert all(served)
    assert sandbox_processes() == []


@pytest.mark.microvm
def test_the_microvm_abuse_probes_end_within_limit_plus_one_second_on_the_guest_clock() -> None:
    """The host's clock carries the VM's restore and teardown; the guest's own does not.

    Only the wall limit is the guest's to keep: the CPU limit is kept on the host, on QEMU's
    CPU time (``test_microvm``: a runaway loop ends on it long before its wall limit).
    """
    require_backend("microvm")
    plan = plan_for("microvm")
    timed = [p for p in ABUSES if p.name == "sleep_forever"]

    async def main() -> list[tuple[str, float, float]]:
        sandbox = build_sandbox("microvm")
        found = []
        try:
            async with ProbeHost() as host:
                for probe in timed:
                    limits = plan.limits_for(probe)
                    code = probe_source(probe, host)
                    result = await sandbox.execute(Execution(code=code, limits=limits))
                    match = _IN_GUEST.search(result.detail)
                    assert match, result
                    found.append((probe.name, float(match.group(1)), limits.wall_seconds))
        finally:
            await sandbox.close()
        return found

    for name, in_guest, wall in asyncio.run(main()):
        assert in_guest <= wall + 1.0, (name, in_guest)


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


def test_probes_run_concurrently_still_see_every_escape() -> None:
    """The concurrent path (microVM plan) judges like the sequential one: with no sandbox the
    listener, file and syscall probes all succeed, several in flight at once."""
    if os.geteuid() != 0:
        pytest.skip("the privileged probes need root to succeed")
    names = [
        "read_shadow",
        "tcp_host_loopback",
        "udp_host_loopback",
        "unix_socket_file",
        "write_host_tmp",
        "keyctl",
        "user_namespace",
        "io_uring",
    ]

    async def main() -> list[ProbeOutcome]:
        plan = ProbePlan(escape_concurrency=4)
        runner: Sandbox = HostRunner()
        return await run_probes(runner, harmless=True, kinds=("escape",), names=names, plan=plan)

    outcomes = asyncio.run(main())
    assert sorted(o.probe for o in outcomes) == sorted(names)
    held = [o for o in outcomes if o.held]
    assert held == [], _table(held)
    assert {p.name for p in PROBES} >= set(names)
