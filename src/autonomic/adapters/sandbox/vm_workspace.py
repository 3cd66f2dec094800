"""The microVM's workspace drive: the request written onto it, the result read back from it.

The drive is the only data path between host and guest besides the serial line's ``go``. The
host writes a tar (``.sandbox/spec``, ``argv``, ``stdin``, ``entropy``, ``seccomp`` (the
namespace backend's compiled filter, installed by the guest before the code runs) and the files under
``ws/``) and the guest runner (``autonomic.adapters.sandbox.guest_runner``) overwrites it with a tar of
``status``, ``stdout``, ``stderr`` and ``setup``. What comes back is untrusted: it is parsed in
memory, known names only, each capped, and mapped to a ``Result`` here.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import signal
import tarfile
import time
from pathlib import Path

from autonomic.adapters.sandbox.seccomp import build_filter
from autonomic.adapters.sandbox.streams import decode
from autonomic.adapters.sandbox.vm_config import MachineConfig
from autonomic.errors import InvalidInput
from autonomic.ports.sandbox import Ended, Execution, Limits, Result, Usage

WORKSPACE_DISK_BYTES = 64 << 20
"""Fixed: a restored guest knows the drive's size from the snapshot."""


def check_fits(execution: Execution) -> None:
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


def write_workspace(
    disk: Path,
    execution: Execution,
    machine: MachineConfig | None = None,
    network: str = "",
) -> None:
    """The tar the guest reads: ``.sandbox/`` (spec, argv, stdin, entropy) and ``ws/`` (files);
    ``network`` (``addr/len@gateway``) is the address the guest gives its NIC, if it has one."""
    limits = execution.limits
    memory_mb = memory_cap_mb(limits, machine or MachineConfig())
    files = dict(execution.files)
    if execution.code is not None:
        files["main.py"] = execution.code.encode()
        argv = ["/usr/bin/python3", "main.py"]
    else:
        assert execution.command is not None
        argv = list(execution.command)
    cpu = guest_cpu_backstop(limits)
    spec = (
        f"WS_MB={limits.workspace_mb}\nMEM_BYTES={memory_mb << 20}\n"
        f"PIDS={limits.processes}\nOUT_BYTES={limits.output_bytes}\n"
        f"WALL={limits.wall_seconds:.3f}\nCPU={cpu}\nFSIZE={limits.file_size_mb << 20}\n"
    )
    if network:
        spec += f"NET={network}\n"
    control = {
        ".sandbox/spec": spec.encode(),
        ".sandbox/argv": b"".join(a.encode() + b"\0" for a in argv),
        ".sandbox/stdin": execution.stdin,
        ".sandbox/entropy": os.urandom(64),
        ".sandbox/seccomp": build_filter(),
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


def guest_cpu_backstop(limits: Limits) -> int:
    """The guest's own ``RLIMIT_CPU``: beyond the wall limit, so only a host that failed to
    keep the CPU limit (``microvm._CpuWatch``) would ever see it act.

    Under emulation the guest charges the time its virtual CPU waited for a host core to the
    running code, so on a busy host a limit kept by the guest stopped code that had hardly run.
    """
    return max(1, math.ceil(max(limits.cpu_seconds, limits.wall_seconds))) + 1


def bare_result(ended: Ended, started: float, accel: str, detail: str) -> Result:
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


def read_result(
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
        return bare_result(
            Ended.KILLED,
            started,
            accel,
            f"the VM ended without a result ({accel}, {mode}): {console_tail(serial)}",
        )
    status = _parse_status(out["status"])
    stdout, stderr = out.get("stdout", b""), out.get("stderr", b"")
    cap = limits.output_bytes
    stdout_truncated, stderr_truncated = len(stdout) > cap, len(stderr) > cap
    rc = int(status.get("rc", -1))
    cpu_s = status.get("cpu_usec", 0.0) / 1e6
    in_guest = status.get("t1", 0.0) - status.get("t0", 0.0)
    where = f"{accel}, {mode}, {in_guest:.2f} s in the guest"
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
        rc == 128 + signal.SIGKILL and cpu_s >= guest_cpu_backstop(limits)
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


def console_tail(serial: bytearray) -> str:
    text = decode(bytes(serial[-600:])).strip().replace("\r", "")
    return " | ".join(text.splitlines()[-6:]) or "no console output"
