"""A cgroup of our own around one sandbox, so limits and accounting outlive the runtime's cgroup.

An OCI runtime deletes the container's cgroup the moment the container exits, taking with it the
numbers we need to explain the end: did the kernel OOM-kill something, how much CPU and memory did
it use. So the backend creates a parent scope under its own cgroup, puts the limits there, and
hands the runtime a child path inside it. Charges and OOM kills happen in the parent, which we
read after the runtime is gone and then remove.

Both layouts are handled: cgroup v1 (one hierarchy per controller, as on this project's CI host)
and v2 (one unified hierarchy, where the parent's controllers must be delegated to us).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
import signal
from dataclasses import dataclass, field
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
OOM_TICK_WAIT = 1.5
"""Seconds ``read`` waits, at most, for a v1 OOM notification once charges failed at the limit."""
_V1_CONTROLLERS = ("memory", "pids", "cpuacct")


def _own_paths() -> dict[str, str]:
    """Controller name (``""`` for the v2 hierarchy) -> this process's cgroup path."""
    paths: dict[str, str] = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        for controller in controllers.split(",") if controllers else [""]:
            paths[controller] = path
    return paths


def cgroup_layout() -> str:
    """``"v1"`` when memory/pids/cpuacct have hierarchies of their own, ``"v2"`` when unified."""
    if all((CGROUP_ROOT / c).is_dir() for c in _V1_CONTROLLERS):
        return "v1"
    if (CGROUP_ROOT / "cgroup.controllers").is_file():
        return "v2"
    return "none"


@dataclass
class Accounting:
    """What the scope recorded: OOM kills, CPU time and peak memory across all its processes."""

    oom_kills: int = 0
    memory_failures: int = 0
    """Times a charge hit the memory limit (v1 ``memory.failcnt``, v2 ``memory.events max``)."""
    cpu_seconds: float = 0.0
    max_rss_mb: float = 0.0


@dataclass
class CgroupScope:
    """A parent cgroup named ``name`` under this process's own, holding the sandbox's limits."""

    name: str
    memory_bytes: int
    pids_max: int
    layout: str = field(default_factory=cgroup_layout)
    dirs: dict[str, Path] = field(default_factory=dict)
    _oom_eventfd: int | None = None

    def create(self) -> None:
        """Make the directories and write the limits; raise ``OSError`` if the host refuses."""
        own = _own_paths()
        if self.layout == "v1":
            for controller in _V1_CONTROLLERS:
                path = CGROUP_ROOT / controller / own.get(controller, "/").lstrip("/") / self.name
                path.mkdir()
                self.dirs[controller] = path
            mem = self.dirs["memory"]
            (mem / "memory.limit_in_bytes").write_text(str(self.memory_bytes))
            # Swap capped one MiB above memory: equal limits would make the memsw counter fail
            # first, and only the memory counter records the failures we classify OOM kills by.
            with contextlib.suppress(OSError):  # no swap accounting on this kernel: nothing to cap
                (mem / "memory.memsw.limit_in_bytes").write_text(str(self.memory_bytes + (1 << 20)))
            (self.dirs["pids"] / "pids.max").write_text(str(self.pids_max))
            self._watch_oom_v1(mem)
        elif self.layout == "v2":
            path = CGROUP_ROOT / own.get("", "/").lstrip("/") / self.name
            path.mkdir()
            self.dirs[""] = path
            (path / "cgroup.subtree_control").write_text("+memory +pids +cpu")
            (path / "memory.max").write_text(str(self.memory_bytes))
            with contextlib.suppress(OSError):
                (path / "memory.swap.max").write_text("0")
            (path / "pids.max").write_text(str(self.pids_max))
        else:
            raise OSError("no cgroup hierarchy with memory and pids controllers")

    def _watch_oom_v1(self, mem: Path) -> None:
        """Ask for an eventfd tick on every OOM in the scope (v1 counts kills in the victim's
        own cgroup, which the runtime removes; the notification is sent to the limiting one)."""
        efd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        ofd = os.open(mem / "memory.oom_control", os.O_RDONLY | os.O_CLOEXEC)
        try:
            (mem / "cgroup.event_control").write_text(f"{efd} {ofd}")
        except OSError:
            os.close(efd)
            return
        finally:
            os.close(ofd)
        self._oom_eventfd = efd

    def runtime_path(self, child: str) -> str:
        """The ``cgroupsPath`` to give the runtime: relative, so it nests under our own cgroup."""
        return f"{self.name}/{child}"

    def read(self) -> Accounting:
        """OOM kills, CPU seconds and peak memory so far (zeros for anything unreadable)."""
        acc = Accounting()
        with contextlib.suppress(OSError, ValueError):
            if self.layout == "v1":
                for line in (self.dirs["memory"] / "memory.oom_control").read_text().splitlines():
                    key, _, value = line.partition(" ")
                    if key == "oom_kill":
                        acc.oom_kills = int(value)
                mem = self.dirs["memory"]
                acc.memory_failures = int((mem / "memory.failcnt").read_text())
                if self._oom_eventfd is not None:
                    # The kernel ticks the eventfd from its OOM path, which can trail the death of
                    # the process it killed (a parent then exits 0): when charges failed at the
                    # limit, give the tick a bounded moment to arrive before reading it.
                    if acc.memory_failures and not acc.oom_kills:
                        select.select([self._oom_eventfd], [], [], OOM_TICK_WAIT)
                    with contextlib.suppress(BlockingIOError):
                        acc.oom_kills = max(acc.oom_kills, os.eventfd_read(self._oom_eventfd))
                peak = int((self.dirs["memory"] / "memory.max_usage_in_bytes").read_text())
                acc.max_rss_mb = peak / (1 << 20)
                acc.cpu_seconds = int((self.dirs["cpuacct"] / "cpuacct.usage").read_text()) / 1e9
            elif self.layout == "v2":
                base = self.dirs[""]
                for line in (base / "memory.events").read_text().splitlines():
                    key, _, value = line.partition(" ")
                    if key == "oom_kill":
                        acc.oom_kills = int(value)
                    elif key == "max":
                        acc.memory_failures = int(value)
                for line in (base / "cpu.stat").read_text().splitlines():
                    key, _, value = line.partition(" ")
                    if key == "usage_usec":
                        acc.cpu_seconds = int(value) / 1e6
                peak_file = base / "memory.peak"
                if peak_file.exists():
                    acc.max_rss_mb = int(peak_file.read_text()) / (1 << 20)
        return acc

    def processes(self) -> list[int]:
        """Every process still in the scope or its children (the pids hierarchy on v1)."""
        base = self.dirs.get("pids") or self.dirs.get("")
        found: list[int] = []
        if base is None or not base.exists():
            return found
        for procs in base.glob("**/cgroup.procs"):
            with contextlib.suppress(OSError, ValueError):
                found += [int(pid) for pid in procs.read_text().split()]
        return found

    async def empty(self, grace_s: float = 5.0) -> bool:
        """SIGKILL whatever is left in the scope and wait until it is gone (``False`` on timeout).

        The runtime returns as soon as the container's init is dead; its other processes are
        killed by the kernel a moment later. Removing the scope before they are gone would fail.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace_s
        delay = 0.002
        while pids := self.processes():
            if loop.time() > deadline:
                return False
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            await asyncio.sleep(delay)  # the kernel finishes the exits; no event to wait on
            delay = min(delay * 2, 0.05)
        return True

    def remove(self) -> None:
        """Remove the scope and its namesakes in every hierarchy; idempotent, never raises.

        The runtime creates ``<name>/<child>`` in every hierarchy it knows (cpu, blkio, freezer,
        systemd...) and deletes only ``<child>``, so ``<name>`` is swept everywhere, not only in
        the controllers that hold our limits.
        """
        own = set(_own_paths().values()) | {"/"}
        candidates = set(self.dirs.values())
        for hierarchy in CGROUP_ROOT.iterdir() if CGROUP_ROOT.is_dir() else ():
            for own_path in own:
                candidates.add(hierarchy / own_path.lstrip("/") / self.name)
        candidates.add(CGROUP_ROOT / self.name)
        for path in candidates:
            if not path.is_dir():
                continue
            for child in sorted(path.glob("**/"), key=lambda p: len(p.parts), reverse=True):
                with contextlib.suppress(OSError):
                    os.rmdir(child)
        self.dirs.clear()
        if self._oom_eventfd is not None:
            os.close(self._oom_eventfd)
            self._oom_eventfd = None
