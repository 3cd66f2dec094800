"""The microVM backend: each execution gets its own kernel, in a QEMU ``-M microvm`` guest.

The strongest boundary of the three backends: the code shares no kernel with the host, only a
small set of emulated devices (two virtio-blk drives and a serial port; no network device unless
the execution has an egress allow-list: then one virtio-net device on a tap inside the
execution's own network namespace, whose only way out is the filtering router of ``egress``).

Protocol, one execution per VM (guest side: ``/sbin/autonomic-init`` in ``autonomic.adapters.sandbox.image``):

1. The host writes a tar onto a fresh 64 MiB *workspace drive*: the files (``ws/``), the code,
   its stdin, its argv and the limits (``.sandbox/``).
2. The guest, booted or restored from a snapshot, has a pre-warmed Python runner
   (``autonomic.adapters.sandbox.guest_runner``) blocked reading its serial line; the host writes ``go``.
   The runner reseeds the guest's CRNG with bytes from the host (a restored VM would otherwise
   repeat the snapshot's random state), unpacks the files into a size-capped tmpfs, forks the
   code into a cgroup (memory, pids) with rlimits (CPU, file size) as uid 65534, keeps
   ``output_bytes + 1`` of each stream, enforces the wall limit, then writes
   ``status``/``stdout``/``stderr`` back onto the workspace drive as a tar; PID 1 reboots, which
   ends QEMU.
3. The host parses that tar (untrusted: sizes capped, nothing extracted to disk) into a Result.
   The host also kills QEMU if the whole thing overruns the wall limit plus a start-up allowance.

The CPU limit is kept by the host, on QEMU's own CPU time counted from ``go``: a guest cannot
tell the time its virtual CPU waited for a host core from time it ran (under TCG there is no
steal clock), so on a busy host its own accounting charged that wait to the code and killed
code that had hardly run. The host's count is the CPU the VM really used; what an empty
execution costs after ``go`` (unpacking, forking, the first run through cold emulated code,
packing the result) is measured once per snapshot and machine (``start_cpu_s``) and added, so
the restore is never charged to the code either. The guest's own ``RLIMIT_CPU`` stays, as a
backstop set beyond the wall limit (``guest_cpu_backstop``).

Fast start: the first execution boots a VM whose RAM is a file mapped shared, lets it reach the
``READY`` point, stops it and saves the device state with QEMU's ``x-ignore-shared`` migration
(so the RAM stays in the file, not the stream). Every later execution starts QEMU with the same
RAM file mapped *private* (copy-on-write) and ``-incoming`` from the saved state: the guest
resumes at ``READY`` without booting, and nothing it does reaches the snapshot.

KVM is used when a KVM guest actually boots on this host (tried once and remembered); otherwise
TCG emulation. ``Result.backend`` says which (``microvm:kvm`` / ``microvm:tcg``).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import shlex
import shutil
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO

from autonomic.adapters.sandbox.egress import EgressNetwork, egress_plan
from autonomic.adapters.sandbox.image import Image, image_for
from autonomic.adapters.sandbox.qmp import Qmp, listening_socket
from autonomic.adapters.sandbox.streams import (
    check_execution,
    decode,
    refused_files,
)
from autonomic.adapters.sandbox.vm_config import (
    GUEST_MAC,
    BootSource,
    Drive,
    MachineConfig,
    VmConfig,
    qemu_argv,
)
from autonomic.adapters.sandbox.vm_workspace import (
    WORKSPACE_DISK_BYTES,
    bare_result,
    check_fits,
    console_tail,
    memory_cap_mb,
    read_result,
    write_workspace,
)
from autonomic.ports.sandbox import (
    Ended,
    Execution,
    Limits,
    Result,
    SandboxUnavailable,
    Usage,
)

READY = b"AUTONOMIC-READY"
BOOT_TIMEOUT_S = 120.0
"""Cold boot to READY; generous because TCG on a loaded 2-core host is slow (~4-8 s measured,
over 60 s with two CPU hogs and other test runs beside it)."""
START_ALLOWANCE_S = 20.0
"""Added to the wall limit for the host-side kill: restore, unpack and pack happen outside it."""
CPU_POLL_S = 0.1
"""How often the host reads QEMU's CPU time while the code runs (the overshoot of a kill)."""
_CLK_TCK = os.sysconf("SC_CLK_TCK")
_START_CPU: dict[tuple[str, str, bool], float] = {}
"""Host CPU seconds of an empty execution after ``go``, per (image, accelerator, snapshot)."""
_SERIAL_KEEP = 16_384
_IGNORE_SHARED = [{"capability": "x-ignore-shared", "state": True}]
"""Migrate device state only: the RAM is the snapshot file itself."""


def _tsc_khz() -> int | None:
    """The host TSC rate, which a TCG guest's TSC runs at (it cannot calibrate it itself)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("cpu MHz"):
                return int(float(line.split(":")[1]) * 1000)
    except (OSError, ValueError):
        return None
    return None


def process_cpu_s(pid: int) -> float | None:
    """User + system CPU time of a process and all its threads, in seconds (None once gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


@dataclass
class _Run:
    """One QEMU process and what came out of its serial line."""

    proc: asyncio.subprocess.Process
    log: IO[bytes]
    serial: bytearray = field(default_factory=bytearray)
    stderr_tail: bytes = b""

    def why(self) -> str:
        """The last lines of QEMU's stderr, or of the guest's console."""
        if not self.log.closed:
            self.log.seek(0)
            self.stderr_tail = self.log.read()[-600:]
        err = decode(self.stderr_tail).strip()
        return err.replace("\n", " | ") if err else console_tail(self.serial)

    async def wait_ready(self, limit_s: float) -> bool:
        assert self.proc.stdout is not None
        try:
            async with asyncio.timeout(limit_s):
                while READY not in self.serial:
                    chunk = await self.proc.stdout.read(4096)
                    if not chunk:
                        return False
                    self.serial += chunk
        except TimeoutError:
            return False
        return True

    async def go(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"go\n")
        await self.proc.stdin.drain()

    async def drain_serial(self) -> None:
        assert self.proc.stdout is not None
        while chunk := await self.proc.stdout.read(4096):
            self.serial += chunk
            del self.serial[:-_SERIAL_KEEP]

    async def kill(self) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
        await self.proc.wait()
        if not self.log.closed:
            self.why()
            self.log.close()


@dataclass
class MicroVmSandbox:
    """Runs each execution in a fresh microVM; see the module docstring for the protocol."""

    snapshot: bool = True
    """Start from a RAM snapshot (copy-on-write) instead of booting; the first call builds it."""
    accel: str | None = None
    """``"kvm"`` or ``"tcg"``; ``None`` tries KVM once and falls back to TCG."""
    machine: MachineConfig = field(default_factory=MachineConfig)
    image: Image = field(default_factory=image_for)
    qemu: str = "qemu-system-x86_64"
    egress_uplink: str | None = None
    """The network namespace (under /run/netns) ``NetworkPolicy.ALLOWLIST`` executions reach the
    world through; see ``egress`` (the VM's tap is bridged into the execution's namespace)."""
    _lock: asyncio.Lock | None = field(default=None, init=False, repr=False)
    _calibrating: asyncio.Lock | None = field(default=None, init=False, repr=False)

    @property
    def name(self) -> str:
        return "microvm"

    def doctor(self) -> tuple[bool, str]:
        """Boot one VM and run ``print(1)``; say which accelerator works, or why nothing does."""
        return doctor(self)

    # -- configuration -------------------------------------------------------------------

    def vm_config(self, workspace: Path, *, network: bool = False) -> VmConfig:
        """The Firecracker-layout config of one VM whose workspace drive is ``workspace``; with
        ``network``, one NIC on the tap ``egress`` makes in the execution's namespace."""
        nics = (
            ({"iface_id": "eth0", "host_dev_name": EgressNetwork.TAP, "guest_mac": GUEST_MAC},)
            if network
            else ()
        )
        return VmConfig(
            network_interfaces=nics,
            boot_source=BootSource(
                kernel_image_path=str(self.image.kernel), initrd_path=str(self.image.initrd)
            ),
            drives=(
                Drive("rootfs", str(self.image.rootfs), is_root_device=True, is_read_only=True),
                Drive("workspace", str(workspace)),
            ),
            machine_config=self.machine,
        )

    def _binary(self) -> str:
        found = shutil.which(self.qemu)
        if found is None:
            raise SandboxUnavailable(
                f"{self.qemu} is not installed", hint="apt-get install qemu-system-x86"
            )
        if not self.image.complete():
            raise SandboxUnavailable(
                f"the microVM image is not built ({self.image.directory})",
                hint="run scripts/build-microvm-image (python -m autonomic.adapters.sandbox.image)",
            )
        return found

    async def _spawn(
        self, argv: list[str], pass_fds: tuple[int, ...] = (), netns: str | None = None
    ) -> _Run:
        """Start QEMU (inside ``netns``, where its tap is, if given); its own complaints go to a
        file so a failure can say what they were."""
        if netns is not None:
            argv = [shutil.which("nsenter") or "/usr/bin/nsenter", f"--net={netns}", "--", *argv]
        log = tempfile.TemporaryFile()  # noqa: SIM115 - closed by _Run.kill
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                pass_fds=pass_fds,
                start_new_session=True,
            )
        except BaseException:
            log.close()
            raise
        return _Run(proc, log=log)

    async def _accel(self, qemu: str) -> str:
        """KVM if a KVM guest reaches READY here (remembered per image), else TCG."""
        if self.accel:
            return self.accel
        marker = self.image.directory / "accel.json"
        with contextlib.suppress(OSError, ValueError, KeyError):
            found: str = json.loads(marker.read_text())["accel"]
            self.accel = found
            return found
        chosen = "tcg"
        if os.access("/dev/kvm", os.R_OK | os.W_OK):
            with tempfile.TemporaryDirectory(prefix="autonomic-vm-") as tmp:
                disk = Path(tmp) / "ws.img"
                write_workspace(disk, Execution(code="pass"))
                argv = qemu_argv(self.vm_config(disk), qemu=qemu, accel="kvm", tsc_khz=None)
                run = await self._spawn(argv)
                try:
                    if await run.wait_ready(20.0):
                        chosen = "kvm"
                finally:
                    await run.kill()
        marker.write_text(json.dumps({"accel": chosen}))
        self.accel = chosen
        return chosen

    # -- snapshot ------------------------------------------------------------------------

    def _snapshot_dir(self, accel: str, network: bool = False) -> Path:
        m = self.machine
        net = "-net" if network else ""
        return self.image.directory / f"snapshot-{accel}-{m.vcpu_count}cpu-{m.mem_size_mib}m{net}"

    async def _ensure_snapshot(self, qemu: str, accel: str, network: bool = False) -> Path:
        """The snapshot directory (``ram``, ``state``), made once per machine, accelerator and
        device set (a VM with a NIC restores only from a snapshot that had one)."""
        final = self._snapshot_dir(accel, network)
        if (final / "state").is_file():
            return final
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock, _file_lock(self.image.directory / "snapshot.lock"):
            if (final / "state").is_file():
                return final
            work = Path(tempfile.mkdtemp(dir=self.image.directory, prefix=".snap-"))
            try:
                await self._take_snapshot(qemu, accel, work, network)
                await asyncio.to_thread(_publish, work, final)
            finally:
                shutil.rmtree(work, ignore_errors=True)
        return final

    async def _take_snapshot(self, qemu: str, accel: str, work: Path, network: bool) -> None:
        disk = work / "ws.img"
        disk.write_bytes(b"")
        os.truncate(disk, WORKSPACE_DISK_BYTES)
        with tempfile.TemporaryDirectory(prefix="autonomic-qmp-") as sockdir:
            sock_path = Path(sockdir) / "qmp.sock"
            sock = listening_socket(sock_path)
            try:
                argv = qemu_argv(
                    self.vm_config(disk, network=network),
                    qemu=qemu,
                    accel=accel,
                    tsc_khz=_tsc_khz(),
                    memory_file=work / "ram",
                    share_memory=True,
                    qmp_fd=sock.fileno(),
                    detached_nics=True,  # the NIC's device state, on no network at all
                )
                run = await self._spawn(argv, pass_fds=(sock.fileno(),))
            finally:
                sock.close()
            try:
                if not await run.wait_ready(BOOT_TIMEOUT_S):
                    raise SandboxUnavailable(
                        f"the microVM did not boot ({accel}): {run.why()}",
                        hint="rebuild the image (scripts/build-microvm-image --force)",
                    )
                qmp = await Qmp.connect(sock_path)
                try:
                    await qmp.execute("stop")
                    await qmp.execute("migrate-set-capabilities", capabilities=_IGNORE_SHARED)
                    state = shlex.quote(str(work / "state"))
                    await qmp.execute("migrate", uri=f"exec:cat > {state}")
                    await _wait_migration(qmp)
                    await qmp.execute("quit")
                finally:
                    await qmp.close()
                await run.proc.wait()
            finally:
                await run.kill()

    # -- execution -----------------------------------------------------------------------

    async def execute(self, execution: Execution) -> Result:
        check_execution(execution)
        allow = egress_plan(execution.limits, self.egress_uplink)
        refused = refused_files(execution, f"microvm:{self.accel or 'tcg'}", time.monotonic())
        if refused is not None:
            return refused
        check_fits(execution)
        qemu = self._binary()
        accel = await self._accel(qemu)
        start_cpu = await self.start_cpu_s()  # once per process: not this execution's time
        if allow is None:
            return await self._execute(qemu, accel, execution, time.monotonic(), start_cpu)
        assert self.egress_uplink is not None  # egress_plan refused it otherwise
        network = EgressNetwork(self.egress_uplink, allow, tap=True)
        opening = asyncio.ensure_future(asyncio.to_thread(network.open))
        try:
            await asyncio.shield(opening)
            return await self._execute(
                qemu, accel, execution, time.monotonic(), start_cpu, network=network
            )
        finally:
            # After QEMU is gone (``_execute`` kills it); a cancelled build is finished first.
            if not opening.done():
                await asyncio.wait({opening})
            await asyncio.shield(asyncio.to_thread(network.close))

    async def start_cpu_s(self) -> float:
        """Host CPU seconds an empty execution costs after ``go``: never charged to the code.

        Measured once per image, accelerator and start mode in this process (one extra VM), on
        QEMU's CPU time, which a busy host does not inflate (the guest's own clock would).
        """
        qemu = self._binary()
        accel = await self._accel(qemu)
        key = (str(self.image.directory), accel, self.snapshot)
        if key in _START_CPU:
            return _START_CPU[key]
        if self._calibrating is None:
            self._calibrating = asyncio.Lock()
        async with self._calibrating:
            if key not in _START_CPU:
                empty = Execution(code="pass", limits=Limits(wall_seconds=60, cpu_seconds=60))
                cost: list[float] = []
                await self._execute(qemu, accel, empty, time.monotonic(), None, cost)
                _START_CPU[key] = cost[0] if cost else 0.0
        return _START_CPU[key]

    async def _execute(
        self,
        qemu: str,
        accel: str,
        execution: Execution,
        started: float,
        start_cpu: float | None,
        cost: list[float] | None = None,
        network: EgressNetwork | None = None,
    ) -> Result:
        """One VM for ``execution``; ``start_cpu`` None runs it unwatched (the calibration)."""
        net = network is not None
        snap = await self._ensure_snapshot(qemu, accel, net) if self.snapshot else None
        with tempfile.TemporaryDirectory(prefix="autonomic-vm-") as tmp:
            work = Path(tmp)
            disk = work / "ws.img"
            guest_net = network.guest_network if network is not None else ""
            write_workspace(disk, execution, self.machine, guest_net)
            try:
                run = await self._start(qemu, accel, disk, snap, work, network)
            except SandboxUnavailable:
                if snap is not None:
                    # A snapshot from another QEMU build or kernel does not load: take a new one.
                    await asyncio.to_thread(shutil.rmtree, snap, True)
                    snap = await self._ensure_snapshot(qemu, accel, net)
                # A cold boot under emulation on a very busy host once stalled early (console
                # last said "PCI: Fatal: No config space access function found"): once more.
                run = await self._start(qemu, accel, disk, snap, work, network)
            mode = "snapshot restore" if snap else "cold boot"
            watch = _CpuWatch(run, execution.limits.cpu_seconds, start_cpu)
            try:
                deadline = execution.limits.wall_seconds + START_ALLOWANCE_S
                try:
                    async with asyncio.timeout(deadline):
                        await asyncio.gather(run.drain_serial(), watch.keep())
                        await run.proc.wait()
                except TimeoutError:
                    await run.kill()
                    return bare_result(
                        Ended.TIMEOUT,
                        started,
                        accel,
                        f"the VM overran {deadline:g} s and was killed by the host",
                    )
            finally:
                await run.kill()
            if cost is not None:
                cost.append(watch.used_s())
            if watch.exceeded:
                return replace(
                    bare_result(Ended.CPU, started, accel, watch.detail(accel, mode)),
                    usage=Usage(cpu_seconds=watch.code_cpu_s()),
                )
            memory_mb = memory_cap_mb(execution.limits, self.machine)
            return read_result(disk, execution.limits, memory_mb, started, accel, mode, run.serial)

    async def _start(
        self,
        qemu: str,
        accel: str,
        disk: Path,
        snap: Path | None,
        work: Path,
        network: EgressNetwork | None = None,
    ) -> _Run:
        config = self.vm_config(disk, network=network is not None)
        netns = network.sandbox_path if network is not None else None
        if snap is None:
            argv = qemu_argv(config, qemu=qemu, accel=accel, tsc_khz=_tsc_khz())
            run = await self._spawn(argv, netns=netns)
            ok = await run.wait_ready(BOOT_TIMEOUT_S)
        else:
            sock = listening_socket(work / "qmp.sock")
            try:
                argv = qemu_argv(
                    config,
                    qemu=qemu,
                    accel=accel,
                    tsc_khz=_tsc_khz(),
                    memory_file=snap / "ram",
                    share_memory=False,
                    qmp_fd=sock.fileno(),
                    incoming="defer",
                )
                run = await self._spawn(argv, pass_fds=(sock.fileno(),), netns=netns)
            finally:
                sock.close()
            try:
                async with asyncio.timeout(BOOT_TIMEOUT_S):
                    qmp = await Qmp.connect(work / "qmp.sock")
                    try:
                        caps = [*_IGNORE_SHARED, {"capability": "events", "state": True}]
                        await qmp.execute("migrate-set-capabilities", capabilities=caps)
                        state = shlex.quote(str(snap / "state"))
                        await qmp.execute("migrate-incoming", uri=f"exec:cat {state}")
                        # The snapshot was taken stopped, so the VM loads paused: resume it.
                        await qmp.wait_event("MIGRATION", status="completed")
                        await qmp.execute("cont")
                    finally:
                        await qmp.close()
                ok = True
            except (TimeoutError, SandboxUnavailable, OSError):
                ok = False
        if not ok:
            await run.kill()
            raise SandboxUnavailable(
                f"the microVM did not start ({accel}): {run.why()}",
                hint="rebuild the image and snapshot (scripts/build-microvm-image --force)",
            )
        await run.go()
        return run

    async def settle(self) -> None:
        """Nothing to wait for: every VM is gone when ``execute`` returns."""

    async def close(self) -> None:
        """Nothing is pooled: every VM is gone when ``execute`` returns."""


def _publish(work: Path, final: Path) -> None:
    """Move a finished snapshot into place (the scratch workspace drive is not part of it)."""
    (work / "ws.img").unlink()
    shutil.rmtree(final, ignore_errors=True)
    work.rename(final)


async def _wait_migration(qmp: Qmp) -> None:
    """Until ``query-migrate`` says completed; QMP has no event for it without an extra cap."""
    delay = 0.01
    while True:
        info = await qmp.execute("query-migrate")
        state = info.get("status")
        if state == "completed":
            return
        if state in ("failed", "cancelled"):
            raise SandboxUnavailable(f"saving the VM snapshot failed: {info}")
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.2)


@contextlib.asynccontextmanager
async def _file_lock(path: Path) -> AsyncIterator[None]:
    """An exclusive ``flock`` across processes (CI runs one pytest, benchmarks another)."""
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        await asyncio.to_thread(fcntl.flock, fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


@dataclass
class _CpuWatch:
    """Keeps the code's CPU limit on QEMU's CPU time (host clock), counted from ``go``."""

    vm: _Run
    limit_s: float
    start_cpu_s: float | None
    """What the VM's own start and stop cost (``start_cpu_s``); None: only measure."""
    base_s: float = 0.0
    last_s: float = 0.0
    exceeded: bool = False

    def __post_init__(self) -> None:
        self.base_s = self.last_s = process_cpu_s(self.vm.proc.pid) or 0.0

    def used_s(self) -> float:
        return max(0.0, self.last_s - self.base_s)

    def code_cpu_s(self) -> float:
        return max(0.0, self.used_s() - (self.start_cpu_s or 0.0))

    async def keep(self) -> None:
        """Poll until QEMU ends; kill it once the code used more than its limit."""
        pid = self.vm.proc.pid
        while self.vm.proc.returncode is None:
            await asyncio.sleep(CPU_POLL_S)
            now = process_cpu_s(pid)
            if now is None or self.vm.proc.returncode is not None:
                return
            self.last_s = now
            if self.start_cpu_s is not None and self.code_cpu_s() > self.limit_s:
                self.exceeded = True
                await self.vm.kill()
                return

    def detail(self, accel: str, mode: str) -> str:
        return (
            f"CPU time limit of {self.limit_s:g} s ({accel}, {mode}; QEMU used "
            f"{self.used_s():.2f} s of host CPU, {self.start_cpu_s or 0.0:.2f} s of it the VM's "
            "own start and stop)"
        )


def doctor(box: MicroVmSandbox | None = None) -> tuple[bool, str]:
    """Run ``print(1)`` in a microVM; say which accelerator it used, or why it failed."""

    async def probe() -> tuple[bool, str]:
        sandbox = box or MicroVmSandbox()
        try:
            result = await sandbox.execute(Execution(code="print(1)"))
        except SandboxUnavailable as exc:
            return False, str(exc)
        if result.ok and result.stdout.strip() == "1":
            accel = result.backend.partition(":")[2]
            kind = "KVM" if accel == "kvm" else "TCG software emulation (no usable KVM)"
            return True, f"QEMU microvm works with {kind}; {result.duration_s:.2f} s to result"
        return False, f"microVM ran but failed: {result.ended} {result.detail} {result.stderr}"

    return asyncio.run(probe())
