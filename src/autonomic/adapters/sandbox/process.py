"""One sandbox launcher process, driven from asyncio: feed stdin, capture capped output, time out.

Shared by every backend that runs a local launcher (bwrap, runc, QEMU): the launcher gets its own
session so a kill reaches every host-side process of the chain, its exit is noticed through a
pidfd (no child-watcher thread, and ``wait4`` gives the whole chain's CPU time), and each output
stream is read as it comes and cut at ``output_bytes`` — past that the sandbox is killed rather
than left to fill a pipe (or the host's memory) with 100 MB nobody will read.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

READY = b"\x06"
"""What a sandbox's loader writes first on stdout: it is up and reading its request."""
_DRAIN_READS = 64
"""Reads per output pipe after the loader's status: a full 64 KiB pipe takes one."""
STATUS = b"exit "
"""How the loader's end status begins on its status descriptor: ``exit N\n``, N in 0-255."""


def parse_status(data: bytes) -> int | None:
    """The exit code in a loader's status message, ``None`` unless it is exactly one."""
    if not data.startswith(STATUS) or not data.endswith(b"\n"):
        return None
    digits = data[len(STATUS) : -1]
    if not digits.isdigit() or len(digits) > 3 or int(digits) > 255:
        return None
    return int(digits)


@dataclass
class Stream:
    """What one output stream delivered, cut at the cap."""

    cap: int
    data: bytearray = field(default_factory=bytearray)
    truncated: bool = False
    closed: bool = False

    def take(self, chunk: bytes) -> bool:
        """Keep what fits; ``True`` once the stream went past its cap."""
        room = self.cap - len(self.data)
        if len(chunk) > room:
            self.data += chunk[: max(room, 0)]
            self.truncated = True
        else:
            self.data += chunk
        return self.truncated


@dataclass
class Outcome:
    """How the launcher ended, before a backend names the reason."""

    status: int
    """The raw wait status."""
    cpu_seconds: float
    max_rss_mb: float
    stdout: Stream
    stderr: Stream
    timed_out: bool
    output_exceeded: bool
    duration_s: float
    reaped: bool = True
    """``False`` when the end came as the loader's status (``run(status_fd=...)``): the launcher
    may still be running (the sandbox tearing down) and is the backend's to kill and reap."""

    @property
    def exit_code(self) -> int | None:
        return os.waitstatus_to_exitcode(self.status) if os.WIFEXITED(self.status) else None

    @property
    def signal(self) -> int | None:
        """The signal that ended the sandboxed program: a launcher's ``128 + n``, or a real one."""
        if os.WIFSIGNALED(self.status):
            return os.WTERMSIG(self.status)
        code = self.exit_code
        return code - 128 if code is not None and 128 < code < 128 + 65 else None


class Launcher:
    """A started launcher process (its own session) with non-blocking pipes."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc
        self.pid = proc.pid
        self.pidfd = os.pidfd_open(proc.pid)
        for pipe in (proc.stdin, proc.stdout, proc.stderr):
            assert pipe is not None
            os.set_blocking(pipe.fileno(), False)
        self._status: tuple[int, float, float] | None = None
        self.marker_pending = False
        """Set by a backend whose sandbox announces readiness with ``READY`` on stdout."""

    @classmethod
    def spawn(
        cls,
        argv: Sequence[str],
        *,
        pass_fds: Sequence[int] = (),
        env: Mapping[str, str] | None = None,
        cwd: str = "/",
        uid: int | None = None,
    ) -> Launcher:
        """Start ``argv`` in a session of its own; with ``uid``, as that uid and gid, no groups."""
        proc = subprocess.Popen(  # noqa: S603 -- argv is built by the backend, never by the code
            list(argv),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            pass_fds=tuple(pass_fds),
            start_new_session=True,
            env=dict(env) if env is not None else {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
            cwd=cwd,
            user=uid,
            group=uid,
            extra_groups=[] if uid is not None else None,
        )
        return cls(proc)

    def wait_ready(self, timeout: float) -> bool:
        """Block until the sandbox wrote ``READY`` (``False`` on exit or timeout)."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                return False
            try:
                chunk = os.read(fd, 1)
            except BlockingIOError:
                continue
            self.marker_pending = False
            return chunk == READY

    def kill(self) -> None:
        """SIGKILL what runs *below* the launcher, so the launcher reaps it and exits itself.

        Killing the launcher first would orphan the sandbox's init to the host's pid 1, which on
        some hosts never reaps it: the zombie then counts against the sandbox uid's process limit.
        """
        for child in self.children():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(child, signal.SIGKILL)

    def kill_session(self) -> None:
        """SIGKILL the launcher's whole session: the last resort when it does not exit."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)

    def children(self) -> list[int]:
        try:
            text = Path(f"/proc/{self.pid}/task/{self.pid}/children").read_text()
        except OSError:
            return []
        return [int(pid) for pid in text.split()]

    def reap(self) -> bool:
        """Collect the exit status if the launcher has ended; ``True`` once it has."""
        if self._status is None:
            try:
                pid, status, usage = os.wait4(self.pid, os.WNOHANG)
            except ChildProcessError:
                pid, status, usage = self.pid, 0, None
            if pid == 0:
                return False
            cpu = usage.ru_utime + usage.ru_stime if usage else 0.0
            rss = usage.ru_maxrss / 1024 if usage else 0.0
            self._status = (status, cpu, rss)
            self.proc.returncode = os.waitstatus_to_exitcode(status)
        return True

    def close(self) -> None:
        """Stop if still running, reap, and close every descriptor (idempotent; blocking).

        A sandbox still waiting for its request gets end-of-file and leaves by itself; one that
        runs is killed from below (``kill``), re-tried while the launcher is still becoming the
        sandbox (``unshare`` or ``setpriv`` -> ``bwrap`` has no child to kill yet).
        """
        if self.proc.stdin is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
        if not self.reap():
            deadline = time.monotonic() + 2.0
            while not self.reap():
                self.kill()
                if time.monotonic() > deadline:
                    self.kill_session()
                    with contextlib.suppress(ChildProcessError):
                        _, status = os.waitpid(self.pid, 0)
                        self._status = (status, 0.0, 0.0)
                    self._status = self._status or (signal.SIGKILL, 0.0, 0.0)
                    self.proc.returncode = -signal.SIGKILL
                    break
                # The launcher is reaping the sandbox we just killed: its pidfd turns readable
                # when it exits.
                select.select([self.pidfd], [], [], 0.002)
        for pipe in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()
        with contextlib.suppress(OSError):
            os.close(self.pidfd)
        self.pidfd = -1

    async def run(
        self,
        payload: bytes,
        *,
        wall_seconds: float,
        output_bytes: int,
        on_kill: Callable[[], None],
        started: float | None = None,
        status_fd: int | None = None,
    ) -> Outcome:
        """Write ``payload`` to stdin, capture output, enforce the wall time.

        Reaps the launcher, unless ``status_fd`` (a non-blocking pipe the sandbox's loader writes
        ``exit N`` to once the code is done, output flushed) delivered the end first: then the
        output already written is read, the result is returned at once and the launcher is left
        running (``Outcome.reaped`` is ``False``) for the caller to kill and reap off the path.
        That skips the sandbox's teardown (its init's exit, the namespaces', bwrap's), about 1 ms.
        Anything else (a command, a signal, ``SystemExit``, a timeout) ends on the launcher's exit.
        """
        loop = asyncio.get_running_loop()
        started = time.monotonic() if started is None else started
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        assert self.proc.stderr is not None
        streams = {
            self.proc.stdout.fileno(): Stream(output_bytes),
            self.proc.stderr.fileno(): Stream(output_bytes),
        }
        stdout_fd = self.proc.stdout.fileno()
        done = asyncio.Event()
        state = {"timed_out": False, "exceeded": False}
        exited = asyncio.Event()
        early: list[int] = []

        def kill() -> None:
            self.kill()
            on_kill()

        def readable(fd: int) -> bool:
            """Read once; ``True`` when data came (more may be waiting)."""
            stream = streams[fd]
            try:
                chunk = os.read(fd, 65536)
            except BlockingIOError:
                return False
            except OSError:
                chunk = b""
            if self.marker_pending and fd == stdout_fd and chunk[:1] == READY:
                self.marker_pending = False
                chunk = chunk[1:]
                if not chunk:
                    return True
            if not chunk:
                stream.closed = True
                loop.remove_reader(fd)
            elif stream.take(chunk) and not state["exceeded"]:
                state["exceeded"] = True
                kill()
            if all(s.closed for s in streams.values()) and exited.is_set():
                done.set()
            return bool(chunk)

        def on_exit() -> None:
            loop.remove_reader(self.pidfd)
            self.reap()
            exited.set()
            if all(s.closed for s in streams.values()):
                done.set()

        def on_status() -> None:
            assert status_fd is not None
            loop.remove_reader(status_fd)
            try:
                code = parse_status(os.read(status_fd, 16))
            except OSError:
                code = None
            if code is None or exited.is_set() or state["timed_out"] or state["exceeded"]:
                return  # not a status (the code wrote there): the launcher's exit decides
            # Everything the loader wrote before its status is in the pipes already (a write to
            # a pipe returns once its bytes are in it); what a process the code left behind
            # writes from now on is not waited for (it is killed with the sandbox). Bounded: such
            # a process could keep a pipe full for as long as we read.
            for fd in streams:
                for _ in range(_DRAIN_READS):
                    if streams[fd].closed or not readable(fd):
                        break
            if any(stream.truncated for stream in streams.values()):
                return  # the cap was passed while draining: killed, ended on the exit
            early.append(code)
            exited.set()
            done.set()

        stdin_fd = self.proc.stdin.fileno()
        view = memoryview(payload)

        def writable() -> None:
            nonlocal view
            try:
                n = os.write(stdin_fd, view[:65536])
                view = view[n:]
            except BlockingIOError:
                return
            except OSError:  # the sandbox stopped reading: its business
                view = view[:0]
            if not view:
                loop.remove_writer(stdin_fd)
                self.proc.stdin.close()  # type: ignore[union-attr]

        for fd in streams:
            loop.add_reader(fd, readable, fd)
        loop.add_reader(self.pidfd, on_exit)
        if status_fd is not None:
            loop.add_reader(status_fd, on_status)
        loop.add_writer(stdin_fd, writable)
        try:
            try:
                remaining = max(wall_seconds - (time.monotonic() - started), 0.0)
                await asyncio.wait_for(exited.wait(), remaining)
            except TimeoutError:
                if not exited.is_set() and not state["exceeded"]:
                    state["timed_out"] = True
                kill()
            # Output still in flight after the launcher ended: the sandbox's init has died, so its
            # pipes close; a bound keeps a stuck descendant from holding the result forever.
            try:
                if not done.is_set():  # (set already: no task and loop turn for wait_for)
                    await asyncio.wait_for(done.wait(), 2.0)
            except TimeoutError:
                kill()
                self.kill_session()
        finally:
            for fd in streams:
                loop.remove_reader(fd)
            loop.remove_reader(self.pidfd)
            if status_fd is not None:
                loop.remove_reader(status_fd)
            if not self.proc.stdin.closed:
                loop.remove_writer(stdin_fd)
            if not early:
                self.close()
        out, err = streams.values()
        if early:
            status, cpu, rss = early[0] << 8, 0.0, 0.0  # a wait status for "exited with N"
        else:
            assert self._status is not None
            status, cpu, rss = self._status
        return Outcome(
            status=status,
            cpu_seconds=cpu,
            max_rss_mb=rss,
            stdout=out,
            stderr=err,
            timed_out=state["timed_out"],
            output_exceeded=state["exceeded"],
            duration_s=time.monotonic() - started,
            reaped=not early,
        )
