"""Escape and abuse probes, each judged from the host, for any ``Sandbox``.

A probe is Python code that tries one thing a sandbox must prevent. Its verdict never rests on
the probe saying "I failed": the host plants what the probe aims at and looks afterwards — a
secret's digest or token in the output, a marker file on the host's disk, a connection recorded by
a listener the host runs, a victim process still alive, a process left behind. Where the only
evidence is the kernel's answer to a syscall (mount, ptrace, module loading, ...), the probe prints
the raw return value and errno and the host decides: any answer other than "not permitted" means
the call reached the kernel's real implementation and counts as an escape.

``ProbeHost(harmless=True)`` aims the same probes at stand-ins in a temporary directory (a copy of
a shadow file, marker directories, local listeners) so that running them with no sandbox at all
(``HostRunner``) shows they *can* succeed: a probe that cannot fail proves nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import hashlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from autonomic.adapters.sandbox.loader import check_files
from autonomic.adapters.sandbox.process import Launcher
from autonomic.ports.sandbox import Ended, Execution, Limits, Result, Sandbox, Usage

ENV_NAME = "AUTONOMIC_PROBE_SECRET"
DENIED_ERRNOS = frozenset({errno.EPERM, errno.EACCES, errno.ENOSYS, errno.EAFNOSUPPORT})
ESCAPE_LIMITS = Limits(wall_seconds=10.0, cpu_seconds=5.0, memory_mb=128, processes=32)
Kind = Literal["escape", "abuse"]

PRELUDE = """\
import ctypes, errno, json, os, socket, subprocess, sys, time
T = json.loads({targets!r})
NR = json.loads({numbers!r})
libc = ctypes.CDLL(None, use_errno=True)
def sc(nr, *args):
    ctypes.set_errno(0)
    r = libc.syscall(ctypes.c_long(nr), *[ctypes.c_long(a) if isinstance(a, int) else a for a in args])
    print("SYSCALL", r, ctypes.get_errno() if r < 0 else 0, flush=True)
    return r
def tcp(host, port):
    s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    s.settimeout(2)
    try:
        s.connect((host, port))
        s.sendall(T["token"].encode())
        print("CONNECTED", flush=True)
    except OSError as e:
        print("NOCONNECT", e, flush=True)
    finally:
        s.close()
def orphan(tag):
    pid = os.fork()
    if pid == 0:
        os.setsid()
        if os.fork() == 0:
            os.execv("/bin/sh", [tag + "-" + T["token"], "-c", "sleep 600"])
        os._exit(0)
    os.waitpid(pid, 0)
"""


@dataclass(frozen=True, slots=True)
class Verdict:
    held: bool
    """The sandbox held: the escape failed, or the abuse was contained."""
    evidence: str


@dataclass(frozen=True, slots=True)
class Probe:
    name: str
    kind: Kind
    code: str
    check: Callable[[Result, ProbeHost], Verdict]
    limits: Limits = ESCAPE_LIMITS
    description: str = ""
    expect: frozenset[Ended] = frozenset()
    """Abuse probes: the end reasons that mean "contained for the right reason"."""


@dataclass(frozen=True, slots=True)
class ProbeOutcome:
    probe: str
    kind: Kind
    held: bool
    ended: Ended
    duration_s: float
    evidence: str
    description: str = ""


# -- host-side checks ------------------------------------------------------------------------------


def _token_in_output(result: Result, host: ProbeHost) -> Verdict:
    leaked = host.token in result.stdout or host.token in result.stderr
    return Verdict(not leaked, "the host's secret token came back" if leaked else "no token")


def _digest_of(path_key: str) -> Callable[[Result, ProbeHost], Verdict]:
    def check(result: Result, host: ProbeHost) -> Verdict:
        digest = hashlib.sha256(Path(host.targets[path_key]).read_bytes()).hexdigest()
        leaked = digest in result.stdout
        return Verdict(not leaked, "the file's digest matched" if leaked else "digest not seen")

    return check


def _marker(where: str) -> Callable[[Result, ProbeHost], Verdict]:
    def check(result: Result, host: ProbeHost) -> Verdict:
        path = Path(host.check_dirs.get(where, host.targets["write"][where])) / host.marker_name(
            where
        )
        if path.exists() or path.is_symlink():
            path.unlink()
            return Verdict(False, f"{path} was written on the host")
        return Verdict(True, f"{path} absent on the host")

    return check


def _listener(channel: str) -> Callable[[Result, ProbeHost], Verdict]:
    def check(result: Result, host: ProbeHost) -> Verdict:
        got = host.received.get(channel, 0)
        return Verdict(got == 0, f"the host's {channel} listener got {got} connection(s)")

    return check


def _connect_or_listener(channel: str) -> Callable[[Result, ProbeHost], Verdict]:
    """For addresses the host cannot listen on: a completed connect counts too."""

    def check(result: Result, host: ProbeHost) -> Verdict:
        heard = _listener(channel)(result, host)
        connected = "CONNECTED" in result.stdout
        held = heard.held and not connected
        return Verdict(held, heard.evidence + ("; connect() succeeded" if connected else ""))

    return check


def _syscall(denied: Iterable[int] = DENIED_ERRNOS) -> Callable[[Result, ProbeHost], Verdict]:
    refused = frozenset(denied)

    def check(result: Result, host: ProbeHost) -> Verdict:
        answers = [
            (int(m.group(1)), int(m.group(2)))
            for m in re.finditer(r"^SYSCALL (-?\d+) (\d+)$", result.stdout, re.MULTILINE)
        ]
        if not answers:
            return Verdict(True, f"the call never returned ({result.ended}: {result.detail})")
        allowed = [(r, e) for r, e in answers if r >= 0 or e not in refused]
        if allowed:
            r, e = allowed[0]
            return Verdict(False, f"the kernel answered {r} ({errno.errorcode.get(e, e)})")
        names = ", ".join(errno.errorcode.get(e, str(e)) for _, e in answers)
        return Verdict(True, f"refused: {names}")

    return check


def _victim_alive(result: Result, host: ProbeHost) -> Verdict:
    alive = host.victim is not None and host.victim.poll() is None
    return Verdict(alive, "the host's victim process is alive" if alive else "the victim died")


def _sysfs(result: Result, host: ProbeHost) -> Verdict:
    seen = [
        n for n in host.targets["host_ifaces"] if re.search(rf"\b{re.escape(n)}\b", result.stdout)
    ]
    return Verdict(
        not seen, f"host interfaces listed: {seen}" if seen else "no host interface seen"
    )


def _no_leftover(result: Result, host: ProbeHost) -> Verdict:
    left = host.leftover_pids()
    return Verdict(not left, f"processes left behind: {left}" if left else "nothing left behind")


def _contained(result: Result, probe: Probe, host: ProbeHost) -> Verdict:
    limits = probe.limits
    bound = limits.wall_seconds + 1.0
    problems = []
    if result.ended not in probe.expect:
        problems.append(f"ended {result.ended} ({result.detail}), expected {sorted(probe.expect)}")
    if result.duration_s > bound:
        problems.append(f"took {result.duration_s:.2f} s > {bound:.1f} s")
    if result.ended is Ended.CPU and result.usage.cpu_seconds > limits.cpu_seconds + 1.0:
        problems.append(f"used {result.usage.cpu_seconds:.2f} s CPU")
    left = host.leftover_pids()
    if left:
        problems.append(f"processes left behind: {left}")
    if probe.name == "disk_fill" and "FULL" not in result.stdout:
        problems.append("the workspace never filled up")
    if probe.name == "many_fds" and "FDS 10000" in result.stdout:
        problems.append("10,000 descriptors were opened")
    if problems:
        return Verdict(False, "; ".join(problems))
    return Verdict(True, f"{result.ended} after {result.duration_s:.2f} s, nothing left behind")


# -- the probes ----------------------------------------------------------------------------------


def _escape(
    name: str, description: str, code: str, check: Callable[[Result, ProbeHost], Verdict]
) -> Probe:
    return Probe(name=name, kind="escape", code=code, check=check, description=description)


def _write(where: str, description: str) -> Probe:
    code = f"""
target = os.path.join(T["write"]["{where}"], T["markers"]["{where}"])
try:
    with open(target, "w") as f:
        f.write(T["token"])
    print("WROTE", target)
except OSError as e:
    print("DENIED", e)
"""
    return _escape(f"write_{where}", description, code, _marker(where))


SYS = {
    "ptrace": 101,
    "chroot": 161,
    "mount": 165,
    "umount2": 166,
    "init_module": 175,
    "delete_module": 176,
    "kexec_load": 246,
    "keyctl": 250,
    "unshare": 272,
    "perf_event_open": 298,
    "setns": 308,
    "process_vm_readv": 310,
    "finit_module": 313,
    "bpf": 321,
    "userfaultfd": 323,
    "io_uring_setup": 425,
}

ESCAPES: tuple[Probe, ...] = (
    _escape(
        "read_shadow",
        "read /etc/shadow (the host compares digests)",
        """
try:
    import hashlib
    print(hashlib.sha256(open(T["shadow"], "rb").read()).hexdigest())
except OSError as e:
    print("DENIED", e)
""",
        _digest_of("shadow"),
    ),
    _escape(
        "read_root_only_file",
        "read a 0600 root-owned file on the host",
        'print(open(T["secret_file"]).read())',
        _token_in_output,
    ),
    _escape(
        "read_world_readable_file",
        "read a world-readable host file outside the workspace",
        'print(open(T["public_file"]).read())',
        _token_in_output,
    ),
    _escape(
        "read_project_database",
        "open the project's SQLite database and select a secret",
        """
import sqlite3
print(sqlite3.connect("file:" + T["db_file"] + "?mode=ro", uri=True).execute("select v from secrets").fetchall())
""",
        _token_in_output,
    ),
    _escape(
        "read_other_workspace",
        "read a file another execution keeps in its workspace",
        """
import glob
deadline = time.time() + 3
while time.time() < deadline:
    for path in glob.glob("/proc/*/root/workspace/neighbour.txt") + glob.glob("/proc/*/cwd/neighbour.txt") + [T["neighbour_hint"]]:
        try:
            print(open(path).read()); sys.exit(0)
        except (OSError, ValueError):
            pass
    time.sleep(0.05)
print("NOTFOUND")
""",
        lambda result, host: Verdict(
            host.neighbour_token not in result.stdout,
            "read the neighbour's file" if host.neighbour_token in result.stdout else "not found",
        ),
    ),
    _escape(
        "environment_secret",
        "find a secret from the parent's environment",
        "print(dict(os.environ)); print(open('/proc/self/environ', 'rb').read())",
        _token_in_output,
    ),
    _escape(
        "other_process_environ",
        "read a host process's environment through /proc",
        """
for pid in os.listdir("/proc"):
    if pid.isdigit():
        try:
            print(open("/proc/%s/environ" % pid, "rb").read())
        except OSError:
            pass
""",
        _token_in_output,
    ),
    _escape(
        "other_process_cmdline",
        "list host processes (their command lines) through /proc",
        """
for pid in os.listdir("/proc"):
    if pid.isdigit():
        try:
            print(open("/proc/%s/cmdline" % pid, "rb").read())
        except OSError:
            pass
""",
        _token_in_output,
    ),
    _escape(
        "kill_host_process",
        "SIGKILL a process of the host",
        """
try:
    os.kill(T["victim_pid"], 9); print("KILLED")
except OSError as e:
    print("DENIED", e)
""",
        _victim_alive,
    ),
    _escape(
        "list_host_interfaces",
        "read the host's network interfaces from /sys",
        """
try:
    print(os.listdir("/sys/class/net"))
except OSError as e:
    print("DENIED", e)
""",
        _sysfs,
    ),
    _write("host_tmp", "write a file into the host's /tmp"),
    _write("usr", "write a file into /usr/lib"),
    _write("etc", "write a file into /etc"),
    _write("root", "write a file into /"),
    _write("project", "write a file into the directory the host runs in"),
    _write("dev_shm", "write a file into the host's /dev/shm"),
    _write("via_proc_root", "write through a host process's /proc/PID/root"),
    _write("via_proc_cwd", "write through a host process's /proc/PID/cwd"),
    _escape(
        "tcp_host_loopback",
        "connect to a listener on the host's 127.0.0.1",
        'tcp("127.0.0.1", T["tcp_port"])',
        _listener("tcp"),
    ),
    _escape(
        "tcp_host_address",
        "connect to the host's own network address",
        'tcp(T["host_ip"], T["tcp_port"])',
        _listener("tcp"),
    ),
    _escape(
        "udp_host_loopback",
        "send a datagram to the host's 127.0.0.1",
        """
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for _ in range(5):
    try:
        s.sendto(T["token"].encode(), ("127.0.0.1", T["udp_port"])); print("SENT")
    except OSError as e:
        print("DENIED", e)
""",
        _listener("udp"),
    ),
    _escape(
        "abstract_unix_socket",
        "connect to an abstract unix socket the host listens on",
        """
s = socket.socket(socket.AF_UNIX)
try:
    s.connect("\\0" + T["abstract"]); s.sendall(T["token"].encode()); print("CONNECTED")
except OSError as e:
    print("DENIED", e)
""",
        _listener("unix"),
    ),
    _escape(
        "unix_socket_file",
        "connect to a unix socket file the host listens on",
        """
s = socket.socket(socket.AF_UNIX)
try:
    s.connect(T["unix_path"]); s.sendall(T["token"].encode()); print("CONNECTED")
except OSError as e:
    print("DENIED", e)
""",
        _listener("unix"),
    ),
    _escape(
        "cloud_metadata",
        "connect to the cloud metadata service 169.254.169.254",
        'tcp(T["metadata"][0], T["metadata"][1])',
        _connect_or_listener("tcp"),
    ),
    _escape(
        "private_range_host",
        "connect to a private-range (10/8) address",
        'tcp(T["private"][0], T["private"][1])',
        _connect_or_listener("tcp"),
    ),
    _escape(
        "raw_socket",
        "open a raw IP socket",
        "sc(41, socket.AF_INET, socket.SOCK_RAW, 1)",
        _syscall(),
    ),
    _escape(
        "packet_socket",
        "open an AF_PACKET socket",
        "sc(41, 17, socket.SOCK_RAW, 0)",
        _syscall(),
    ),
    _escape(
        "mount_tmpfs",
        "mount a filesystem",
        """
os.makedirs(T["scratch"] + "/mnt", exist_ok=True)
if sc(NR["mount"], b"none", (T["scratch"] + "/mnt").encode(), b"tmpfs", 0, None) == 0:
    sc(NR["umount2"], (T["scratch"] + "/mnt").encode(), 2)
""",
        _syscall(),
    ),
    _escape(
        "ptrace_attach",
        "ptrace-attach to a process",
        """
child = os.fork()
if child == 0:
    time.sleep(5); os._exit(0)
sc(NR["ptrace"], 16, child, 0, 0)
os.kill(child, 9); os.waitpid(child, 0)
""",
        _syscall(),
    ),
    _escape(
        "process_vm_readv",
        "read another process's memory with process_vm_readv",
        """
buf = ctypes.create_string_buffer(8)
local = (ctypes.c_void_p * 2)(ctypes.cast(buf, ctypes.c_void_p), 8)
remote = (ctypes.c_void_p * 2)(ctypes.cast(buf, ctypes.c_void_p), 8)
sc(NR["process_vm_readv"], os.getppid() or 1, local, 1, remote, 1, 0)
""",
        _syscall({errno.EPERM, errno.EACCES, errno.ENOSYS, errno.ESRCH}),
    ),
    _escape(
        "load_kernel_module",
        "load a kernel module (init_module and finit_module)",
        "sc(NR['init_module'], None, 0, b''); sc(NR['finit_module'], -1, b'', 0)",
        _syscall(),
    ),
    _escape(
        "unload_kernel_module",
        "remove a kernel module",
        "sc(NR['delete_module'], b'autonomic_no_such_module', 0)",
        _syscall(),
    ),
    _escape(
        "kexec",
        "load a new kernel with kexec_load",
        "sc(NR['kexec_load'], 0, 0, None, 0xdead0000)",
        _syscall(),
    ),
    _escape(
        "bpf",
        "use the bpf() syscall",
        "sc(NR['bpf'], 5, None, 0)",
        _syscall(),
    ),
    _escape(
        "perf_event_open",
        "open a perf event",
        "sc(NR['perf_event_open'], None, 0, -1, -1, 0)",
        _syscall(),
    ),
    _escape(
        "keyctl",
        "reach the kernel keyring",
        "sc(NR['keyctl'], 0, -3, 0)",
        _syscall(),
    ),
    _escape(
        "user_namespace",
        "create a nested user namespace",
        "sc(NR['unshare'], 0x10000000)",
        _syscall({errno.EPERM, errno.EACCES, errno.ENOSYS, errno.ENOSPC, errno.EUSERS}),
    ),
    _escape(
        "setns",
        "join another namespace with setns",
        """
try:
    fd = os.open("/proc/%d/ns/uts" % T["victim_pid"], os.O_RDONLY)
    sc(NR["setns"], fd, 0)
except OSError as e:
    print("DENIED", e)
""",
        _syscall(),
    ),
    _escape(
        "chroot",
        "chroot (the classic escape starts here)",
        "sc(NR['chroot'], b'.')",
        _syscall(),
    ),
    _escape(
        "io_uring",
        "set up io_uring (a common kernel exploit path)",
        "sc(NR['io_uring_setup'], 1, None)",
        _syscall(),
    ),
    _escape(
        "userfaultfd",
        "create a userfaultfd (used to win kernel races)",
        "r = sc(NR['userfaultfd'], 0)\nif r >= 0: os.close(r)",
        _syscall(),
    ),
    _escape(
        "device_node",
        "create a device node (/dev/mem's major/minor)",
        """
try:
    os.mknod(T["scratch"] + "/mem", 0o600 | 0o020000, os.makedev(1, 1)); print("SYSCALL 0 0")
except OSError as e:
    print("SYSCALL -1", e.errno)
""",
        _syscall(),
    ),
    _escape(
        "host_devices",
        "open host devices (/dev/mem, /dev/kmsg, /dev/sda, /dev/vda)",
        """
for dev in ("/dev/mem", "/dev/kmsg", "/dev/sda", "/dev/vda", "/dev/nvme0n1"):
    try:
        os.close(os.open(dev, os.O_RDONLY)); print("OPENED", dev); print("SYSCALL 0 0")
    except FileNotFoundError:
        pass
    except OSError as e:
        print("SYSCALL -1", e.errno)
""",
        _syscall({errno.EPERM, errno.EACCES, errno.ENOSYS, errno.ENXIO, errno.ENODEV}),
    ),
    _escape(
        "proc_sys_write",
        "write to /proc/sys (a sysctl, its current value)",
        """
path = "/proc/sys/vm/overcommit_ratio"
try:
    value = open(path).read()
    with open(path, "w") as f:
        f.write(value)
    print("SYSCALL 0 0")
except OSError as e:
    print("SYSCALL -1", e.errno)
""",
        _syscall({errno.EPERM, errno.EACCES, errno.EROFS, errno.ENOENT}),
    ),
    _escape(
        "outlive_the_sandbox",
        "leave a daemon running after the execution ends",
        'orphan("daemon"); print("SPAWNED")',
        _no_leftover,
    ),
)


def _abuse(name: str, description: str, code: str, limits: Limits, *expect: Ended) -> Probe:
    return Probe(
        name=name,
        kind="abuse",
        code=code,
        check=_token_in_output,  # unused: abuse probes are judged by _contained
        limits=limits,
        description=description,
        expect=frozenset(expect),
    )


ABUSE_LIMITS = Limits(
    wall_seconds=4.0,
    cpu_seconds=2.0,
    memory_mb=128,
    processes=32,
    file_size_mb=8,
    workspace_mb=16,
    output_bytes=1_000_000,
)

ABUSES: tuple[Probe, ...] = (
    _abuse(
        "fork_bomb",
        "fork without end",
        """
orphan("bomb")
while True:
    try:
        os.fork()
    except OSError:
        pass
""",
        ABUSE_LIMITS,
        Ended.TIMEOUT,
        Ended.CPU,
        Ended.MEMORY,
    ),
    _abuse(
        "memory_bomb",
        "allocate memory without end",
        "hog = []\nwhile True:\n    hog.append(bytearray(8 << 20))",
        ABUSE_LIMITS,
        Ended.MEMORY,
    ),
    _abuse(
        "disk_fill",
        "fill the workspace disk",
        """
n = 0
try:
    while True:
        with open("fill%d" % n, "wb") as f:
            f.write(b"x" * (4 << 20))
        n += 1
except OSError as e:
    print("FULL", n, e)
""",
        ABUSE_LIMITS,
        Ended.EXIT,
    ),
    _abuse(
        "many_fds",
        "open 10,000 file descriptors",
        """
fds = []
try:
    for _ in range(10000):
        fds.append(os.open("/dev/null", os.O_RDONLY))
except OSError as e:
    print("LIMIT", e)
print("FDS", len(fds))
""",
        ABUSE_LIMITS,
        Ended.EXIT,
    ),
    _abuse(
        "cpu_spin",
        "spin on the CPU",
        "while True:\n    pass",
        replace(ABUSE_LIMITS, cpu_seconds=1.0, wall_seconds=10.0),
        Ended.CPU,
    ),
    _abuse(
        "sleep_forever",
        "sleep forever (and leave a child sleeping)",
        'orphan("sleeper")\ntime.sleep(10**6)',
        ABUSE_LIMITS,
        Ended.TIMEOUT,
    ),
    _abuse(
        "output_flood",
        "write 100 MB to stdout",
        """
chunk = "y" * (1 << 20)
for _ in range(100):
    sys.stdout.write(chunk)
""",
        ABUSE_LIMITS,
        Ended.OUTPUT_LIMIT,
    ),
)

PROBES: tuple[Probe, ...] = ESCAPES + ABUSES


# -- the host side --------------------------------------------------------------------------------


@dataclass
class ProbeHost:
    """What the probes aim at, planted by the host, and the host's listeners.

    ``harmless=True`` aims everything at stand-ins in a temporary directory (used with
    ``HostRunner``, where nothing stands between the probe and the host).
    """

    harmless: bool = False
    token: str = field(default_factory=lambda: secrets.token_hex(12))
    neighbour_token: str = field(default_factory=lambda: secrets.token_hex(12))
    targets: dict[str, Any] = field(default_factory=dict)
    received: dict[str, int] = field(default_factory=dict)
    victim: subprocess.Popen[bytes] | None = None
    check_dirs: dict[str, str] = field(default_factory=dict)
    """Where the host looks for a write probe's marker, when not where the probe aimed."""
    _dir: Path | None = None
    _servers: list[asyncio.AbstractServer] = field(default_factory=list)
    _udp: asyncio.DatagramTransport | None = None
    _env_before: str | None = None
    _proc_root: Path = Path("/nonexistent")

    def marker_name(self, where: str) -> str:
        return f"autonomic-probe-{where}-{self.token}"

    async def __aenter__(self) -> ProbeHost:
        files = self._plant()
        tmp = files["dir"]
        self.victim = self._spawn_victim()
        write = files["write"]
        write["via_proc_cwd"] = f"/proc/{self.victim.pid}/cwd"
        write["via_proc_root"] = f"/proc/{self.victim.pid}/root{self._proc_root}"
        loop = asyncio.get_running_loop()
        tcp = await asyncio.start_server(self._on_stream("tcp"), host="0.0.0.0", port=0)  # noqa: S104
        unix_path = str(tmp / "probe.sock")
        unix = await asyncio.start_unix_server(self._on_stream("unix"), path=unix_path)
        os.chmod(unix_path, 0o777)  # noqa: S103 -- the probe must fail for isolation, not modes
        abstract = f"autonomic-probe-{self.token}"
        abstract_server = await asyncio.start_unix_server(
            self._on_stream("unix"), path="\0" + abstract
        )
        self._servers = [tcp, unix, abstract_server]
        self._udp, _ = await loop.create_datagram_endpoint(
            lambda: _Datagrams(self), local_addr=("127.0.0.1", 0)
        )
        tcp_port = tcp.sockets[0].getsockname()[1]
        udp_port = self._udp.get_extra_info("sockname")[1]
        metadata = ("169.254.169.254", 80) if not self.harmless else ("127.0.0.1", tcp_port)
        private = ("10.255.255.1", tcp_port) if not self.harmless else ("127.0.0.1", tcp_port)
        self._env_before = os.environ.get(ENV_NAME)
        os.environ[ENV_NAME] = self.token
        self.targets = {
            "token": self.token,
            "shadow": str(files["shadow"]),
            "secret_file": str(tmp / "secret.txt"),
            "public_file": str(tmp / "public.txt"),
            "db_file": str(tmp / "project.db"),
            "neighbour_hint": str(tmp / "neighbour" / "neighbour.txt") if self.harmless else "",
            "write": write,
            "markers": {key: self.marker_name(key) for key in write},
            "scratch": str(tmp / "scratch") if self.harmless else "/workspace",
            "victim_pid": self.victim.pid,
            "tcp_port": tcp_port,
            "udp_port": udp_port,
            "host_ip": _host_ip(),
            "abstract": abstract,
            "unix_path": unix_path,
            "metadata": list(metadata),
            "private": list(private),
            "host_ifaces": [n for n in _interfaces() if n != "lo"],
        }
        return self

    def _plant(self) -> dict[str, Any]:
        """Create the files the probes aim at (synchronous: a handful of small files)."""
        tmp = Path(tempfile.mkdtemp(prefix="autonomic-probe-"))
        tmp.chmod(0o755)
        self._dir = tmp
        secret = tmp / "secret.txt"
        secret.write_text(self.token)
        secret.chmod(0o600)
        public = tmp / "public.txt"
        public.write_text(self.token)
        public.chmod(0o644)
        db = tmp / "project.db"
        with contextlib.closing(sqlite3.connect(db)) as conn:
            conn.execute("create table secrets(v text)")
            conn.execute("insert into secrets values (?)", (self.token,))
            conn.commit()
        db.chmod(0o644)
        if self.harmless:
            shadow = tmp / "shadow"
            shadow.write_text(f"root:{self.token}:19000:0:99999:7:::\n")
            shadow.chmod(0o600)
        else:
            shadow = Path("/etc/shadow")
        scratch = tmp / "scratch"
        scratch.mkdir(mode=0o777)
        scratch.chmod(0o777)
        victim_cwd = tmp / "victim-cwd"
        victim_cwd.mkdir()
        proc_root = tmp / "via-proc-root"
        proc_root.mkdir()
        write = {
            "host_tmp": "/tmp",  # noqa: S108 -- the host's /tmp is the target being protected
            "usr": "/usr/lib",
            "etc": "/etc",
            "root": "/",
            "project": os.getcwd(),
            "dev_shm": "/dev/shm",  # noqa: S108
        }
        if self.harmless:
            for key in write:
                (tmp / f"w-{key}").mkdir()
                write[key] = str(tmp / f"w-{key}")
        self._proc_root = proc_root
        self.check_dirs = {"via_proc_root": str(proc_root), "via_proc_cwd": str(victim_cwd)}
        return {"dir": tmp, "write": write, "shadow": shadow}

    def _spawn_victim(self) -> subprocess.Popen[bytes]:
        assert self._dir is not None
        return subprocess.Popen(  # noqa: S603 -- a fixed argv: the victim for the probes
            ["/bin/sh", "-c", "sleep 600", f"victim-{self.token}"],
            cwd=self._dir / "victim-cwd",
            env={"PATH": "/usr/bin:/bin", ENV_NAME: self.token},
            start_new_session=True,
        )

    def respawn_victim(self) -> None:
        """A probe killed the victim: start another so later probes still have a target."""
        if self.victim is not None:
            self.victim.wait()
        self.victim = self._spawn_victim()
        self.targets["victim_pid"] = self.victim.pid
        self.targets["write"]["via_proc_cwd"] = f"/proc/{self.victim.pid}/cwd"
        self.targets["write"]["via_proc_root"] = f"/proc/{self.victim.pid}/root{self._proc_root}"

    async def __aexit__(self, *exc: object) -> None:
        if self._env_before is None:
            os.environ.pop(ENV_NAME, None)
        else:
            os.environ[ENV_NAME] = self._env_before
        for server in self._servers:
            server.close()
            await server.wait_closed()
        if self._udp is not None:
            self._udp.close()
        if self.victim is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.victim.pid, signal.SIGKILL)
            self.victim.wait()
        for pid in self.leftover_pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self._remove_files()

    def _remove_files(self) -> None:
        if self._dir is not None:
            mnt = self._dir / "scratch" / "mnt"
            if os.path.ismount(mnt):  # a harmless run's mount probe succeeded and left it
                libc = ctypes.CDLL(None, use_errno=True)
                libc.umount2(str(mnt).encode(), 2)
            shutil.rmtree(self._dir, ignore_errors=True)

    def _on_stream(
        self, channel: str
    ) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Any]:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, asyncio.IncompleteReadError):
                data = await asyncio.wait_for(reader.read(256), 2.0)
                if self.token.encode() in data:
                    self.received[channel] = self.received.get(channel, 0) + 1
            writer.close()

        return handle

    def leftover_pids(self) -> list[int]:
        """Host processes (other than the victim) whose command line carries the token."""
        found = []
        needle = self.token.encode()
        victim = self.victim.pid if self.victim is not None else -1
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) == victim:
                continue
            with contextlib.suppress(OSError):
                if needle in Path(f"/proc/{entry}/cmdline").read_bytes():
                    found.append(int(entry))
        return found


class _Datagrams(asyncio.DatagramProtocol):
    def __init__(self, host: ProbeHost) -> None:
        self.host = host

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if self.host.token.encode() in data:
            self.host.received["udp"] = self.host.received.get("udp", 0) + 1


def _host_ip() -> str:
    """The address of the host's default route (no packet is sent)."""
    with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(("192.0.2.254", 9))
        return str(s.getsockname()[0])
    return "127.0.0.1"


def _interfaces() -> list[str]:
    try:
        return sorted(os.listdir("/sys/class/net"))
    except OSError:
        return []


# -- running them ---------------------------------------------------------------------------------


def probe_source(probe: Probe, host: ProbeHost) -> str:
    return PRELUDE.format(targets=json.dumps(host.targets), numbers=json.dumps(SYS)) + probe.code


async def run_probe(sandbox: Sandbox, probe: Probe, host: ProbeHost) -> ProbeOutcome:
    """Run one probe in ``sandbox`` and judge it from the host."""
    host.received.clear()
    execution = Execution(code=probe_source(probe, host), limits=probe.limits)
    neighbour: asyncio.Task[Result] | None = None
    if probe.name == "read_other_workspace":
        neighbour = asyncio.ensure_future(sandbox.execute(_neighbour(host)))
    try:
        result = await sandbox.execute(execution)
    finally:
        if neighbour is not None:
            await neighbour
    if probe.kind == "abuse":
        verdict = _contained(result, probe, host)
    else:
        verdict = probe.check(result, host)
        if host.victim is not None and host.victim.poll() is not None:
            host.respawn_victim()
    return ProbeOutcome(
        probe=probe.name,
        kind=probe.kind,
        held=verdict.held,
        ended=result.ended,
        duration_s=result.duration_s,
        evidence=verdict.evidence,
        description=probe.description,
    )


def _neighbour(host: ProbeHost) -> Execution:
    hint = host.targets["neighbour_hint"]
    code = f"""
import os, time
for path in ("neighbour.txt", {hint!r}):
    if path:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        with open(path, "w") as f:
            f.write({host.neighbour_token!r})
time.sleep(3.5)
"""
    return Execution(code=code, limits=replace(ESCAPE_LIMITS, wall_seconds=6.0))


async def run_probes(
    sandbox: Sandbox,
    *,
    harmless: bool = False,
    kinds: Iterable[Kind] = ("escape", "abuse"),
    names: Iterable[str] | None = None,
) -> list[ProbeOutcome]:
    """Run the chosen probes one after another against ``sandbox``."""
    wanted = set(kinds)
    chosen = [p for p in PROBES if p.kind in wanted and (names is None or p.name in set(names))]
    outcomes = []
    async with ProbeHost(harmless=harmless) as host:
        for probe in chosen:
            outcomes.append(await run_probe(sandbox, probe, host))
    return outcomes


class HostRunner:
    """No sandbox at all: ``python3`` on the host, in a temporary directory, with the host's env.

    Only for proving that the escape probes can succeed (aimed at harmless stand-ins); never a
    backend, and not in ``BACKENDS``.
    """

    @property
    def name(self) -> str:
        return "none"

    async def execute(self, execution: Execution) -> Result:
        begun = time.monotonic()
        limits = execution.limits
        problem = check_files(execution.files, limits.workspace_mb)
        if problem is not None:
            raise ValueError(problem)
        with tempfile.TemporaryDirectory(prefix="autonomic-host-") as work:
            for rel, data in execution.files.items():
                (Path(work) / rel).parent.mkdir(parents=True, exist_ok=True)
                (Path(work) / rel).write_bytes(data)
            argv = list(execution.command or ("/usr/bin/python3", "-c", execution.code or ""))
            launcher = Launcher.spawn(argv, env=dict(os.environ), cwd=work)
            outcome = await launcher.run(
                execution.stdin,
                wall_seconds=limits.wall_seconds,
                output_bytes=limits.output_bytes,
                on_kill=lambda: None,
            )
        ended = Ended.EXIT
        if outcome.output_exceeded:
            ended = Ended.OUTPUT_LIMIT
        elif outcome.timed_out:
            ended = Ended.TIMEOUT
        return Result(
            ended=ended,
            exit_code=outcome.exit_code,
            stdout=outcome.stdout.data.decode("utf-8", "replace"),
            stderr=outcome.stderr.data.decode("utf-8", "replace"),
            stdout_truncated=outcome.stdout.truncated,
            stderr_truncated=outcome.stderr.truncated,
            duration_s=time.monotonic() - begun,
            usage=Usage(cpu_seconds=outcome.cpu_seconds, max_rss_mb=outcome.max_rss_mb),
            backend=self.name,
        )

    async def close(self) -> None:
        return None
