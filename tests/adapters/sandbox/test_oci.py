"""The OCI backend against real runc (and gVisor's runsc): every limit, checked from the host.

Probes that must fail inside the container are first shown to succeed on the host (as this test
process), so each test can fail.
"""

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest

from autonomic.adapters.sandbox import build_sandbox
from autonomic.adapters.sandbox.oci import OciSandbox, doctor
from autonomic.errors import ConfigError, EgressRuleInvalid, InvalidInput
from autonomic.ports.sandbox import (
    Ended,
    Execution,
    Limits,
    NetworkPolicy,
    Result,
    Sandbox,
    SandboxUnavailable,
)
from autonomic.testing.egress_world import ALLOWED, World, leftovers, probe_code, probe_egress

FAST = Limits(wall_seconds=5, cpu_seconds=5)


def _require(runtime: str) -> None:
    ok, why = doctor(runtime)
    if not ok:
        if os.environ.get("CI"):
            pytest.fail(f"OCI backend ({runtime}) unavailable under CI: {why}")
        pytest.skip(why)


@pytest.fixture(scope="module")
def runc_ok() -> None:
    _require("runc")


@pytest.fixture
def box(runc_ok, tmp_path):
    sandbox = OciSandbox(state_root=tmp_path / "state")
    yield sandbox
    asyncio.run(sandbox.close())
    assert _runtime_list("runc", tmp_path / "state") == []


def _runtime_list(runtime: str, root: Path) -> list[str]:
    if not root.exists():
        return []
    out = subprocess.run(
        [shutil.which(runtime) or runtime, "--root", str(root), "list"],
        capture_output=True,
        text=True,
        check=True,
    )
    return [line.split()[0] for line in out.stdout.splitlines()[1:] if line.strip()]


def run(box: Sandbox, code: str | None = None, **kw) -> Result:
    kw.setdefault("limits", FAST)
    return asyncio.run(box.execute(Execution(code=code, **kw)))


def _host_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=30
    )


def _ax_cgroups() -> set[str]:
    found: set[str] = set()
    for root in Path("/sys/fs/cgroup").iterdir():
        if root.is_dir():
            found.update(str(p) for p in root.glob("**/ax-*"))
    return found


def _ax_processes() -> set[int]:
    pids = set()
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if "/ax-" in (proc / "cgroup").read_text():
                    pids.add(int(proc.name))
            except OSError:
                continue
    return pids


_OTHERS: dict[str, set[Any]] = {"cgroups": set(), "processes": set()}
"""The containers' cgroups and processes that were on the host when the test began."""


@pytest.fixture(autouse=True)
def _others_on_the_host() -> None:
    """The host is shared: another run may have containers going, and one killed mid-test
    leaves its containers' cgroups behind (runc's, not ours to remove). A test judges only
    what appeared while it ran."""
    _OTHERS["cgroups"] = _ax_cgroups()
    _OTHERS["processes"] = _ax_processes()


def _leftover_cgroups() -> list[str]:
    """Containers' cgroups made since the test began and still there."""
    return sorted(_ax_cgroups() - _OTHERS["cgroups"])


def _processes_in_sandboxes() -> list[int]:
    """Processes in a container's cgroup that were not there when the test began."""
    return sorted(_ax_processes() - _OTHERS["processes"])


def test_result_carries_stdout_stderr_and_exit_code(box):
    result = run(box, "import sys\nprint('out')\nprint('err', file=sys.stderr)\nsys.exit(3)")
    assert (result.ended, result.exit_code) == (Ended.EXIT, 3)
    assert (result.stdout, result.stderr) == ("out\n", "err\n")
    assert not (result.stdout_truncated)
    assert not (result.stderr_truncated)
    assert result.backend == "oci:runc"
    assert result.duration_s > 0
    assert result.usage.cpu_seconds > 0
    assert result.usage.max_rss_mb > 0
    assert not result.ok


def test_files_stdin_and_commands_reach_the_workspace(box):
    result = run(
        box,
        "import sys; print(open('data/in.txt').read(), sys.stdin.read())",
        files={"data/in.txt": b"from-file"},
        stdin=b"from-stdin",
    )
    assert result.ok
    assert result.stdout == "from-file from-stdin\n"
    listing = run(box, command=("/bin/ls", "/workspace"), files={"a.txt": b"x"})
    assert listing.ok
    assert listing.stdout.split() == ["a.txt"]


def test_bad_input_gives_clean_results(box):
    syntax = run(box, "def (:")
    assert (syntax.ended, syntax.exit_code) == (Ended.EXIT, 1)
    assert "SyntaxError" in syntax.stderr
    junk = run(box, "import sys; sys.stdout.buffer.write(bytes(range(256)))")
    assert junk.ok
    assert "\ufffd" in junk.stdout


def test_malformed_requests_are_refused_with_a_clear_error(box):
    with pytest.raises(InvalidInput, match="exactly one of code or command"):
        run(box, "print(1)", command=("ls",))
    escaping = run(box, "print(1)", files={"../escape": b"x"})
    assert escaping.ended is Ended.REFUSED
    assert "must be relative" in escaping.detail
    with pytest.raises(SandboxUnavailable, match="needs an uplink network namespace"):
        run(box, "print(1)", limits=Limits(network=NetworkPolicy.ALLOWLIST))
    with pytest.raises(ConfigError, match="unknown sandbox backend"):
        build_sandbox("nope")
    assert isinstance(build_sandbox("oci"), Sandbox)


def test_wall_timeout_kills_the_container(box):
    empty = run(box, "pass")  # this machine's pace, now: a busy host starts containers slowly
    result = run(box, "import time\ntime.sleep(600)", limits=Limits(wall_seconds=1))
    assert result.ended is Ended.TIMEOUT
    assert result.exit_code is None
    assert result.duration_s < 3 * (empty.duration_s + 1), (result, empty)
    assert _processes_in_sandboxes() == []


def test_cpu_time_limit(box):
    limits = Limits(wall_seconds=60, cpu_seconds=1)
    result = run(box, "while True: pass", limits=limits)
    assert result.ended is Ended.CPU, result
    assert result.duration_s < limits.wall_seconds / 2


def test_memory_limit_covers_all_processes(box):
    code = (
        "import os\n"
        "blocks = []\n"
        "if os.fork() == 0:\n"
        "    blocks.append(bytearray(40 << 20))\n"
        "    import time; time.sleep(60)\n"
        "blocks.append(bytearray(40 << 20))\n"
        "print(os.wait()[1])\n"
    )
    result = run(box, code, limits=Limits(memory_mb=64, wall_seconds=20))
    # The limit covers both processes: one of them is OOM-killed. When the kernel killed the
    # child, the parent exits 0 and the end is read from the cgroup's OOM notification, which on
    # a loaded host can trail past the bounded wait (seen once in CI): then the child's SIGKILL,
    # which the parent prints, is the proof the limit held.
    if result.ended is Ended.MEMORY:
        assert "64 MiB" in result.detail
    else:
        assert result.ended is Ended.EXIT, result
        assert result.stdout.strip() == str(int(signal.SIGKILL)), result
    small = run(box, "x = bytearray(20 << 20); print(len(x))", limits=Limits(memory_mb=64))
    assert small.ok


def test_output_cap_truncates_and_ends_the_run(box):
    result = run(
        box,
        "import sys\nwhile True: sys.stdout.write('x' * 65536)",
        limits=Limits(output_bytes=1000),
    )
    assert result.ended is Ended.OUTPUT_LIMIT
    assert result.stdout_truncated
    assert result.stdout == "x" * 1000


def test_fork_bomb_is_contained_and_reaped(box):
    code = "import os\nwhile True:\n    try: os.fork()\n    except OSError: pass\n"
    result = run(box, code, limits=Limits(processes=16, wall_seconds=2))
    assert result.ended is Ended.TIMEOUT
    assert _processes_in_sandboxes() == []
    assert _leftover_cgroups() == []


def test_file_size_and_workspace_limits(box):
    big_file = run(
        box,
        "open('big', 'wb').write(b'x' * (3 << 20))",
        limits=Limits(file_size_mb=2, workspace_mb=8),
    )
    assert big_file.exit_code == 1
    assert "File too large" in big_file.stderr
    fill = run(
        box,
        "for i in range(10): open(f'f{i}', 'wb').write(b'x' * (1 << 20))",
        limits=Limits(file_size_mb=4, workspace_mb=4),
    )
    assert fill.exit_code == 1
    assert "No space left" in fill.stderr


def test_no_network_not_even_to_a_host_listener(box):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    accepted: list[str] = []

    def accept() -> None:
        conn, peer = listener.accept()
        conn.close()
        accepted.append(peer[0])

    probe = (
        f"import socket; socket.create_connection(('127.0.0.1', {port}), timeout=2); print('in')"
    )
    try:
        result = run(box, probe)
        assert result.exit_code == 1
        assert "in" not in result.stdout
        thread = threading.Thread(target=accept)
        thread.start()
        assert _host_python(probe).stdout == "in\n"  # the same probe works without the sandbox
        thread.join(timeout=10)
        assert accepted == ["127.0.0.1"]
    finally:
        listener.close()
    links = run(box, "import socket; print(socket.if_nameindex())")
    assert "eth" not in links.stdout


def test_host_files_are_out_of_reach(box, tmp_path):
    assert _host_python("print(len(open('/etc/shadow').read()) > 0)").stdout == "True\n"
    shadow = run(box, "print(open('/etc/shadow').read())")
    assert shadow.exit_code == 1
    assert shadow.stdout == ""
    marker = tmp_path / f"marker-{uuid.uuid4().hex}"
    for target in (str(marker), "/usr/marker", "/tmp/marker", "/marker"):
        result = run(box, f"open({target!r}, 'w').write('escaped')")
        assert result.exit_code == 1, target
        assert "Read-only file system" in result.stderr or "No such file" in result.stderr
    assert not marker.exists()
    assert not Path("/usr/marker").exists()


def test_runs_unprivileged_with_a_clear_environment(box, monkeypatch):
    monkeypatch.setenv("AUTONOMIC_TEST_SECRET", "hunter2")
    code = (
        "import os\n"
        "status = dict(l.split(':\\t') for l in open('/proc/self/status').read().splitlines()"
        " if ':\\t' in l)\n"
        "print(os.getuid(), os.getgid(), status['CapEff'].strip(), status['NoNewPrivs'].strip())\n"
        "print(sorted(os.environ))\n"
    )
    result = run(box, code)
    ids, env = result.stdout.splitlines()
    assert ids == "65534 65534 0000000000000000 1"
    assert "AUTONOMIC_TEST_SECRET" not in env
    assert "hunter2" not in result.stdout


def test_seccomp_refuses_dangerous_syscalls(box):
    code = (
        "import ctypes, os\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "for name, nr, args in [('ptrace', 101, (16, 1, 0, 0)), ('unshare', 272, (0x10000000,)),\n"
        "                       ('keyctl', 250, (0, 0)), ('bpf', 321, (0, 0, 0)),\n"
        "                       ('mount', 165, (0, 0, 0, 0, 0))]:\n"
        "    rc = libc.syscall(nr, *args)\n"
        "    print(name, rc, ctypes.get_errno())\n"
    )
    result = run(box, code)
    assert result.ok, result.stderr
    for line in result.stdout.splitlines():
        _name, rc, err = line.split()
        assert (rc, err) == ("-1", "1"), line  # EPERM from the filter
    # without the filter the same unshare(CLONE_NEWUSER) succeeds (this test process)
    host = _host_python(
        "import ctypes; libc = ctypes.CDLL(None, use_errno=True);"
        "print(libc.syscall(272, 0x10000000), ctypes.get_errno())"
    )
    assert host.stdout.split()[0] == "0"


def test_workspaces_are_fresh_and_private(box):
    first = run(box, "open('left-behind', 'w').write('x'); import os; print(os.listdir('.'))")
    assert "left-behind" in first.stdout
    second = run(box, "import os; print(os.listdir('.'))")
    assert second.stdout == "['main.py']\n"

    async def both() -> list[Result]:
        slow = box.execute(
            Execution(code="open('mine', 'w').write('a'); import time; time.sleep(2)", limits=FAST)
        )
        peek = box.execute(Execution(code="import os; print(sorted(os.listdir('/')))", limits=FAST))
        return await asyncio.gather(slow, peek)

    _, peek = asyncio.run(both())
    assert "mine" not in peek.stdout


def test_nothing_is_left_behind(runc_ok, tmp_path):
    before = set(Path(os.environ.get("TMPDIR", "/tmp")).glob("autonomic-oci-*"))
    sandbox = OciSandbox(state_root=tmp_path / "state")

    async def many() -> list[Result]:
        runs = [
            sandbox.execute(Execution(code="print(1)", limits=FAST)),
            sandbox.execute(
                Execution(code="import time; time.sleep(60)", limits=Limits(wall_seconds=1))
            ),
            sandbox.execute(Execution(code="x = bytearray(1 << 30)", limits=Limits(memory_mb=32))),
        ]
        return await asyncio.gather(*runs)

    results = asyncio.run(many())
    assert [r.ended for r in results] == [Ended.EXIT, Ended.TIMEOUT, Ended.MEMORY]
    asyncio.run(sandbox.close())
    assert set(Path(os.environ.get("TMPDIR", "/tmp")).glob("autonomic-oci-*")) == before
    assert _runtime_list("runc", tmp_path / "state") == []
    assert _processes_in_sandboxes() == []
    assert _leftover_cgroups() == []


def test_gvisor_runsc_runs_the_same_requests(tmp_path):
    _require("runsc")
    sandbox = OciSandbox(runtime="runsc", state_root=tmp_path / "state")
    try:
        hello = run(sandbox, "print(sum(range(1000)))")
        assert hello.ok
        assert hello.stdout == "499500\n"
        assert hello.backend == "oci:runsc"
        shadow = run(sandbox, "open('/etc/shadow').read()")
        assert shadow.exit_code == 1
        slow = run(sandbox, "import time; time.sleep(60)", limits=Limits(wall_seconds=2))
        assert slow.ended is Ended.TIMEOUT
        # gVisor ignores RLIMIT_CPU; the host-side watch of the cgroup enforces it instead
        spin = run(sandbox, "while True: pass", limits=Limits(cpu_seconds=1, wall_seconds=60))
        assert spin.ended is Ended.CPU, spin
        assert spin.duration_s < 30  # half the wall limit: the CPU limit ended it
        memory = run(sandbox, "x = bytearray(1 << 30)", limits=Limits(memory_mb=64))
        assert memory.ended is Ended.MEMORY, memory
    finally:
        asyncio.run(sandbox.close())
    assert _runtime_list("runsc", tmp_path / "state") == []
    assert _processes_in_sandboxes() == []


def test_twenty_in_flight_complete_and_leave_nothing(box):
    async def many() -> list[Result]:
        return await asyncio.gather(
            *(box.execute(Execution(code=f"print({i} * 2)", limits=FAST)) for i in range(20))
        )

    results = asyncio.run(many())
    assert [r.stdout for r in results] == [f"{i * 2}\n" for i in range(20)]
    assert _processes_in_sandboxes() == []
    assert _leftover_cgroups() == []


# -- egress allow-lists (test hosts in namespaces the tests create; see egress_world) ----------


def _egress(world: World, wall: float = 20.0) -> Limits:
    return Limits(
        wall_seconds=wall,
        cpu_seconds=wall,
        network=NetworkPolicy.ALLOWLIST,
        egress_allow=(f"{ALLOWED}:8080",),
    )


def test_an_allow_list_joins_the_egress_namespace_and_nothing_else(runc_ok, world, tmp_path):
    box = OciSandbox(state_root=tmp_path / "state", egress_uplink=world.name)
    try:
        verdict = asyncio.run(probe_egress(box, world))
        assert verdict.held, verdict.answers
        # Without the allow-list the same container has no network at all.
        none = run(box, probe_code(world, timeout=1.0))
        assert none.ok, none.stderr
        assert "hi" not in none.stdout
    finally:
        asyncio.run(box.close())
    assert leftovers(world) == []


def test_a_bad_entry_or_a_missing_uplink_is_refused_before_anything_is_built(
    runc_ok, world, tmp_path
):
    box = OciSandbox(state_root=tmp_path / "state", egress_uplink=world.name)
    bad = Limits(network=NetworkPolicy.ALLOWLIST, egress_allow=("10.99.0.2:99999",))
    with pytest.raises(EgressRuleInvalid, match="not a number from 1 to 65535"):
        run(box, "print(1)", limits=bad)
    with pytest.raises(InvalidInput, match="network policy is NONE"):
        run(box, "print(1)", limits=Limits(egress_allow=("10.99.0.2:8080",)))
    missing = OciSandbox(state_root=tmp_path / "state", egress_uplink="autonomic-no-such-ns")
    with pytest.raises(SandboxUnavailable, match="does not exist"):
        run(missing, "print(1)", limits=_egress(world))
    assert leftovers(world) == []


def test_timeout_and_cancel_leave_no_namespace_behind(runc_ok, world, tmp_path):
    box = OciSandbox(state_root=tmp_path / "state", egress_uplink=world.name)
    hang = (
        f"import socket, time\nc = socket.create_connection(('{ALLOWED}', 8080))\n"
        "print(c.recv(2).decode(), flush=True)\ntime.sleep(600)"
    )
    try:
        result = run(box, hang, limits=_egress(world, wall=3.0))
        assert result.ended is Ended.TIMEOUT
        assert result.stdout == "hi\n"  # it was connected when the wall limit hit
        assert leftovers(world) == []

        async def cancel_during_build() -> None:
            task = asyncio.ensure_future(box.execute(Execution(code=hang, limits=_egress(world))))
            await asyncio.sleep(0)  # it starts building its network; cancel it there
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

        asyncio.run(cancel_during_build())
        assert leftovers(world) == []
    finally:
        asyncio.run(box.close())


_RUNSC_NETWORK = """
import json, socket
out = {"interfaces": sorted(name for _, name in socket.if_nameindex())}
udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
udp.connect((ALLOWED, 8080))  # no packet: the kernel picks the source address of the route
out["source"] = udp.getsockname()[0]
udp.close()
try:
    socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP).close()
    out["raw"] = "opened"
except OSError as exc:
    out["raw"] = type(exc).__name__
print(json.dumps(out))
"""


def test_runsc_network_host_is_the_egress_namespace_not_the_host(
    world: World, tmp_path: Path
) -> None:
    """gVisor runs with ``--network=host`` *inside* the per-execution namespace: "host" must
    mean that namespace. The code sees only its loopback and the veth to the router (``eth0``,
    10.255.255.2/30 - an address the host does not have), cannot open a raw socket to forge packets past the router's rules,
    and the disallowed destinations (another port, another private host, the metadata address,
    the router, the host's loopback) do not answer while the allow-listed one does."""
    _require("runsc")
    box = OciSandbox(runtime="runsc", state_root=tmp_path / "state", egress_uplink=world.name)
    try:
        verdict = asyncio.run(probe_egress(box, world))
        assert verdict.held, verdict.answers
        assert verdict.answers[verdict.allowed] == "hi"
        code = f"ALLOWED = {ALLOWED!r}\n{_RUNSC_NETWORK}"
        seen = run(box, code, limits=_egress(world))
        assert seen.ok, seen.stderr
        inside = json.loads(seen.stdout)
        assert inside["interfaces"] == ["eth0", "lo"], inside
        assert inside["source"] == "10.255.255.2", inside
        host = subprocess.run(
            ["ip", "-4", "-o", "addr", "show"], capture_output=True, text=True, check=True
        ).stdout
        assert "10.255.255.2/" not in host  # the root namespace has no such address
        assert inside["raw"] != "opened", inside
    finally:
        asyncio.run(box.close())
    assert leftovers(world) == []
    assert _runtime_list("runsc", tmp_path / "state") == []
