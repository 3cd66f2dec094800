"""The microVM backend against real QEMU (TCG emulation on CI): limits, isolation, snapshots.

Every VM start costs seconds under emulation, so several host-verified probes share one
execution where they do not interfere. The image is built by scripts/test before pytest (or
here, once, from the cache).
"""

import asyncio
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from autonomic.adapters.sandbox import build_sandbox
from autonomic.adapters.sandbox.image import build
from autonomic.adapters.sandbox.microvm import MicroVmSandbox, doctor
from autonomic.adapters.sandbox.vm_config import (
    GUEST_MAC,
    BootSource,
    Drive,
    MachineConfig,
    VmConfig,
    qemu_argv,
)
from autonomic.adapters.sandbox.vm_workspace import guest_cpu_backstop
from autonomic.errors import ConfigError, InvalidInput
from autonomic.ports.sandbox import (
    Ended,
    Execution,
    Limits,
    NetworkPolicy,
    Result,
    SandboxUnavailable,
)

pytestmark = pytest.mark.microvm

VM = Limits(wall_seconds=20, cpu_seconds=20)
"""Generous: a loaded 2-core host emulating the guest spends ~1 s of guest CPU starting Python."""


@pytest.fixture(scope="module")
def box():
    try:
        build()
    except ConfigError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"microVM image cannot be built under CI: {exc}")
        pytest.skip(str(exc))
    sandbox = MicroVmSandbox()
    yield sandbox
    asyncio.run(sandbox.close())


def run(box, code=None, **kw) -> Result:
    kw.setdefault("limits", VM)
    return asyncio.run(box.execute(Execution(code=code, **kw)))


def _qemu_processes(image_dir: Path) -> list[int]:
    """QEMU processes of this image started by this test process (a QEMU left running stays
    our child); other test processes on the machine may be running VMs of the same image."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
                if (
                    ppid == os.getpid()
                    and str(image_dir).encode() in (proc / "cmdline").read_bytes()
                ):
                    found.append(int(proc.name))
            except (OSError, ValueError, IndexError):
                continue
    return found


def test_firecracker_layout_round_trips_and_becomes_a_network_free_command_line(tmp_path):
    config = VmConfig(
        boot_source=BootSource("/k/vmlinuz", initrd_path="/k/initrd.img"),
        drives=(
            Drive("rootfs", "/k/rootfs.ext4", is_root_device=True, is_read_only=True),
            Drive("workspace", "/tmp/ws.img"),
        ),
        machine_config=MachineConfig(),
    )
    doc = config.to_json()
    assert set(doc) == {"boot-source", "drives", "machine-config", "network-interfaces"}
    assert doc["machine-config"] == {"vcpu_count": 1, "mem_size_mib": 256, "smt": False}
    path = tmp_path / "vm.json"
    path.write_text(json.dumps(doc))
    assert VmConfig.load(path) == config
    argv = qemu_argv(config, qemu="qemu-system-x86_64", accel="tcg", tsc_khz=2_000_000)
    line = " ".join(argv)
    assert "-M microvm" in line
    assert "file=/k/rootfs.ext4,format=raw,if=none,readonly=on" in line
    assert "file=/tmp/ws.img,format=raw,if=none -device" in line
    assert tuple(argv[argv.index("-m") : argv.index("-m") + 2]) == ("-m", "256M")
    assert tuple(argv[argv.index("-smp") : argv.index("-smp") + 2]) == ("-smp", "1")
    assert "-nodefaults" in argv
    assert not any(a.startswith(("-net", "-nic")) or "netdev" in a for a in argv)
    with pytest.raises(ConfigError, match="exactly one root drive, read-only"):
        VmConfig.from_json({**doc, "drives": [{**doc["drives"][0], "is_read_only": False}]})
    with pytest.raises(ConfigError, match="is not iface_id, host_dev_name, guest_mac"):
        VmConfig.from_json({**doc, "network-interfaces": [{"iface_id": "eth0"}]})
    with pytest.raises(ConfigError, match="invalid microVM config"):
        VmConfig.from_json({"drives": []})


def test_a_network_interface_is_a_tap_in_the_firecracker_layout_and_on_qemus_line(tmp_path):
    nic = {"iface_id": "eth0", "host_dev_name": "tap0", "guest_mac": GUEST_MAC}
    config = VmConfig(
        boot_source=BootSource("/k/vmlinuz"),
        drives=(Drive("rootfs", "/k/rootfs.ext4", is_root_device=True, is_read_only=True),),
        network_interfaces=(nic,),
    )
    doc = config.to_json()
    assert doc["network-interfaces"] == [nic]
    assert VmConfig.from_json(doc) == config
    line = " ".join(qemu_argv(config, qemu="q", accel="tcg", tsc_khz=None))
    assert "-netdev tap,id=eth0,ifname=tap0,script=no,downscript=no,vnet_hdr=off" in line
    assert f"-device virtio-net-device,netdev=eth0,mac={GUEST_MAC}" in line
    # The snapshot is taken with the same device on a hub port that leads nowhere.
    detached = " ".join(qemu_argv(config, qemu="q", accel="tcg", tsc_khz=None, detached_nics=True))
    assert "-netdev hubport,id=eth0,hubid=0" in detached
    assert "tap" not in detached
    with pytest.raises(ConfigError, match="at most one network interface"):
        VmConfig.from_json({**doc, "network-interfaces": [nic, {**nic, "iface_id": "eth1"}]})
    with pytest.raises(ConfigError, match="not a plain name"):
        VmConfig.from_json({**doc, "network-interfaces": [{**nic, "host_dev_name": "t,script=x"}]})


def test_one_vm_runs_the_code_and_every_probe_fails_inside_it(box):
    image = box.image
    root_mtime = image.rootfs.stat().st_mtime_ns
    code = r"""
import json, os, socket, sys
probes = {}
def probe(name, fn):
    try:
        fn()
        probes[name] = "succeeded"
    except Exception as exc:
        probes[name] = type(exc).__name__
probe("write_root", lambda: open("/escape", "w").write("x"))
probe("write_usr", lambda: open("/usr/escape", "w").write("x"))
probe("write_tmp", lambda: open("/tmp/escape", "w").write("x"))
probe("read_shadow", lambda: open("/etc/shadow").read())
probe("read_root_drive", lambda: open("/dev/vda", "rb").read(512))
probe("write_root_drive", lambda: open("/dev/vda", "wb").write(b"x"))
probe("connect_metadata", lambda: socket.create_connection(("169.254.169.254", 80), timeout=2))
probe("connect_private", lambda: socket.create_connection(("10.0.2.2", 80), timeout=2))
probe("cgroup_escape", lambda: open("/sys/fs/cgroup/cgroup.procs", "w").write(str(os.getpid())))
probe("file_over_size_limit", lambda: open("big", "wb").write(b"x" * (3 << 20)))
def fill():
    for i in range(12):
        with open(f"fill{i}", "wb") as f:
            f.write(b"x" * (1 << 20))
probe("fill_workspace", fill)
errnos = {}
for name, err in (("big", "EFBIG"), ("fill", "ENOSPC")):
    try:
        (open("big", "ab").write(b"x" * (3 << 20)) if name == "big" else fill())
    except OSError as exc:
        errnos[name] = __import__("errno").errorcode.get(exc.errno)
for leftover in [n for n in os.listdir(".") if n.startswith(("fill", "big"))]:
    os.remove(leftover)
print(json.dumps({
    "uid": os.getuid(), "probes": probes, "links": sorted(os.listdir("/sys/class/net")),
    "env": sorted(os.environ), "files": sorted(os.listdir(".")), "errnos": errnos,
    "data": open("data/in.txt").read(), "stdin": sys.stdin.read(),
}))
print("to stderr", file=sys.stderr)
sys.exit(3)
"""
    limits = Limits(wall_seconds=20, cpu_seconds=20, file_size_mb=2, workspace_mb=8)
    result = run(box, code, files={"data/in.txt": b"from-file"}, stdin=b"from-stdin", limits=limits)
    assert (result.ended, result.exit_code) == (Ended.EXIT, 3), result
    assert result.stderr == "to stderr\n"
    assert result.backend in ("microvm:tcg", "microvm:kvm")
    report = json.loads(result.stdout)
    assert report["uid"] == 65534
    assert set(report["probes"].values()) <= {
        "OSError",
        "PermissionError",
        "FileNotFoundError",
        "TimeoutError",
        "ConnectionRefusedError",
    }, report["probes"]
    assert report["errnos"] == {"big": "EFBIG", "fill": "ENOSPC"}
    # No network device at all (read from sysfs: the seccomp filter refuses AF_NETLINK, which
    # socket.if_nameindex() would need).
    assert report["links"] == ["lo"]
    assert "AUTONOMIC" not in " ".join(report["env"])
    assert report["files"] == ["data", "main.py"]
    assert (report["data"], report["stdin"]) == ("from-file", "from-stdin")
    assert result.usage.cpu_seconds > 0
    # verified from the host: the read-only root image was not touched
    assert image.rootfs.stat().st_mtime_ns == root_mtime
    # and the same probes do succeed where nothing stops them (this test can fail)
    with tempfile.TemporaryDirectory() as tmp:
        host = subprocess.run(
            [sys.executable, "-c", f"open({tmp + '/escape'!r}, 'w').write('x')"], check=False
        )
        assert host.returncode == 0
        assert Path(tmp, "escape").exists()


def test_workspaces_are_fresh_and_the_snapshot_is_never_written(box):
    code = "import os, random; open('left-behind', 'w').write('x'); print(os.listdir('.'))\n"
    code += "print(os.urandom(16).hex(), random.random())"
    first = run(box, code)
    second_random = run(box, code)
    assert "left-behind" in first.stdout, first
    # restored from one snapshot, yet not one random state: the host reseeds each guest
    assert first.stdout.splitlines()[1] != second_random.stdout.splitlines()[1]
    assert "snapshot restore" in first.detail
    ram = box._snapshot_dir(box.accel) / "ram"
    before = ram.stat().st_mtime_ns
    second = run(box, "import os; print(os.listdir('.'))")
    assert second.stdout == "['main.py']\n", second
    assert ram.stat().st_mtime_ns == before  # restored copy-on-write


def test_wall_timeout(box):
    result = run(box, "import time\ntime.sleep(600)", limits=Limits(wall_seconds=2, cpu_seconds=20))
    assert result.ended is Ended.TIMEOUT, result
    assert result.exit_code is None


def test_the_vms_own_start_is_not_charged_to_the_codes_cpu_limit(box):
    # An empty execution costs the VM seconds of CPU under emulation (unpacking, forking, cold
    # emulated code), more on a busy host where the guest also counts the time it waited for a
    # core. Charged to the code, a 1 s limit stopped even print(1) on a loaded 2-core host.
    start = asyncio.run(box.start_cpu_s())
    assert start > 0
    result = run(box, "print(1)", limits=Limits(wall_seconds=60, cpu_seconds=1))
    assert result.ok, result
    assert result.stdout == "1\n"


def test_a_runaway_loop_is_stopped_by_its_cpu_limit_long_before_its_wall_limit(box):
    limits = Limits(wall_seconds=300, cpu_seconds=1)
    result = run(box, "while True: pass", limits=limits)
    assert result.ended is Ended.CPU, result
    assert "CPU time limit of 1 s" in result.detail
    # charged on QEMU's CPU time, polled: over by at most a poll or two, never by the start
    assert limits.cpu_seconds <= result.usage.cpu_seconds < limits.cpu_seconds + 1, result
    assert result.duration_s < limits.wall_seconds / 2, result


def test_the_guests_own_cpu_rlimit_is_only_a_backstop_beyond_the_wall_limit():
    # The guest cannot tell time its virtual CPU waited for a host core from time it ran, so
    # the limit it keeps itself must never be the one that acts (the host's is).
    assert guest_cpu_backstop(Limits(cpu_seconds=2, wall_seconds=10)) == 11
    assert guest_cpu_backstop(Limits(cpu_seconds=30, wall_seconds=10)) == 31
    assert guest_cpu_backstop(Limits(cpu_seconds=0.2, wall_seconds=0.5)) == 2


def test_memory_limit_inside_the_guest(box):
    code = "blocks = []\nwhile True: blocks.append(bytearray(8 << 20))"
    result = run(box, code, limits=Limits(memory_mb=64, wall_seconds=20, cpu_seconds=20))
    assert result.ended is Ended.MEMORY, result
    assert result.usage.max_rss_mb <= 65


def test_output_cap(box):
    code = "import sys\nwhile True: sys.stdout.write('x' * 65536)"
    result = run(box, code, limits=Limits(output_bytes=1000, wall_seconds=20, cpu_seconds=20))
    assert result.ended is Ended.OUTPUT_LIMIT, result
    assert result.stdout_truncated
    assert result.stdout == "x" * 1000


def test_fork_bomb_meets_the_pids_limit(box):
    code = (
        "import os\nn = 0\n"
        "for _ in range(200):\n"
        "    try:\n        if os.fork() == 0:\n            import time; time.sleep(30)\n"
        "        n += 1\n"
        "    except OSError:\n        break\n"
        "print(n)\n"
    )
    result = run(box, code, limits=Limits(processes=8, wall_seconds=20, cpu_seconds=20))
    assert result.ended is Ended.EXIT, result
    assert 0 < int(result.stdout) < 8


def test_bad_requests_are_refused_before_a_vm_starts(box):
    with pytest.raises(InvalidInput, match="exactly one of code or command"):
        run(box)
    with pytest.raises(SandboxUnavailable, match="needs an uplink network namespace"):
        run(box, "pass", limits=Limits(network=NetworkPolicy.ALLOWLIST))
    with pytest.raises(InvalidInput, match="microVM takes at most"):
        run(box, "pass", files={"big": b"x" * (40 << 20)})
    assert isinstance(build_sandbox("microvm"), MicroVmSandbox)


def test_cold_boot_without_snapshot_and_nothing_left_behind(box, tmp_path, monkeypatch):
    # A temporary directory of this test's own: other test processes make VMs in /tmp too.
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    cold = MicroVmSandbox(snapshot=False, accel=box.accel)
    result = asyncio.run(cold.execute(Execution(code="print(sum(range(1000)))", limits=VM)))
    assert result.ok, result
    assert result.stdout == "499500\n"
    assert "cold boot" in result.detail
    assert list(tmp_path.iterdir()) == []
    assert _qemu_processes(box.image.directory) == []


def test_doctor_names_the_accelerator(box):
    ok, why = doctor(box)
    assert ok, why
    assert ("KVM" in why) or ("TCG" in why)


def test_commands_and_files_that_do_not_fit(box):
    command = run(
        box,
        command=("/bin/sh", "-c", "cat in.txt; echo err >&2; exit 4"),
        files={"in.txt": b"hi\n"},
    )
    assert (command.ended, command.exit_code) == (Ended.EXIT, 4), command
    assert (command.stdout, command.stderr) == ("hi\n", "err\n")
    too_big = run(
        box, "print('never')", files={"big": b"x" * (3 << 20)}, limits=Limits(workspace_mb=1)
    )
    # Refused on the host before a VM starts, as every backend answers (port conformance).
    assert (too_big.ended, too_big.exit_code) == (Ended.REFUSED, None), too_big
    assert "more than the 1 MB workspace" in too_big.detail
    assert too_big.stdout == ""


def test_three_vms_in_flight_with_bad_input(box):
    codes = [
        "def (:",
        "import sys; sys.stdout.buffer.write(bytes(range(256)))",
        "print('fine')",
    ]

    async def together() -> list[Result]:
        return await asyncio.gather(*(box.execute(Execution(code=c, limits=VM)) for c in codes))

    syntax, junk, fine = asyncio.run(together())
    assert (syntax.ended, syntax.exit_code) == (Ended.EXIT, 1), syntax
    assert "SyntaxError" in syntax.stderr
    assert "runpy" not in syntax.stderr
    assert junk.ok, junk
    assert "\ufffd" in junk.stdout
    assert fine.stdout == "fine\n"
    assert _qemu_processes(box.image.directory) == []
