"""The microVM guest's runner: a pre-warmed Python that runs one execution per VM. Guest-only.

Copied into the root image as ``/sbin/autonomic-runner`` and started by the guest's PID 1 before
the snapshot is taken, so the interpreter start and the imports below are already done in every
restored VM (under emulation each of those costs hundreds of milliseconds). After ``go`` on the
serial line it:

1. reads the request tar from the workspace drive (after dropping the drive's page cache, which
   may hold snapshot-time contents), mounts a tmpfs workspace capped at ``workspace_mb`` and
   writes the files into it;
2. forks a child that joins the ``sandbox`` cgroup (memory, pids), sets rlimits, becomes uid
   65534 with no groups and a clear environment, sets ``no_new_privs`` and installs the seccomp
   filter the host sent (the namespace backend's program, ``adapters/sandbox/seccomp.py``: the
   guest kernel is the boundary here, but keyctl, perf_event_open, io_uring or a new user
   namespace are still kernel attack surface an execution has no use for), and runs the code:
   Python source in this warm interpreter (``runpy``, so no second interpreter start), a
   command by ``execve``. Without a filter in the request nothing runs (fail closed);
3. reads stdout/stderr through pipes keeping ``output_bytes + 1`` of each, and enforces the wall
   limit itself; on either it kills the whole cgroup;
4. writes ``status``/``stdout``/``stderr`` back to the workspace drive as a tar, syncs and exits;
   PID 1 then reboots, which ends QEMU.

Nothing here runs on the host; the host only reads the tar it writes (defensively).
"""

from __future__ import annotations

import collections
import ctypes
import datetime
import fcntl
import io
import itertools
import json
import math
import os
import random
import re
import resource
import runpy
import select
import signal
import statistics
import sys
import tarfile
import time
import traceback

PRELOADED = (collections, datetime, itertools, json, math, random, re, statistics)
"""Imported before the snapshot so user code finds them warm; not otherwise used here."""

CGROUP = "/sys/fs/cgroup/sandbox"
WORKSPACE = "/workspace"
UID = 65534
BLKFLSBUF = 0x1261
RNDADDENTROPY = 0x40085203
RNDRESEEDCRNG = 0x5207
MS_NOSUID, MS_NODEV = 2, 4
PR_SET_NO_NEW_PRIVS, PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 38, 22, 2
ENV = {
    "PATH": "/usr/bin:/bin",
    "HOME": WORKSPACE,
    "TMPDIR": WORKSPACE,
    "LANG": "C.UTF-8",
    "PYTHONDONTWRITEBYTECODE": "1",
    "PYTHONUNBUFFERED": "1",
}

_libc = ctypes.CDLL(None, use_errno=True)


def _write(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


def _read_request(ws_dev: str) -> tuple[dict[str, str], dict[str, bytes]]:
    fd = os.open(ws_dev, os.O_RDONLY)
    try:
        fcntl.ioctl(fd, BLKFLSBUF)
        with os.fdopen(os.dup(fd), "rb") as raw, tarfile.open(fileobj=raw, mode="r:") as tar:
            members: dict[str, bytes] = {}
            for member in tar:
                handle = tar.extractfile(member) if member.isfile() else None
                if handle is not None:
                    members[member.name] = handle.read()
    finally:
        os.close(fd)
    spec = dict(line.split("=", 1) for line in members.pop(".sandbox/spec").decode().split())
    return spec, members


def _prepare_workspace(spec: dict[str, str], members: dict[str, bytes]) -> str:
    """Mount the capped tmpfs and write the files; '' or why it failed (it did not fit)."""
    opts = f"size={spec['WS_MB']}m,mode=0700,uid={UID},gid={UID}".encode()
    if _libc.mount(b"tmpfs", WORKSPACE.encode(), b"tmpfs", MS_NOSUID | MS_NODEV, opts) != 0:
        return f"mount workspace: {os.strerror(ctypes.get_errno())}"
    try:
        for name, data in members.items():
            if not name.startswith("ws/"):
                continue
            path = os.path.join(WORKSPACE, name[3:])
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as f:
                f.write(data)
        for root, dirs, files in os.walk(WORKSPACE):
            for entry in [root] + [os.path.join(root, n) for n in dirs + files]:
                os.chown(entry, UID, UID)
    except OSError as exc:
        return f"writing the files into the workspace: {exc}"
    return ""


class _SockFprog(ctypes.Structure):
    _fields_ = (("len", ctypes.c_ushort), ("filter", ctypes.c_void_p))


def _install_seccomp(program: bytes) -> None:
    """``no_new_privs`` then ``PR_SET_SECCOMP``; raises OSError if the kernel refuses either.

    ``program`` is a ``struct sock_filter[]`` (8 bytes per instruction) built on the host.
    """
    if not program or len(program) % 8:
        raise OSError("no seccomp filter in the request")
    if _libc.prctl(PR_SET_NO_NEW_PRIVS, ctypes.c_ulong(1), 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")
    buf = ctypes.create_string_buffer(program, len(program))
    fprog = _SockFprog(len(program) // 8, ctypes.cast(buf, ctypes.c_void_p))
    rc = _libc.prctl(PR_SET_SECCOMP, ctypes.c_ulong(SECCOMP_MODE_FILTER), ctypes.byref(fprog), 0, 0)
    if rc != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_SECCOMP)")


def _child(
    spec: dict[str, str],
    argv: list[bytes],
    seccomp: bytes,
    stdin_fd: int,
    out_w: int,
    err_w: int,
) -> None:
    """In the forked child: confine, then run the code. Never returns."""
    _write(f"{CGROUP}/cgroup.procs", str(os.getpid()))
    cpu = int(spec["CPU"])
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    resource.setrlimit(resource.RLIMIT_FSIZE, (int(spec["FSIZE"]),) * 2)
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    os.dup2(stdin_fd, 0)
    os.dup2(out_w, 1)
    os.dup2(err_w, 2)
    os.closerange(3, 1024)
    os.chdir(WORKSPACE)
    os.setgroups([])
    os.setresgid(UID, UID, UID)
    os.setresuid(UID, UID, UID)
    try:
        _install_seccomp(seccomp)
    except OSError as exc:
        os.write(2, f"autonomic: refusing to run without the seccomp filter: {exc}\n".encode())
        os._exit(126)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)  # as python3 main.py has it
    if argv != [b"/usr/bin/python3", b"main.py"]:
        os.execve(argv[0], argv, ENV)  # noqa: S606 - the request's command, confined above
    os.environ.clear()
    os.environ.update(ENV)
    sys.stdin = io.TextIOWrapper(io.FileIO(0, "r", closefd=False), encoding="utf-8")
    sys.stdout = io.TextIOWrapper(
        io.FileIO(1, "w", closefd=False), encoding="utf-8", write_through=True
    )
    sys.stderr = io.TextIOWrapper(
        io.FileIO(2, "w", closefd=False),
        encoding="utf-8",
        write_through=True,
        errors="backslashreplace",
    )
    sys.argv = [f"{WORKSPACE}/main.py"]
    sys.path[0] = WORKSPACE
    try:
        runpy.run_path(f"{WORKSPACE}/main.py", run_name="__main__")
    except SystemExit:
        raise
    except BaseException as exc:
        tb = exc.__traceback__
        while tb is not None and tb.tb_frame.f_code.co_filename != f"{WORKSPACE}/main.py":
            tb = tb.tb_next
        traceback.print_exception(type(exc), exc, tb)
        sys.exit(1)
    sys.exit(0)


def _collect(out_r: int, err_r: int, pidfd: int, cap: int, wall: float) -> tuple[bytes, bytes, str]:
    """Read both pipes (keeping cap+1 bytes each) until EOF, the wall limit or the cap.

    When the code's main process exits, whatever it left running is killed (as when a
    container's init exits), so a background child cannot hold the pipes open.
    """
    kept = {out_r: bytearray(), err_r: bytearray()}
    open_fds = [out_r, err_r, pidfd]
    deadline = time.monotonic() + wall
    reason = ""
    while out_r in open_fds or err_r in open_fds:
        left = deadline - time.monotonic()
        if left <= 0:
            reason = "timeout"
            break
        ready, _, _ = select.select(open_fds, [], [], left)
        for fd in ready:
            if fd == pidfd:
                open_fds.remove(pidfd)
                _write(f"{CGROUP}/cgroup.kill", "1")
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                open_fds.remove(fd)
                continue
            buf = kept[fd]
            buf += chunk[: cap + 1 - len(buf)]
            if len(buf) > cap:
                reason = "output"
        if reason:
            break
    if reason:
        _write(f"{CGROUP}/cgroup.kill", "1")
    return bytes(kept[out_r]), bytes(kept[err_r]), reason


def _stat(path: str, key: str) -> int:
    try:
        with open(path) as f:
            for line in f:
                name, _, value = line.partition(" ")
                if name == key:
                    return int(value)
    except (OSError, ValueError):
        pass
    return 0


def _write_result(ws_dev: str, files: dict[str, bytes]) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    fd = os.open(ws_dev, os.O_WRONLY)
    try:
        os.write(fd, buf.getvalue())
        os.fsync(fd)
    finally:
        os.close(fd)


def main() -> None:
    ws_dev = sys.argv[1]
    with open("/dev/ttyS0", "r+b", buffering=0) as tty:
        tty.write(b"AUTONOMIC-READY\n")
        tty.readline()  # "go": the host restored (or booted) us and wrote the request
    spec, members = _read_request(ws_dev)
    _reseed(members.pop(".sandbox/entropy", b""))
    net_failed = _network(spec.get("NET", ""))
    _write(f"{CGROUP}/memory.max", spec["MEM_BYTES"])
    _write(f"{CGROUP}/pids.max", spec["PIDS"])
    setup = net_failed or _prepare_workspace(spec, members)
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    with open("/run/stdin", "wb") as f:
        f.write(members.pop(".sandbox/stdin", b""))
    stdin_r = os.open("/run/stdin", os.O_RDONLY)
    argv = members.pop(".sandbox/argv").split(b"\0")[:-1]
    seccomp = members.pop(".sandbox/seccomp", b"")
    rc, reason, t0 = 125, "", time.monotonic()
    out = err = b""
    if not setup:
        pid = os.fork()
        if pid == 0:
            os.close(out_r)
            os.close(err_r)
            _child(spec, argv, seccomp, stdin_r, out_w, err_w)
        for fd in (out_w, err_w, stdin_r):
            os.close(fd)
        pidfd = os.pidfd_open(pid)
        out, err, reason = _collect(
            out_r, err_r, pidfd, int(spec["OUT_BYTES"]), float(spec["WALL"])
        )
        os.close(pidfd)
        _, status = os.waitpid(pid, 0)
        rc = os.waitstatus_to_exitcode(status)
        rc = 128 - rc if rc < 0 else rc
    t1 = time.monotonic()
    _write(f"{CGROUP}/cgroup.kill", "1")
    peak = 0
    try:
        with open(f"{CGROUP}/memory.peak") as f:
            peak = int(f.read())
    except (OSError, ValueError):
        pass
    status_line = (
        f"rc={rc} oom={_stat(f'{CGROUP}/memory.events', 'oom_kill')} "
        f"cpu_usec={_stat(f'{CGROUP}/cpu.stat', 'usage_usec')} peak={peak} "
        f"t0={t0:.3f} t1={t1:.3f} timedout={int(reason == 'timeout')} "
        f"setup_failed={int(bool(setup))}"
    )
    _write_result(
        ws_dev,
        {"status": status_line.encode(), "stdout": out, "stderr": err, "setup": setup.encode()},
    )


def _network(net: str) -> str:
    """Give the VM's NIC the address and route the host chose (``NET=addr/len@gateway``).

    The NIC exists only in VMs started with an egress allow-list; its packets leave through a
    tap in the execution's own namespace and the host's filtering router (``egress``). Done as
    root, before the code's child drops everything. Returns why it failed ("" when it worked).
    """
    if not net:
        return ""
    address, _, gateway = net.partition("@")
    nics = sorted(n for n in os.listdir("/sys/class/net") if n != "lo")
    if not nics:
        return "the VM has no network device (is virtio_net in the image?)"
    for argv in (
        ["ip", "link", "set", "lo", "up"],
        ["ip", "addr", "add", address, "dev", nics[0]],
        ["ip", "link", "set", nics[0], "up"],
        ["ip", "route", "add", "default", "via", gateway],
    ):
        pid = os.posix_spawn("/bin/busybox", argv, {"PATH": "/bin"})
        _, status = os.waitpid(pid, 0)
        if os.waitstatus_to_exitcode(status) != 0:
            return f"configuring the VM's network failed: {' '.join(argv)}"
    return ""


def _reseed(entropy: bytes) -> None:
    """Mix the host's fresh bytes into the kernel pool and reseed the CRNG now.

    Every VM restored from one snapshot starts with the same CRNG state; without this, two
    executions would read the same "random" bytes from os.urandom.
    """
    if not entropy:
        return
    bits, size = len(entropy) * 8, len(entropy)
    request = bits.to_bytes(4, "little") + size.to_bytes(4, "little") + entropy
    fd = os.open("/dev/urandom", os.O_WRONLY)
    try:
        fcntl.ioctl(fd, RNDADDENTROPY, request)
        fcntl.ioctl(fd, RNDRESEEDCRNG)
    finally:
        os.close(fd)
    random.seed()


if __name__ == "__main__":
    main()
