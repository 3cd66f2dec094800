"""The OCI backend: each execution is a fresh container run by runc (or gVisor's runsc).

Stronger than the namespace backend in one respect: the runtime applies a seccomp filter, cgroup
limits and the mount table from one declarative config (``oci_bundle``), the same way Docker and
Kubernetes do. With ``runtime="runsc"`` the code talks to gVisor's user-space kernel instead of
the host's, which shrinks the kernel attack surface to a few dozen host syscalls.

Per execution: a bundle directory (config + a world-readable ``input`` directory with the
request's files), a cgroup scope holding the memory and pids limits, ``<runtime> run`` in the
foreground with piped stdio. The wall timeout and the output cap are enforced from here by
killing the container; whatever happens, the container, its cgroups and the bundle are removed
before ``execute`` returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from autonomic.adapters.sandbox.cgroup_scope import CgroupScope
from autonomic.adapters.sandbox.egress import EgressNetwork, egress_plan
from autonomic.adapters.sandbox.oci_bundle import INPUT, WORKSPACE, bundle_config, prepare_rootfs
from autonomic.adapters.sandbox.streams import (
    CappedStream,
    check_execution,
    decode,
    refused_files,
)
from autonomic.ports.sandbox import (
    Ended,
    Execution,
    Limits,
    Result,
    SandboxUnavailable,
    Usage,
)

RUNTIMES = ("runc", "runsc")
RUNSC_PIDS_HEADROOM = 256
"""Under runsc the scope also holds gVisor's own Sentry and gofer threads (about 45 measured
here: with ``pids.max`` 40 the sandbox fails to start and ``run`` exits 2 with no output). The
code's processes are tasks inside gVisor, and a fork bomb makes the Sentry start host threads
for them: with 64 spare the Sentry itself failed to start one and ``run`` exited 2 (again no
output), with 256 the bomb is ended by the memory limit (fork_bomb probe). ``processes`` is
therefore no exact bound under runsc; memory, CPU and wall time are."""
_RUNTIME_GRACE_S = 5.0
_CURRENT_NETNS = "-"
"""For ``bundle_config``: no network namespace entry, the runtime's own one is used."""
_BOOT = f'cp -R {INPUT}/. {WORKSPACE}/ && cd {WORKSPACE} && "$@"'
"""Run inside the container before the code: fill the workspace, then run the code as a child.

Not ``exec``: the container's PID 1 ignores signals it has no handler for, so code running as
PID 1 would survive the kernel's SIGXCPU. The shell stays PID 1 and reports a signal as 128+N.
"""


@dataclass
class OciSandbox:
    """Runs executions as OCI containers; ``runtime`` is ``"runc"`` or ``"runsc"`` (gVisor)."""

    runtime: str = "runc"
    python: str = "/usr/bin/python3"
    state_root: Path | None = None
    """The runtime's ``--root``; a private one per sandbox keeps ``list`` to our containers."""
    egress_uplink: str | None = None
    """The network namespace (under /run/netns) ``NetworkPolicy.ALLOWLIST`` executions reach the
    world through; the container joins a per-execution namespace routed through the same
    filtering router as the namespace backend's (``egress``)."""
    _workdir: Path | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.runtime not in RUNTIMES:
            raise SandboxUnavailable(
                f"unknown OCI runtime {self.runtime!r}", hint=f"use one of {', '.join(RUNTIMES)}"
            )

    @property
    def name(self) -> str:
        return "oci"

    def doctor(self) -> tuple[bool, str]:
        """Whether this host can run the backend, and why not (a container is actually started)."""
        return doctor(self.runtime)

    def _binary(self) -> str:
        found = shutil.which(self.runtime) or shutil.which(self.runtime, path="/usr/sbin:/sbin")
        if found is None:
            raise SandboxUnavailable(
                f"{self.runtime} is not installed",
                hint=f"apt-get install {'runc' if self.runtime == 'runc' else 'runsc'}",
            )
        if os.geteuid() != 0:
            raise SandboxUnavailable(
                "the OCI backend needs root to create containers and cgroups",
                hint="run the worker as root, or use the namespace backend",
            )
        if not Path(self.python).is_file():
            raise SandboxUnavailable(
                f"{self.python} does not exist on the host", hint="install python3 (the rootfs)"
            )
        return found

    def _ensure_workdir(self) -> Path:
        if self._workdir is None:
            self._workdir = Path(tempfile.mkdtemp(prefix="autonomic-oci-"))
            prepare_rootfs(self._workdir / "rootfs")
        return self._workdir

    def _base_argv(self, binary: str, *, network: bool = False) -> list[str]:
        root = self.state_root or (self._ensure_workdir() / "state")
        argv = [binary, "--root", str(root)]
        if self.runtime == "runsc":
            # --oci-seccomp: without it runsc ignores the bundle's seccomp profile, and ptrace,
            # unshare, perf_event_open and io_uring reached gVisor's Sentry (escape probes).
            # With an allow-list gVisor passes sockets through to the per-execution namespace
            # it is started in (--network=host there; see execute). Its own stack
            # (--network=sandbox) would be stronger, but Debian's runsc (2022) takes every
            # namespace for the root one on this kernel ("cannot run with network enabled in
            # root network namespace": /proc/sys/net/core/rmem_default is per-namespace now).
            net = "--network=host" if network else "--network=none"
            argv += [net, "--ignore-cgroups=false", "--oci-seccomp"]
        return argv

    async def execute(self, execution: Execution) -> Result:
        check_execution(execution)
        refused = refused_files(execution, f"oci:{self.runtime}", time.monotonic())
        if refused is not None:
            return refused
        allow = egress_plan(execution.limits, self.egress_uplink)
        binary = self._binary()
        workdir = self._ensure_workdir()
        cid = f"ax-{uuid.uuid4().hex[:16]}"
        bundle = workdir / cid
        limits = execution.limits
        pids = limits.processes + (RUNSC_PIDS_HEADROOM if self.runtime == "runsc" else 0)
        scope = CgroupScope(cid, memory_bytes=limits.memory_mb << 20, pids_max=pids)
        base = self._base_argv(binary, network=allow is not None)
        started = time.monotonic()
        network: EgressNetwork | None = None
        opening: asyncio.Future[None] | None = None
        try:
            if allow is not None:
                assert self.egress_uplink is not None  # egress_plan refused it otherwise
                network = EgressNetwork(self.egress_uplink, allow)
                opening = asyncio.ensure_future(asyncio.to_thread(network.open))
                await asyncio.shield(opening)
                if self.runtime == "runsc":
                    # runsc with --network=host uses the namespace it is started in: start it in
                    # the execution's own, whose only route is the filtering router.
                    nsenter = shutil.which("nsenter") or "/usr/bin/nsenter"
                    base = [nsenter, f"--net={network.sandbox_path}", "--", *base]
            try:
                scope.create()
            except OSError as exc:
                scope.remove()
                raise SandboxUnavailable(
                    f"cannot create a cgroup for the container: {exc}",
                    hint="run as root on a host with the memory and pids cgroup controllers",
                ) from exc
            netns = network.sandbox_path if network is not None else None
            if netns is not None and self.runtime == "runsc":
                netns = _CURRENT_NETNS  # runsc runs inside it already (nsenter, above)
            self._write_bundle(bundle, execution, scope.runtime_path("c"), netns)
            return await self._run(base, cid, bundle, execution, scope, started)
        finally:
            await _quiet([*base, "kill", cid, "KILL"])
            await _quiet([*base, "delete", "--force", cid])
            await scope.empty()
            scope.remove()
            shutil.rmtree(bundle, ignore_errors=True)
            if network is not None:
                # After the container and its processes are gone (as the namespace backend);
                # a build cancelled half-way is finished first, so close sees all it made.
                if opening is not None and not opening.done():
                    await asyncio.wait({opening})
                await asyncio.shield(asyncio.to_thread(network.close))

    def _write_bundle(
        self, bundle: Path, execution: Execution, cgroups_path: str, netns: str | None = None
    ) -> None:
        assert self._workdir is not None
        input_dir = bundle / "input"
        input_dir.mkdir(parents=True, mode=0o755)
        bundle.chmod(0o700)
        input_dir.chmod(0o755)  # the code's uid copies from it
        files = dict(execution.files)
        if execution.code is not None:
            files["main.py"] = execution.code.encode()
            argv = [self.python, "main.py"]
        else:
            assert execution.command is not None
            argv = list(execution.command)
        for rel, data in files.items():
            path = input_dir / rel
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
            path.write_bytes(data)
            path.chmod(0o644)
        config = bundle_config(
            rootfs=self._workdir / "rootfs",
            input_dir=input_dir,
            argv=["/bin/sh", "-c", _BOOT, "sandbox", *argv],
            limits=execution.limits,
            cgroups_path=cgroups_path,
            netns=netns,
        )
        (bundle / "config.json").write_text(json.dumps(config))

    async def _run(
        self,
        base: list[str],
        cid: str,
        bundle: Path,
        execution: Execution,
        scope: CgroupScope,
        started: float,
    ) -> Result:
        limits = execution.limits
        proc = await asyncio.create_subprocess_exec(
            *base,
            "run",
            "--bundle",
            str(bundle),
            cid,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        assert proc.stdin
        assert proc.stdout
        assert proc.stderr
        overflow = asyncio.Event()
        out = CappedStream(proc.stdout, limits.output_bytes, overflow)
        err = CappedStream(proc.stderr, limits.output_bytes, overflow)
        feeder = asyncio.create_task(_feed(proc.stdin, execution.stdin))
        readers = asyncio.gather(out.drain(), err.drain())
        waiter = asyncio.create_task(proc.wait())
        overflow_wait = asyncio.create_task(overflow.wait())
        # runc: the rlimit stops the code at the limit and this is a backstop; gVisor does not
        # deliver RLIMIT_CPU, so for runsc this is the enforcement (sandbox kernel CPU included).
        # The grace stays under 1 s: the probes hold a CPU end to limit + 1 s across the scope.
        grace = 0.5 if self.runtime == "runc" else 0.0
        cpu_watch = asyncio.create_task(_cpu_exhausted(scope, limits.cpu_seconds + grace))
        ended: Ended | None = None
        try:
            done, _ = await asyncio.wait(
                {waiter, overflow_wait, cpu_watch},
                timeout=limits.wall_seconds,
                return_when=asyncio.FIRST_COMPLETED,
            )
            if waiter not in done:
                if overflow.is_set():
                    ended = Ended.OUTPUT_LIMIT
                elif cpu_watch in done:
                    ended = Ended.CPU
                else:
                    ended = Ended.TIMEOUT
                await _quiet([*base, "kill", cid, "KILL"])
                # The runtime reaps the container's init and exits by itself; killing the runtime
                # too would leave that init a zombie of the host's PID 1. Only if it hangs.
                done, _ = await asyncio.wait({waiter}, timeout=_RUNTIME_GRACE_S)
                if not done:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
            await waiter
            await readers
        finally:
            overflow_wait.cancel()
            cpu_watch.cancel()
            feeder.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                await feeder
        duration = time.monotonic() - started
        acc = scope.read()
        code = proc.returncode
        exit_code: int | None = code
        detail = ""
        if ended is None:
            ended, exit_code, detail = _classify(
                code, limits, acc.oom_kills, acc.memory_failures, acc.cpu_seconds
            )
            if overflow.is_set():
                ended = Ended.OUTPUT_LIMIT
        if ended is Ended.TIMEOUT:
            exit_code, detail = None, f"wall time limit of {limits.wall_seconds:g} s reached"
        elif ended is Ended.CPU and exit_code is not None:
            exit_code = None
            detail = f"CPU time limit of {limits.cpu_seconds:g} s reached; container killed"
        elif ended is Ended.OUTPUT_LIMIT:
            exit_code = None
            detail = f"output over {limits.output_bytes} bytes on one stream; container killed"
        return Result(
            ended=ended,
            exit_code=exit_code,
            stdout=decode(out.data),
            stderr=decode(err.data),
            stdout_truncated=out.truncated,
            stderr_truncated=err.truncated,
            duration_s=duration,
            usage=Usage(cpu_seconds=acc.cpu_seconds, max_rss_mb=acc.max_rss_mb),
            backend=f"oci:{self.runtime}",
            detail=detail,
        )

    async def settle(self) -> None:
        """Nothing to wait for: every container is gone when ``execute`` returns."""

    async def close(self) -> None:
        """Remove the shared rootfs and state directory (no container outlives ``execute``)."""
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None


def _classify(
    code: int | None, limits: Limits, oom_kills: int, memory_failures: int, cpu_seconds: float
) -> tuple[Ended, int | None, str]:
    """Map the runtime's exit status (128+N for a signal) and the cgroup's records to an end.

    On cgroup v1 the kernel counts an OOM kill in the victim's own cgroup, which the runtime has
    already removed; a SIGKILL we did not send while the scope was failing charges at its limit
    is that OOM kill.
    """
    if code is None:
        return Ended.KILLED, None, "the runtime's exit status is unknown"
    if oom_kills or (code == 128 + signal.SIGKILL and memory_failures):
        return Ended.MEMORY, None, f"memory limit of {limits.memory_mb} MiB reached (OOM kill)"
    if code > 128:
        sig = code - 128
        cpu_limit = max(1, math.ceil(limits.cpu_seconds))
        if sig == signal.SIGXCPU or (sig == signal.SIGKILL and cpu_seconds >= cpu_limit):
            return Ended.CPU, None, f"CPU time limit of {limits.cpu_seconds:g} s reached"
        name = signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else str(sig)
        return Ended.KILLED, None, f"killed by signal {name}"
    return Ended.EXIT, code, ""


async def _cpu_exhausted(scope: CgroupScope, limit_s: float) -> None:
    """Return once the scope has used ``limit_s`` CPU seconds (checked every 50 ms).

    Polling, because cgroups have no CPU-threshold notification; the wall-clock wait is the
    other half of the ``asyncio.wait`` this runs in.
    """
    while True:
        if scope.read().cpu_seconds >= limit_s:
            return
        await asyncio.sleep(0.05)


async def _feed(stdin: asyncio.StreamWriter, data: bytes) -> None:
    with contextlib.suppress(ConnectionError):
        if data:
            stdin.write(data)
            await stdin.drain()
        stdin.close()


async def _quiet(argv: list[str]) -> None:
    """Run a runtime housekeeping command, ignoring its output and failure (already gone)."""
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    await proc.wait()


def doctor(runtime: str = "runc") -> tuple[bool, str]:
    """Start one container running ``print(1)`` and say whether it worked, and why not."""

    async def probe() -> tuple[bool, str]:
        box = OciSandbox(runtime=runtime)
        try:
            result = await box.execute(Execution(code="print(1)", limits=Limits(wall_seconds=20)))
        except SandboxUnavailable as exc:
            return False, str(exc)
        finally:
            await box.close()
        if result.ok and result.stdout.strip() == "1":
            return True, f"{runtime} ran a container with seccomp and cgroup limits"
        return False, f"{runtime} failed: {result.ended} {result.detail} {result.stderr[-300:]}"

    return asyncio.run(probe())
