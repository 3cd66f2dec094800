"""One memory + pids cgroup per sandbox, on cgroup v2 or (as on this host) v1, when the host allows.

rlimits are per process: ``RLIMIT_AS`` lets ten processes take ten times the memory, and
``RLIMIT_NPROC`` counts every process of a uid on the machine. A cgroup bounds the whole sandbox
(memory across all its processes, process count) and lets the host tell an out-of-memory kill from
any other ``SIGKILL`` and kill every process of the sandbox in one place. Where no writable cgroup
hierarchy exists (an unprivileged host), ``Cgroups.detect`` returns ``None`` and the backend falls
back to rlimits only, which ``autonomic sandbox doctor`` reports.

A group's name says who made it (``host_process.tag``: the maker's pid, pid namespace and
start time). A worker killed with ``SIGKILL`` cannot remove the groups it made ahead; the next
backend made on the host removes them (``Cgroups.sweep``), and only those whose maker is dead
for certain (``host_process.proven_dead``). A group another user made is left to that user
(``/proc`` may hide their processes from us).
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from autonomic import host_process

ROOT = Path("/sys/fs/cgroup")
PREFIX = "autonomic-sb-"


def _own_path(controller: str) -> str:
    """This process's cgroup path for a v1 ``controller`` (``""`` for the v2 unified line)."""
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if controller in controllers.split(","):
            return path
    return "/"


@dataclass(frozen=True, slots=True)
class Cgroups:
    """Where sandboxes' cgroups are made: one v2 parent, or a v1 memory parent and a pids parent."""

    v2: Path | None
    memory: Path | None
    pids: Path | None
    cpuacct: Path | None = None

    @classmethod
    def detect(cls) -> Cgroups | None:
        """The usable hierarchy, proven by creating and removing a probe group; ``None`` if none."""
        if (ROOT / "cgroup.controllers").exists():
            parent = ROOT / _own_path("").lstrip("/")
            controllers = (parent / "cgroup.controllers").read_text().split()
            if {"memory", "pids"} <= set(controllers) and _try_mkdir(parent):
                return cls(v2=parent, memory=None, pids=None)
            return None
        memory = ROOT / "memory" / _own_path("memory").lstrip("/")
        pids = ROOT / "pids" / _own_path("pids").lstrip("/")
        if (memory / "memory.limit_in_bytes").exists() and _try_mkdir(memory) and _try_mkdir(pids):
            cpuacct: Path | None = ROOT / "cpuacct" / _own_path("cpuacct").lstrip("/")
            if cpuacct is not None and not _try_mkdir(cpuacct):
                cpuacct = None
            return cls(v2=None, memory=memory, pids=pids, cpuacct=cpuacct)
        return None

    def create(self, name: str) -> SandboxCgroup:
        parents = (self.v2, self.memory, self.pids, self.cpuacct)
        dirs = [d / f"{PREFIX}{name}" for d in parents if d is not None]
        for d in dirs:
            os.mkdir(d)
        return SandboxCgroup(v2=self.v2 is not None, dirs=tuple(dirs))

    def sweep(self) -> list[Path]:
        """Remove the empty sandbox groups of dead makers (see the module's docstring).

        Groups still holding a process are left (``rmdir`` refuses them); so are groups named
        before names carried their maker's identity, which cannot be told dead for certain.
        Returns what was removed.
        """
        removed: list[Path] = []
        euid = os.geteuid()
        for parent in (self.v2, self.memory, self.pids, self.cpuacct):
            if parent is None:
                continue
            try:
                entries = [e for e in os.scandir(parent) if e.name.startswith(PREFIX)]
            except OSError:
                continue
            for entry in entries:
                if not host_process.tagged_by_the_dead(entry.name[len(PREFIX) :]):
                    continue
                try:
                    # another user's group: its maker may be hidden from us (``hidepid``)
                    if entry.stat(follow_symlinks=False).st_uid != euid:
                        continue
                    os.rmdir(entry.path)
                except OSError:
                    continue
                removed.append(Path(entry.path))
        return removed

    def leftovers(self, pid: int | None = None) -> list[Path]:
        """Sandbox cgroups made by process ``pid`` (default: this one) that still exist."""
        pattern = f"{PREFIX}{os.getpid() if pid is None else pid}-*"
        found: list[Path] = []
        for d in (self.v2, self.memory, self.pids, self.cpuacct):
            if d is not None:
                found.extend(sorted(d.glob(pattern)))
        return found


def _try_mkdir(parent: Path) -> bool:
    probe = parent / f"{PREFIX}probe-{os.getpid()}"
    try:
        probe.mkdir()
        probe.rmdir()
    except OSError:
        return False
    return True


@dataclass(frozen=True, slots=True)
class SandboxCgroup:
    """The cgroup(s) of one sandbox: set limits, join, read the OOM count, kill all, remove."""

    v2: bool
    dirs: tuple[Path, ...]

    @property
    def procs_files(self) -> tuple[Path, ...]:
        return tuple(d / "cgroup.procs" for d in self.dirs)

    @contextlib.contextmanager
    def holding_this_thread(self) -> Iterator[bool]:
        """Move the calling thread alone into the group(s) for the block, then back where it was.

        What the thread forks meanwhile is born inside: the launcher and everything after it, with
        no process to move later. Moving the *calling thread alone* is the one migration the
        kernel makes without its global percpu rwsem, whose write side waits for an RCU grace
        period (5-13 ms on this host) whenever no other migration happened just before.
        cgroup v1 only: a v2 domain group takes whole processes (the block gets ``False``,
        nothing moved, and the caller moves the child with ``join``; so does a host that
        refuses the move). While inside, the thread's kernel allocations and CPU time (a
        ``vfork`` and ``exec``, ~0.2 ms) count to the group; its pages are charged to the
        worker's own memory group (page charges follow the process, not the thread).
        """
        if self.v2:
            yield False
            return
        back = _thread_tasks_files(self.dirs)
        moved: list[Path] = []
        try:
            for d in self.dirs:
                _write(d / "tasks", b"0")  # 0: the writing thread, and only it
                moved.append(d)
        except OSError:
            for f in back[: len(moved)]:
                _write(f, b"0")
            yield False
            return
        try:
            yield True
        finally:
            for f in back:
                _write(f, b"0")

    def join(self, pid: int) -> None:
        """Move process ``pid`` (all its threads) into the group(s), as root.

        The first move after a quiet spell costs the kernel an RCU grace period (cgroup v1 and v2
        alike: moving a process takes a global percpu rwsem for writing), 5-13 ms on this host;
        moves right after it do not. Raises ``OSError`` (``ProcessLookupError`` if ``pid`` died).
        """
        for f in self.procs_files:
            _write(f, str(pid).encode("ascii"))

    def set_limits(self, *, memory_mb: int, processes: int) -> None:
        memory = str(memory_mb * 1024 * 1024).encode("ascii")
        if self.v2:
            (d,) = self.dirs
            _write(d / "memory.max", memory)
            with contextlib.suppress(FileNotFoundError):  # absent without swap accounting
                _write(d / "memory.swap.max", b"0")
            _write(d / "pids.max", str(processes).encode("ascii"))
            return
        mem, pids = self.dirs[:2]
        _write(mem / "memory.limit_in_bytes", memory)
        with contextlib.suppress(OSError):  # absent without swap accounting
            _write(mem / "memory.memsw.limit_in_bytes", memory)
        _write(pids / "pids.max", str(processes).encode("ascii"))

    def oom_kills(self) -> int:
        """How many processes the kernel killed for exceeding ``memory``."""
        path = self.dirs[0] / ("memory.events" if self.v2 else "memory.oom_control")
        for line in _read(path).splitlines():
            key, _, value = line.partition(b" ")
            if key == b"oom_kill":
                return int(value)
        return 0

    def peak_mb(self) -> float:
        path = self.dirs[0] / ("memory.peak" if self.v2 else "memory.max_usage_in_bytes")
        try:
            return int(_read(path)) / (1024 * 1024)
        except (OSError, ValueError):
            return 0.0

    @property
    def measures_cpu(self) -> bool:
        """Whether ``cpu_seconds`` has a number (v2's ``cpu.stat``, v1's ``cpuacct``)."""
        return self.v2 or len(self.dirs) >= 3

    def cpu_seconds(self) -> float | None:
        """CPU time of every process the group ever held (``None`` without CPU accounting)."""
        try:
            if self.v2:
                for line in _read(self.dirs[0] / "cpu.stat").splitlines():
                    key, _, value = line.partition(b" ")
                    if key == b"usage_usec":
                        return int(value) / 1e6
                return None
            if len(self.dirs) < 3:
                return None
            return int(_read(self.dirs[2] / "cpuacct.usage")) / 1e9
        except (OSError, ValueError):
            return None

    def pids(self) -> list[int]:
        found: set[int] = set()
        for f in self.procs_files:
            with contextlib.suppress(OSError):
                found.update(int(p) for p in f.read_text().split())
        return sorted(found)

    def kill_all(self, *, spare: int | None = None) -> None:
        """SIGKILL every process in the group but ``spare`` (the launcher, left to reap them)."""
        if self.v2 and spare is None:
            with contextlib.suppress(OSError):
                (self.dirs[0] / "cgroup.kill").write_text("1")
        for pid in self.pids():
            if pid in (spare, os.getpid()):  # never the host (a thread of it spawning inside)
                continue
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def remove(self) -> bool:
        """Remove the group(s); ``False`` while a process is still inside (call again later)."""
        done = True
        for d in self.dirs:
            try:
                d.rmdir()
            except FileNotFoundError:
                pass
            except OSError:
                done = False
        return done


def _write(path: Path, data: bytes) -> None:
    """One ``write`` to a control file (``Path.write_text`` costs ~4x more: a text file object)."""
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def _read(path: Path) -> bytes:
    """A control file's content (these are small: one read)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return os.read(fd, 65536)
    finally:
        os.close(fd)


def _thread_tasks_files(dirs: tuple[Path, ...]) -> list[Path]:
    """The ``tasks`` files of the calling thread's current groups, in the hierarchies of ``dirs``."""
    own: dict[str, str] = {}
    for line in _read(Path("/proc/thread-self/cgroup")).decode().splitlines():
        _, controllers, path = line.split(":", 2)
        for controller in controllers.split(","):
            own[controller] = path
    files = []
    for d in dirs:
        controller = d.relative_to(ROOT).parts[0]
        files.append(ROOT / controller / own[controller].lstrip("/") / "tasks")
    return files
