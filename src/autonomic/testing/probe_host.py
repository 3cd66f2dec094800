"""The host side of the probes: what they aim at, the listeners, and running them.

``ProbeHost`` plants the targets (secret files, a SQLite database, marker directories, a victim
process, TCP/UDP/unix listeners, an environment secret) and is what the checks in ``probes.py``
look at afterwards. ``run_probes`` takes any ``Sandbox``; ``HostRunner`` is no sandbox at all, for
the test that proves the probes can succeed (aimed at harmless stand-ins).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import os
import secrets
import select
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
from typing import Any

from autonomic.adapters.sandbox.loader import check_files
from autonomic.adapters.sandbox.process import Launcher
from autonomic.ports.sandbox import Ended, Execution, Limits, Result, Sandbox, Usage
from autonomic.testing.probes import (
    ENV_NAME,
    ESCAPE_LIMITS,
    PRELUDE,
    PROBES,
    RAN_MARKER,
    SYS,
    Kind,
    Probe,
    ProbeOutcome,
    Verdict,
    contained,
)


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
    _servers: list[asyncio.Server] = field(default_factory=list)
    _udp: asyncio.DatagramTransport | None = None
    _env_before: str | None = None
    _proc_root: Path = Path("/nonexistent")
    _handling: int = 0
    """Connections to the stream listeners being read now."""

    def marker_name(self, where: str) -> str:
        return f"autonomic-probe-{where}-{self.token}"

    async def heard(self, turns: int = 2000) -> None:
        """Let the listeners take what a probe sent them before it ended: until no listening
        or datagram socket has anything waiting and no connection is being read (the event loop
        runs them; a result can come back before it has had a turn). Bounded by ``turns``."""
        sockets: list[Any] = [sock for server in self._servers for sock in server.sockets]
        if self._udp is not None:
            sockets.append(self._udp.get_extra_info("socket"))
        for _ in range(turns):
            waiting, _, _ = select.select(sockets, [], [], 0)
            if not waiting and not self._handling:
                return
            await asyncio.sleep(0)

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
            self._handling += 1
            try:
                with contextlib.suppress(OSError, asyncio.IncompleteReadError):
                    data = await asyncio.wait_for(reader.read(256), 2.0)
                    if self.token.encode() in data:
                        self.received[channel] = self.received.get(channel, 0) + 1
                writer.close()
            finally:
                self._handling -= 1

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


async def run_probe(
    sandbox: Sandbox,
    probe: Probe,
    host: ProbeHost,
    *,
    plan: ProbePlan | None = None,
    fresh: bool = True,
) -> ProbeOutcome:
    """Run one probe in ``sandbox`` and judge it from the host.

    ``fresh`` forgets what the listeners received before (only when nothing else is in flight).
    """
    plan = plan or ProbePlan()
    if fresh:
        host.received.clear()
    limits = plan.limits_for(probe)
    execution = Execution(code=probe_source(probe, host), limits=limits)
    neighbour: asyncio.Task[Result] | None = None
    if probe.name == "read_other_workspace":
        neighbour = asyncio.ensure_future(sandbox.execute(_neighbour(host)))
    try:
        result = await sandbox.execute(execution)
    finally:
        if neighbour is not None:
            await neighbour
    # A backend may hand the result out before its sandbox is torn down (the namespace
    # backend's reaper); the probes judge what is left once the execution is over.
    await sandbox.settle()
    if probe.kind == "abuse":
        verdict = contained(
            result, probe, host, limits, plan.start_allowance_s, plan.cpu_allowance_s
        )
    elif RAN_MARKER not in result.stdout:
        # Counted as not held: runsc once failed to start under a low pids limit and every
        # "the call never returned" looked like a refusal.
        why = result.detail or result.stderr.strip()[-200:] or "no output"
        verdict = Verdict(
            False, f"the probe never ran ({result.ended}, exit {result.exit_code}: {why})"
        )
    else:
        await host.heard()  # what the probe sent the listeners before it ended, counted
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


@dataclass(frozen=True, slots=True)
class ProbePlan:
    """How to run the probes against one backend: what differs is its cost, never the verdict.

    A microVM under emulation takes seconds per execution, mostly outside the code's limits
    (restore, unpack, pack), and each execution is its own QEMU process, so it is probed
    several at a time and its start/teardown is allowed for on the host's clock. How long that
    takes depends on how busy the host is, so such a plan is ``paced`` by an empty execution
    timed just before the probes: the machine's own pace, not a number that held on a quiet one.
    """

    escape_concurrency: int = 1
    """Escape probes in flight at once (each microVM is its own QEMU process). Abuse probes
    always run one at a time: they measure CPU time and wall time, and under emulation a
    guest whose QEMU thread waits for a host core still sees its clock, so its CPU time, run."""
    start_allowance_s: float = 0.0
    """Added to an abuse probe's limit + 1 s on the host's clock (start-up outside the limit)."""
    cpu_allowance_s: float = 0.0
    """Added to an abuse probe's CPU limit + 1 s, for a backend whose CPU accounting is coarse."""
    min_cpu_seconds: float = 0.0
    """Raise the CPU limit of the probes not meant to end on CPU to this (emulation reaches a
    small CPU limit before memory or disk fills). A probe meant to end on CPU keeps its own: a
    raised one needs more of the host's CPU before the wall limit, which a busy host may not
    give QEMU (5 s of CPU in 14.3 s of wall time failed CI, the spin ending on its wall limit)."""

    min_wall_seconds: float = 0.0
    """Raise the abuse probes' wall limit to this (at load 15 a TCG guest took over 4 s to fill
    128 MiB or open 10,000 descriptors)."""
    wall_extra_s: float = 0.0
    """Added to the abuse probes' wall limit: what an empty execution spends inside the guest's
    wall clock (the first run through cold emulated code), from ``paced``."""
    paced_by_empty_run: bool = False
    """Time one empty execution before the probes and widen the allowances by it (``paced``)."""

    def limits_for(self, probe: Probe) -> Limits:
        limits = probe.limits
        if probe.kind == "abuse":
            wall = max(limits.wall_seconds, self.min_wall_seconds) + self.wall_extra_s
            limits = replace(limits, wall_seconds=wall)
        if Ended.CPU not in probe.expect and limits.cpu_seconds < self.min_cpu_seconds:
            limits = replace(limits, cpu_seconds=self.min_cpu_seconds)
        return limits

    def paced(self, empty_run_s: float) -> ProbePlan:
        """This plan where an empty execution now takes ``empty_run_s`` on the host's clock.

        Twice that is allowed on top, both for the start outside the limits and inside the
        guest's wall clock: the host's load moves while the probes run.
        """
        slack = 2.0 * empty_run_s
        return replace(
            self,
            start_allowance_s=max(self.start_allowance_s, slack),
            wall_extra_s=max(self.wall_extra_s, slack),
            paced_by_empty_run=False,
        )


PLANS: dict[str, ProbePlan] = {
    "microvm": ProbePlan(
        # no more QEMU processes than cores: more only makes each slower, and under emulation a
        # guest's snapshot restore counts against the probe's wall limit (6 on 2 cores with the
        # hypervisor stealing a quarter of the CPU took 10 s to restore, and no probe ran)
        escape_concurrency=max(1, min(6, os.cpu_count() or 1)),
        start_allowance_s=3.0,
        # the CPU limit is kept on QEMU's own CPU time, which a busy host does not inflate, so
        # no CPU allowance; the CPU limit is still raised so memory and disk probes end for
        # their own reason before a CPU limit that emulation reaches early (not the CPU spin's)
        min_cpu_seconds=5.0,
        min_wall_seconds=8.0,
        paced_by_empty_run=True,
    ),
}
"""Backends not named here are probed one at a time with the probes' own limits."""


async def pace(sandbox: Sandbox, plan: ProbePlan) -> ProbePlan:
    """``plan`` paced by one empty execution on ``sandbox`` now (unchanged if it is not paced)."""
    if not plan.paced_by_empty_run:
        return plan
    empty = await sandbox.execute(Execution(code="pass", limits=Limits(wall_seconds=120)))
    return plan.paced(empty.duration_s)


def plan_for(backend: str) -> ProbePlan:
    return PLANS.get(backend, ProbePlan())


async def run_probes(
    sandbox: Sandbox,
    *,
    harmless: bool = False,
    kinds: Iterable[Kind] = ("escape", "abuse"),
    names: Iterable[str] | None = None,
    plan: ProbePlan | None = None,
) -> list[ProbeOutcome]:
    """Run the chosen probes against ``sandbox``: one after another, or as its plan says.

    Concurrent probes share one ``ProbeHost``: what its listeners received is then never
    cleared between probes, so a connection that got through marks every later listener
    probe as escaped (a false alarm is possible, a missed escape is not).
    """
    plan = await pace(sandbox, plan or plan_for(sandbox.name))
    wanted = set(kinds)
    picked = set(names) if names is not None else None
    chosen = [p for p in PROBES if p.kind in wanted and (picked is None or p.name in picked)]
    async with ProbeHost(harmless=harmless) as host:
        escapes = [p for p in chosen if p.kind == "escape"]
        if plan.escape_concurrency <= 1 or len(escapes) <= 1:
            return [await run_probe(sandbox, probe, host, plan=plan) for probe in chosen]
        gate = asyncio.Semaphore(plan.escape_concurrency)
        host.received.clear()

        async def one(probe: Probe) -> ProbeOutcome:
            async with gate:
                return await run_probe(sandbox, probe, host, plan=plan, fresh=False)

        outcomes = list(await asyncio.gather(*(one(p) for p in escapes)))
        for probe in chosen:
            if probe.kind != "escape":
                outcomes.append(await run_probe(sandbox, probe, host, plan=plan))
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

    async def settle(self) -> None:
        return None  # the host's process is reaped before ``execute`` returns

    async def close(self) -> None:
        return None
