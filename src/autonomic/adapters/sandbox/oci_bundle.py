"""The OCI bundle for one execution: a ``config.json`` that leaves the code nothing to stand on.

Kept apart from the runner so the isolation can be read in one place and tested without a
runtime. What the config says, and why:

* root: an empty directory, read-only, with the host's ``/usr`` (and the ``/bin``, ``/lib``...
  links or binds) mounted read-only on it: Python and its libraries, but no ``/etc``, ``/home``,
  ``/root``, ``/var`` or project files. ``/etc/shadow`` is not hidden by permissions: it is absent.
* workspace: a fresh ``tmpfs`` capped at ``Limits.workspace_mb``, owned by uid 65534; the request's
  files are copied in from a read-only bind of the bundle's ``input`` directory before the code runs.
  ``/tmp`` is not writable: ``TMPDIR`` points into the workspace, so every write counts against
  the one cap.
* namespaces: pid, net (a fresh one: loopback only, no route anywhere; with an egress
  allow-list the per-execution sandbox namespace of ``egress``, whose only route is the filtering
  router), ipc, uts, mount, cgroup. No user namespace, and the process runs as uid/gid 65534 with no capabilities,
  ``noNewPrivileges`` and a clear environment.
* seccomp: default allow, refusing (EPERM) the syscalls that attack the kernel or other processes
  (``ptrace``, ``mount``, ``keyctl``, ``bpf``, ``perf_event_open``, module loading, ``kexec``,
  ``unshare``/``setns`` and namespace flags to ``clone``...). ``clone3`` answers ENOSYS so libc
  falls back to ``clone``, whose flags the filter can see.
* limits: cgroup memory and pids in the parent scope (see ``cgroup_scope``), rlimits for CPU time,
  file size and descriptors, no core dumps.
"""

from __future__ import annotations

import errno
import math
import os
import stat
from pathlib import Path
from typing import Any

from autonomic.ports.sandbox import Limits

SANDBOX_UID = 65534
WORKSPACE = "/workspace"
INPUT = "/.input"

_MIB = 1 << 20

REFUSED_SYSCALLS: tuple[str, ...] = (
    "acct",
    "add_key",
    "bpf",
    "chroot",
    "clock_adjtime",
    "clock_settime",
    "delete_module",
    "finit_module",
    "fsconfig",
    "fsmount",
    "fsopen",
    "fspick",
    "init_module",
    "io_uring_enter",  # io_uring runs I/O outside seccomp's view of syscalls
    "io_uring_register",
    "io_uring_setup",
    "ioperm",
    "iopl",
    "kcmp",
    "kexec_file_load",
    "kexec_load",
    "keyctl",
    "lookup_dcookie",
    "mount",
    "mount_setattr",
    "move_mount",
    "name_to_handle_at",
    "nfsservctl",
    "open_by_handle_at",
    "open_tree",
    "perf_event_open",
    "pivot_root",
    "process_vm_readv",
    "process_vm_writev",
    "ptrace",
    "quotactl",
    "reboot",
    "request_key",
    "setns",
    "settimeofday",
    "swapoff",
    "swapon",
    "syslog",
    "umount2",
    "unshare",
    "userfaultfd",
    "uselib",
    "vhangup",
)
"""Refused with EPERM whatever their arguments."""

NAMESPACE_CLONE_FLAGS: tuple[int, ...] = (
    0x00020000,  # CLONE_NEWNS
    0x02000000,  # CLONE_NEWCGROUP
    0x04000000,  # CLONE_NEWUTS
    0x08000000,  # CLONE_NEWIPC
    0x10000000,  # CLONE_NEWUSER
    0x20000000,  # CLONE_NEWPID
    0x40000000,  # CLONE_NEWNET
)
"""``clone`` with any of these is refused: a new namespace is the first step of most escapes."""


S_IFMT = 0o170000


def seccomp_profile() -> dict[str, Any]:
    """The OCI ``linux.seccomp`` section."""
    rules: list[dict[str, Any]] = [
        {"names": list(REFUSED_SYSCALLS), "action": "SCMP_ACT_ERRNO", "errnoRet": errno.EPERM},
        {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.ENOSYS},
    ]
    rules += [
        {
            "names": ["clone"],
            "action": "SCMP_ACT_ERRNO",
            "errnoRet": errno.EPERM,
            "args": [{"index": 0, "value": flag, "valueTwo": flag, "op": "SCMP_CMP_MASKED_EQ"}],
        }
        for flag in NAMESPACE_CLONE_FLAGS
    ]
    # Device nodes: without CAP_MKNOD runc's kernel refuses them already, but gVisor's Sentry
    # let uid 65534 create one (device_node probe); FIFOs and plain files stay allowed.
    rules += [
        {
            "names": [name],
            "action": "SCMP_ACT_ERRNO",
            "errnoRet": errno.EPERM,
            "args": [
                {"index": index, "value": S_IFMT, "valueTwo": kind, "op": "SCMP_CMP_MASKED_EQ"}
            ],
        }
        for name, index in (("mknod", 1), ("mknodat", 2))
        for kind in (stat.S_IFCHR, stat.S_IFBLK)
    ]
    return {
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "syscalls": rules,
    }


def rlimits(limits: Limits) -> list[dict[str, Any]]:
    """CPU seconds (SIGXCPU at the soft limit, SIGKILL a second later), file size, fds, no cores."""
    cpu = max(1, math.ceil(limits.cpu_seconds))
    fsize = limits.file_size_mb * _MIB
    return [
        {"type": "RLIMIT_CPU", "soft": cpu, "hard": cpu + 1},
        {"type": "RLIMIT_FSIZE", "soft": fsize, "hard": fsize},
        {"type": "RLIMIT_NOFILE", "soft": 1024, "hard": 1024},
        {"type": "RLIMIT_CORE", "soft": 0, "hard": 0},
    ]


def prepare_rootfs(rootfs: Path) -> None:
    """An empty root with the mount points and the host's usr-merge links, made once per sandbox.

    The directory is shared by the sandbox's executions: the root is mounted read-only in each
    container, and every mount point exists beforehand so the runtime never writes to it.
    """
    rootfs.mkdir(mode=0o755, parents=True, exist_ok=True)
    for name in ("usr", "proc", "dev", "sys", "tmp", WORKSPACE.strip("/"), INPUT.strip("/")):
        (rootfs / name).mkdir(exist_ok=True)
    for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        host = Path("/") / name
        target = rootfs / name
        if target.exists() or target.is_symlink():
            continue
        if host.is_symlink():
            target.symlink_to(os.readlink(host))
        elif host.is_dir():
            target.mkdir()


def _bind(path: str) -> dict[str, Any]:
    return {
        "destination": path,
        "type": "bind",
        "source": path,
        "options": ["rbind", "ro", "nosuid", "nodev"],
    }


def bundle_config(
    *,
    rootfs: Path,
    input_dir: Path,
    argv: list[str],
    limits: Limits,
    cgroups_path: str,
    netns: str | None = None,
) -> dict[str, Any]:
    """The ``config.json`` for one execution of ``argv`` under ``limits``; with ``netns`` (an
    egress allow-list) the container joins that network namespace instead of a fresh, empty one."""
    binds = [_bind("/usr")]
    binds += [
        _bind(f"/{name}")
        for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32")
        if Path(f"/{name}").is_dir() and not Path(f"/{name}").is_symlink()
    ]
    tmpfs_opts = ["nosuid", "nodev", "noexec"]
    return {
        "ociVersion": "1.0.2",
        "process": {
            "terminal": False,
            "user": {"uid": SANDBOX_UID, "gid": SANDBOX_UID, "additionalGids": []},
            "args": argv,
            "env": [
                "PATH=/usr/local/bin:/usr/bin:/bin",
                f"HOME={WORKSPACE}",
                f"TMPDIR={WORKSPACE}",
                "LANG=C.UTF-8",
                "PYTHONDONTWRITEBYTECODE=1",
                "PYTHONUNBUFFERED=1",
            ],
            "cwd": "/",
            "capabilities": {
                "bounding": [],
                "effective": [],
                "inheritable": [],
                "permitted": [],
                "ambient": [],
            },
            "rlimits": rlimits(limits),
            "noNewPrivileges": True,
        },
        "root": {"path": str(rootfs), "readonly": True},
        "hostname": "sandbox",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc", "options": tmpfs_opts},
            {
                "destination": "/dev",
                "type": "tmpfs",
                "source": "tmpfs",
                "options": ["nosuid", "strictatime", "mode=755", "size=64k"],
            },
            {
                "destination": "/sys",
                "type": "sysfs",
                "source": "sysfs",
                "options": ["nosuid", "noexec", "nodev", "ro"],
            },
            *binds,
            {
                "destination": WORKSPACE,
                "type": "tmpfs",
                "source": "tmpfs",
                "options": [
                    *tmpfs_opts[:2],
                    f"size={limits.workspace_mb * _MIB}",
                    "mode=0700",
                    f"uid={SANDBOX_UID}",
                    f"gid={SANDBOX_UID}",
                ],
            },
            {
                "destination": INPUT,
                "type": "bind",
                "source": str(input_dir),
                "options": ["rbind", "ro", "nosuid", "nodev", "noexec"],
            },
        ],
        "linux": {
            "namespaces": [{"type": ns} for ns in ("pid", "ipc", "uts", "mount", "cgroup")]
            + _network_namespace(netns),
            "cgroupsPath": cgroups_path,
            "resources": {"devices": [{"allow": False, "access": "rwm"}]},
            "seccomp": seccomp_profile(),
            "maskedPaths": [
                "/proc/acpi",
                "/proc/asound",
                "/proc/kcore",
                "/proc/keys",
                "/proc/latency_stats",
                "/proc/timer_list",
                "/proc/timer_stats",
                "/proc/sched_debug",
                "/proc/scsi",
                "/sys/firmware",
            ],
            "readonlyPaths": [
                "/proc/bus",
                "/proc/fs",
                "/proc/irq",
                "/proc/sys",
                "/proc/sysrq-trigger",
            ],
        },
    }


def _network_namespace(netns: str | None) -> list[dict[str, Any]]:
    """A fresh network namespace; ``netns``, joined; ``"-"``: none (the runtime's own)."""
    if netns is None:
        return [{"type": "network"}]
    if netns == "-":
        return []
    return [{"type": "network", "path": netns}]
