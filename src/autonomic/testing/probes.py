"""Escape and abuse probes, each judged from the host, for any ``Sandbox``.

A probe is Python code that tries one thing a sandbox must prevent. Its verdict never rests on
the probe saying "I failed": the host plants what the probe aims at and looks afterwards — a
secret's digest or token in the output, a marker file on the host's disk, a connection recorded by
a listener the host runs, a victim process still alive, a process left behind. Where the only
evidence is the kernel's answer to a syscall (mount, ptrace, module loading, ...), the probe prints
the raw return value and errno and the host decides: any answer other than "not permitted" means
the call reached the kernel's real implementation and counts as an escape.

The host side (targets, listeners, the runner) is in ``probe_host.py``.
``ProbeHost(harmless=True)`` aims the same probes at stand-ins in a temporary directory (a copy of
a shadow file, marker directories, local listeners) so that running them with no sandbox at all
(``HostRunner``) shows they *can* succeed: a probe that cannot fail proves nothing.
"""

from __future__ import annotations

import errno
import hashlib
import re
import subprocess
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal, Protocol

from autonomic.ports.sandbox import Ended, Limits, Result


class ProbeHost(Protocol):
    """What a probe's check reads on the host after the run (``probe_host.ProbeHost`` plants and
    watches it all)."""

    token: str
    neighbour_token: str
    targets: dict[str, Any]
    received: dict[str, int]
    victim: subprocess.Popen[bytes] | None
    check_dirs: dict[str, str]

    def marker_name(self, where: str) -> str: ...

    def leftover_pids(self) -> list[int]: ...


ENV_NAME = "AUTONOMIC_PROBE_SECRET"
DENIED_ERRNOS = frozenset({errno.EPERM, errno.EACCES, errno.ENOSYS, errno.EAFNOSUPPORT})
ESCAPE_LIMITS = Limits(wall_seconds=10.0, cpu_seconds=5.0, memory_mb=128, processes=32)
Kind = Literal["escape", "abuse"]

PRELUDE = """\
import ctypes, errno, json, os, socket, subprocess, sys, time
print("PROBE-RAN", flush=True)
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


RAN_MARKER = "PROBE-RAN"
"""The prelude's first output: a probe whose sandbox never ran the code proves nothing."""


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


def contained(
    result: Result,
    probe: Probe,
    host: ProbeHost,
    limits: Limits | None = None,
    allowance_s: float = 0.0,
    cpu_allowance_s: float = 0.0,
) -> Verdict:
    """Ended for an expected reason within its limit + 1 s, nothing left behind.

    ``limits`` are those the probe actually ran with (a backend's plan may raise them);
    ``allowance_s`` is added to the host-measured bound for backends whose start and
    teardown happen outside the limit (a microVM under emulation); their own in-guest
    clock is checked against limit + 1 s by the caller. ``cpu_allowance_s`` likewise widens
    the CPU bound where the backend's CPU accounting is inflated (TCG on a loaded host).
    """
    limits = limits or probe.limits
    bound = limits.wall_seconds + 1.0 + allowance_s
    problems = []
    if result.ended not in probe.expect:
        problems.append(f"ended {result.ended} ({result.detail}), expected {sorted(probe.expect)}")
    if result.duration_s > bound:
        problems.append(f"took {result.duration_s:.2f} s > {bound:.1f} s")
    cpu_bound = limits.cpu_seconds + 1.0 + cpu_allowance_s
    if result.ended is Ended.CPU and result.usage.cpu_seconds > cpu_bound:
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
