"""The microVM backend: each execution gets its own kernel, in a QEMU ``-M microvm`` guest.

The strongest boundary of the three backends: the code shares no kernel with the host, only a
small set of emulated devices (two virtio-blk drives and a serial port; no network device).

Protocol, one execution per VM (guest side: ``/sbin/autonomic-init`` in ``autonomic.sandbox.image``):

1. The host writes a tar onto a fresh 64 MiB *workspace drive*: the files (``ws/``), the code,
   its stdin, its argv and the limits (``.sandbox/``).
2. The guest, booted or restored from a snapshot, has a pre-warmed Python runner
   (``autonomic.sandbox.guest_runner``) blocked reading its serial line; the host writes ``go``.
   The runner reseeds the guest's CRNG with bytes from the host (a restored VM would otherwise
   repeat the snapshot's random state), unpacks the files into a size-capped tmpfs, forks the
   code into a cgroup (memory, pids) with rlimits (CPU, file size) as uid 65534, keeps
   ``output_bytes + 1`` of each stream, enforces the wall limit, then writes
   ``status``/``stdout``/``stderr`` back onto the workspace drive as a tar; PID 1 reboots, which
   ends QEMU.
3. The host parses that tar (untrusted: sizes capped, nothing extracted to disk) into a Result.
   The host also kills QEMU if the whole thing overruns the wall limit plus a start-up allowance.

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
import io
import json
import math
import os
import shlex
import shutil
import signal
import subprocess
import tarfile
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from autonomic.adapters.sandbox.qmp import Qmp, listening_socket
from autonomic.adapters.sandbox.streams import check_execution, decode, refuse_network
from autonomic.adapters.sandbox.vm_config import (
    BootSource,
    Drive,
    MachineConfig,
    VmConfig,
    qemu_argv,
)
from autonomic.errors import InvalidInput
from autonomic.ports.sandbox import (
    Ended,
    Execution,
    Limits,
    Result,
    SandboxUnavailable,
    Usage,
)
from autonomic.sandbox.image import Image, image_for

WORKSPACE_DISK_BYTES = 64 << 20
"""Fixed: a restored guest knows the drive's size from the snapshot."""
READY = b"AUTONOMIC-READY"
BOOT_TIMEOUT_S = 60.0
"""Cold boot to READY; generous because TCG on a loaded 2-core host is slow (~4-8 s measured)."""
START_ALLOWANCE_S = 20.0
"""Added to the wall limit for the host-side kill: restore, unpack and pack happen outside it."""
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
        return err.replace("\n", " | ") if err else _tail(self.serial)

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
    _lock: asyncio.Lock | None = field(default=None, init=False, repr=False)

    @property
    def name(self) -> str:
        return "microvm"

    def doctor(self) -> tuple[bool, str]:
        """Boot one VM and run ``print(1)``; say which accelerator works, or why nothing does."""
        return doctor(self)

    # -- configuration -------------------------------------------------------------------

    def vm_config(self, workspace: Path) -> VmConfig:
        """The Firecracker-layout config of one VM whose workspace drive is ``workspace``."""
        return VmConfig(
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
                hint="run scripts/build-microvm-image (python -m autonomic.sandbox.image)",
            )
        return found

    async def _spawn(self, argv: list[str], pass_fds: tuple[int, ...] = ()) -> _Run:
        """Start QEMU; its own complaints go to a file so a failure can say what they were."""
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
                _write_workspace(disk, Execution(code="pass"))
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

    def _snapshot_dir(self, accel: str) -> Path:
        m = self.machine
        return self.image.directory / f"snapshot-{accel}-{m.vcpu_count}cpu-{m.mem_size_mib}m"

    async def _ensure_snapshot(self, qemu: str, accel: str) -> Path:
        """The snapshot directory (``ram``, ``state``), made once per machine and accelerator."""
        final = self._snapshot_dir(accel)
        if (final / "state").is_file():
            return final
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock, _file_lock(self.image.directory / "snapshot.lock"):
            if (final / "state").is_file():
                return final
            work = Path(tempfile.mkdtemp(dir=self.image.directory, prefix=".snap-"))
            try:
                await self._take_snapshot(qemu, accel, work)
                await asyncio.to_thread(_publish, work, final)
            finally:
                shutil.rmtree(work, ignore_errors=True)
        return final

    async def _take_snapshot(self, qemu: str, accel: str, work: Path) -> None:
        disk = work / "ws.img"
        disk.write_bytes(b"")
        os.truncate(disk, WORKSPACE_DISK_BYTES)
        with tempfile.TemporaryDirectory(prefix="autonomic-qmp-") as sockdir:
            sock_path = Path(sockdir) / "qmp.sock"
            sock = listening_socket(sock_path)
            try:
                argv = qemu_argv(
                    self.vm_config(disk),
                    qemu=qemu,
                    accel=accel,
                    tsc_khz=_tsc_khz(),
                    memory_file=work / "ram",
                    share_memory=True,
                    qmp_fd=sock.fileno(),
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
        refuse_network("microvm", execution)
        _check_fits(execution)
        qemu = self._binary()
        started = time.monotonic()
        accel = await self._accel(qemu)
        snap = await self._ensure_snapshot(qemu, accel) if self.snapshot else None
        with tempfile.TemporaryDirectory(prefix="autonomic-vm-") as tmp:
            work = Path(tmp)
            disk = work / "ws.img"
            _write_workspace(disk, execution, self.machine)
            try:
                run = await self._start(qemu, accel, disk, snap, work)
            except SandboxUnavailable:
                if snap is None:
                    raise
                # A snapshot from another QEMU build or kernel does not load: take a new one.
                await asyncio.to_thread(shutil.rmtree, snap, True)
                snap = await self._ensure_snapshot(qemu, accel)
                run = await self._start(qemu, accel, disk, snap, work)
            try:
                deadline = execution.limits.wall_seconds + START_ALLOWANCE_S
                try:
                    async with asyncio.timeout(deadline):
                        await run.drain_serial()
                        await run.proc.wait()
                except TimeoutError:
                    await run.kill()
                    return _result(
                        Ended.TIMEOUT,
                        started,
                        accel,
                        f"the VM overran {deadline:g} s and was killed by the host",
                    )
            finally:
                await run.kill()
            mode = "snapshot restore" if snap else "cold boot"
            memory_mb = memory_cap_mb(execution.limits, self.machine)
            return _read_result(disk, execution.limits, memory_mb, started, accel, mode, run.serial)

    async def _start(
        self, qemu: str, accel: str, disk: Path, snap: Path | None, work: Path
    ) -> _Run:
        config = self.vm_config(disk)
        if snap is None:
            argv = qemu_argv(config, qemu=qemu, accel=accel, tsc_khz=_tsc_khz())
            run = await self._spawn(argv)
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
                run = await self._spawn(argv, pass_fds=(sock.fileno(),))
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

    async def close(self) -> None:
        """Nothing is pooled: every VM is gone when ``execute`` returns."""


def _publish(work: Path, final: Path) -> None:
    """Move a finished snapshot into place (the scratch workspace drive is not part of it)."""
    (work / "ws.img").unlink()
    shutil.rmtree(final, ignore_errors=True)
    work.rename(final)


def _check_fits(execution: Execution) -> None:
    payload = sum(len(v) for v in execution.files.values()) + len(execution.stdin)
    payload += len(execution.code or "")
    if payload > WORKSPACE_DISK_BYTES // 2:
        raise InvalidInput(
            f"files and stdin total {payload} bytes; the microVM takes at most "
            f"{WORKSPACE_DISK_BYTES // 2}",
            hint="send smaller inputs, or use the oci or namespace backend",
        )
    if execution.limits.output_bytes > WORKSPACE_DISK_BYTES // 4:
        raise InvalidInput(
            f"output_bytes={execution.limits.output_bytes} exceeds the microVM's "
            f"{WORKSPACE_DISK_BYTES // 4} per stream",
            hint="lower Limits.output_bytes",
        )


GUEST_OVERHEAD_MB = 96
"""Guest RAM kept for the kernel and the runner: the sandbox cgroup gets at most the rest."""


def memory_cap_mb(limits: Limits, machine: MachineConfig) -> int:
    """The guest cgroup's memory limit: ``memory_mb``, bounded by what the VM has."""
    return min(limits.memory_mb, machine.mem_size_mib - GUEST_OVERHEAD_MB)


def _write_workspace(
    disk: Path, execution: Execution, machine: MachineConfig | None = None
) -> None:
    """The tar the guest reads: ``.sandbox/`` (spec, argv, stdin, entropy) and ``ws/`` (files)."""
    limits = execution.limits
    memory_mb = memory_cap_mb(limits, machine or MachineConfig())
    files = dict(execution.files)
    if execution.code is not None:
        files["main.py"] = execution.code.encode()
        argv = ["/usr/bin/python3", "main.py"]
    else:
        assert execution.command is not None
        argv = list(execution.command)
    cpu = max(1, math.ceil(limits.cpu_seconds))
    spec = (
        f"WS_MB={limits.workspace_mb}\nMEM_BYTES={memory_mb << 20}\n"
        f"PIDS={limits.processes}\nOUT_BYTES={limits.output_bytes}\n"
        f"WALL={limits.wall_seconds:.3f}\nCPU={cpu}\nFSIZE={limits.file_size_mb << 20}\n"
    )
    control = {
        ".sandbox/spec": spec.encode(),
        ".sandbox/argv": b"".join(a.encode() + b"\0" for a in argv),
        ".sandbox/stdin": execution.stdin,
        ".sandbox/entropy": os.urandom(64),
    }
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in [*control.items(), *((f"ws/{k}", v) for k, v in files.items())]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    with disk.open("wb") as f:
        f.write(buf.getvalue())
        f.truncate(WORKSPACE_DISK_BYTES)


def _read_outputs(disk: Path, cap: int) -> dict[str, bytes]:
    """The guest's tar, read defensively: known names only, each at most ``cap + 1`` bytes."""
    wanted = {"status", "stdout", "stderr", "setup"}
    found: dict[str, bytes] = {}
    with (
        contextlib.suppress(tarfile.TarError, OSError),
        disk.open("rb") as f,
        tarfile.open(fileobj=f, mode="r:") as tar,
    ):
        for member in tar:
            name = member.name.removeprefix("./")
            if name in wanted and member.isfile() and name not in found:
                handle = tar.extractfile(member)
                if handle is not None:
                    found[name] = handle.read(min(member.size, cap + 1))
    return found


def _parse_status(raw: bytes) -> dict[str, float]:
    status: dict[str, float] = {}
    for pair in raw.decode(errors="replace").split():
        key, _, value = pair.partition("=")
        with contextlib.suppress(ValueError):
            status[key] = float(value) if value else 0.0
    return status


def _result(ended: Ended, started: float, accel: str, detail: str) -> Result:
    return Result(
        ended=ended,
        exit_code=None,
        stdout="",
        stderr="",
        stdout_truncated=False,
        stderr_truncated=False,
        duration_s=time.monotonic() - started,
        backend=f"microvm:{accel}",
        detail=detail,
    )


def _read_result(
    disk: Path,
    limits: Limits,
    memory_mb: int,
    started: float,
    accel: str,
    mode: str,
    serial: bytearray,
) -> Result:
    out = _read_outputs(disk, max(limits.output_bytes, 4096))
    if "status" not in out:
        return _result(
            Ended.KILLED,
            started,
            accel,
            f"the VM ended without a result ({accel}, {mode}): {_tail(serial)}",
        )
    status = _parse_status(out["status"])
    stdout, stderr = out.get("stdout", b""), out.get("stderr", b"")
    cap = limits.output_bytes
    stdout_truncated, stderr_truncated = len(stdout) > cap, len(stderr) > cap
    rc = int(status.get("rc", -1))
    cpu_s = status.get("cpu_usec", 0.0) / 1e6
    where = f"{accel}, {mode}"
    exit_code: int | None = None
    if status.get("setup_failed"):
        ended, exit_code, detail = Ended.EXIT, 1, f"the files did not fit the workspace ({where})"
        stderr = out.get("setup", b"")
    elif status.get("oom", 0) > 0:
        ended, detail = Ended.MEMORY, f"memory limit of {memory_mb} MiB reached ({where})"
    elif stdout_truncated or stderr_truncated:
        ended, detail = Ended.OUTPUT_LIMIT, f"output over {cap} bytes on one stream ({where})"
    elif status.get("timedout"):
        ended, detail = Ended.TIMEOUT, f"wall time limit of {limits.wall_seconds:g} s ({where})"
    elif rc == 128 + signal.SIGXCPU or (
        rc == 128 + signal.SIGKILL and cpu_s >= max(1, math.ceil(limits.cpu_seconds))
    ):
        ended, detail = Ended.CPU, f"CPU time limit of {limits.cpu_seconds:g} s ({where})"
    elif rc > 128:
        ended, detail = Ended.KILLED, f"killed by signal {rc - 128} ({where})"
    else:
        ended, exit_code, detail = Ended.EXIT, rc, where
    return Result(
        ended=ended,
        exit_code=exit_code,
        stdout=decode(stdout[:cap]),
        stderr=decode(stderr[:cap]),
        stdout_truncated=stdout_truncated,
        stderr_truncated=stderr_truncated,
        duration_s=time.monotonic() - started,
        usage=Usage(cpu_seconds=cpu_s, max_rss_mb=status.get("peak", 0.0) / (1 << 20)),
        backend=f"microvm:{accel}",
        detail=detail,
    )


def _tail(serial: bytearray) -> str:
    text = decode(bytes(serial[-600:])).strip().replace("\r", "")
    return " | ".join(text.splitlines()[-6:]) or "no console output"


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
