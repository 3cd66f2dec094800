"""The namespace backend: bubblewrap, with every namespace unshared and nothing of the host writable.

Layers, outermost first (docs/sandbox.md says what each one stops):

1. Privileges are dropped *before* bubblewrap: as root, bwrap is started with a uid of its own
   for this execution (never 0, never shared with another sandbox in flight) and no groups - the
   spawning thread alone takes them for the spawn (``_thread_as``; ``unshare --setuid`` after
   ``nsenter`` for egress, ``setpriv`` when bwrap is setuid) - so nothing that is bound in
   read-only can be read just because root could (``/etc/shadow``), and ``RLIMIT_NPROC`` counts
   only this sandbox's processes.
2. A cgroup per execution (memory across all processes, process count), which every process of
   the sandbox is born in (and its cgroup namespace rooted at): on cgroup v1 the host's spawning
   thread steps alone into the group around the spawn; on v2 the host moves the launcher in while
   bubblewrap waits on an empty ``--args`` pipe, before it clones anything. The host reads OOM
   kills from it and kills through it.
3. bubblewrap: user, mount, pid, net, ipc, uts and cgroup namespaces; no nested user namespaces;
   ``/usr`` read-only, bwrap's own root and ``/dev`` remounted read-only; a fresh tmpfs workspace
   capped at ``workspace_mb`` (also ``/tmp``); a cleared environment; a new session.
4. The seccomp filter of ``seccomp.py``; rlimits (CPU, file size, descriptors, processes, core)
   set by the loader before the code runs.
5. The host side: a wall timeout that kills the launcher's session and the cgroup, output cut at
   ``output_bytes``, and a check that nothing of the execution is left.

The result is returned on the loader's end status, before the sandbox has torn down; a reaper
thread then kills, reaps and removes what is left (``_finish``, ``settle``).

A warm pool (``pool_size``) keeps interpreters started inside fresh sandboxes, their loader's
imports done, blocked on reading their request; each is used once (never two executions in one
sandbox) and replaced in the background once its execution is over.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import itertools
import os
import platform
import queue
import shutil
import signal
import stat
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from autonomic import host_process
from autonomic.adapters.sandbox.cgroup import Cgroups, SandboxCgroup
from autonomic.adapters.sandbox.egress import EgressNetwork, check_host, parse_allow
from autonomic.adapters.sandbox.loader import LOADER, WORKSPACE, check_files, encode_request
from autonomic.adapters.sandbox.process import Launcher, Outcome
from autonomic.adapters.sandbox.seccomp import build_filter
from autonomic.errors import InvalidInput
from autonomic.ports.sandbox import (
    Ended,
    Execution,
    Limits,
    NetworkPolicy,
    Result,
    SandboxUnavailable,
    Usage,
)

PYTHON = "/usr/bin/python3"
"""The Debian interpreter: it lives under /usr, which the sandbox sees (a pyenv shim does not)."""
UID_BASE = 1_900_000_000
"""Host uids for sandboxes are taken from here on; no account on a normal system uses them."""
CGROUPS_AHEAD = 2
"""Fresh, empty cgroups a sandbox keeps made ahead (each used by one execution, then removed)."""
OPEN_FILES = 256
_ENV = {"PATH": "/usr/bin:/bin"}
"""The launcher's environment (no ``LANG``: the launchers skip loading a locale; the sandbox's
own environment is set by bwrap's ``--clearenv``/``--setenv``)."""


class _Uids:
    """Per-process allocator of sandbox uids, so no two sandboxes in flight share one."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._free: list[int] = []
        self._next = UID_BASE + (os.getpid() % 10_000) * 10_000

    def take(self) -> int:
        with self._lock:
            if self._free:
                return self._free.pop()
            self._next += 1
            return self._next

    def give(self, uid: int) -> None:
        with self._lock:
            self._free.append(uid)


_UIDS = _Uids()
_NAMES = itertools.count()


class _Spawner:
    """The one thread of this process that starts every launcher; it lives as long as the process.

    bubblewrap's ``--die-with-parent`` is ``PR_SET_PDEATHSIG``, which fires when the *thread*
    that forked the launcher ends, not the process. A launcher started from an executor thread
    that ends while its sandbox still runs is killed by that, and the sandbox's init with it:
    orphaned, it goes to the host's pid 1, which on some hosts never reaps it. Results are
    returned before the sandbox is torn down (``NamespaceSandbox._finish``), so the thread
    that forked a launcher must outlive its teardown: a daemon thread, never joined, that
    ends only with the process (which ``--die-with-parent`` is there for).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jobs: queue.SimpleQueue[tuple[Future[_Started], Callable[[], _Started]]] = (
            queue.SimpleQueue()
        )
        self._pid = -1

    def submit(self, job: Callable[[], _Started]) -> Future[_Started]:
        future: Future[_Started] = Future()
        with self._lock:
            if self._pid != os.getpid():  # first use, or a forked child: no thread here yet
                self._jobs = queue.SimpleQueue()
                threading.Thread(target=self._serve, name="sandbox-spawner", daemon=True).start()
                self._pid = os.getpid()
            self._jobs.put((future, job))
        return future

    def call(self, job: Callable[[], _Started]) -> _Started:
        return self.submit(job).result()

    def _serve(self) -> None:
        jobs = self._jobs
        while True:
            future, job = jobs.get()
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(job())
            except _CredentialsLost as exc:
                future.set_exception(SandboxUnavailable(str(exc), hint="report this as a bug"))
                break
            except BaseException as exc:  # handed to the waiting caller
                future.set_exception(exc)
        # This thread could not become root again (``_thread_as``): it must fork nothing more,
        # and must not end either (its launchers would be killed). A new spawner takes over.
        with self._lock:
            self._pid = -1
            while not jobs.empty():
                future, _ = jobs.get()
                if future.set_running_or_notify_cancel():
                    future.set_exception(SandboxUnavailable("the sandbox spawner stopped"))
        threading.Event().wait()


class _CredentialsLost(RuntimeError):
    """The spawner thread did not get its root ids back after a spawn."""


_SPAWNER = _Spawner()

_SYS_SETGROUPS, _SYS_SETRESUID, _SYS_SETRESGID = 116, 117, 119  # x86_64 (seccomp.py checks)
_PR_GET_DUMPABLE, _PR_SET_DUMPABLE = 3, 4
_LIBC = ctypes.CDLL(None, use_errno=True)


def _syscall(number: int, *args: int | None) -> None:
    if _LIBC.syscall(ctypes.c_long(number), *(ctypes.c_long(a or 0) for a in args)) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


@contextlib.contextmanager
def _thread_as(uid: int) -> Iterator[None]:
    """Run the calling thread alone as ``uid``:``uid`` with no groups for the block.

    What it forks meanwhile (``vfork``, then ``exec`` of bubblewrap) is born with that uid, gid
    and no groups, and the ``exec`` sets its saved ids to them and clears every capability: the
    same end state as ``unshare --setuid --setgid``, without an ``unshare`` process to start
    and ``exec`` (0.9 ms). Raw syscalls change only this thread: glibc's ``setresuid`` would
    change every thread of the worker. The saved uid and gid stay 0 in this thread alone (its
    way back); the other threads stay root all along.
    """
    groups = os.getgroups()
    dumpable = _LIBC.prctl(_PR_GET_DUMPABLE, 0, 0, 0, 0)
    _syscall(_SYS_SETGROUPS, 0, 0)
    try:
        _syscall(_SYS_SETRESGID, uid, uid, 0)
        try:
            _syscall(_SYS_SETRESUID, uid, uid, 0)
            try:
                yield
            finally:
                _syscall(_SYS_SETRESUID, 0, 0, 0)
        finally:
            _syscall(_SYS_SETRESGID, 0, 0, 0)
    finally:
        array = (ctypes.c_uint * max(len(groups), 1))(*groups)
        _LIBC.syscall(ctypes.c_long(_SYS_SETGROUPS), ctypes.c_long(len(groups)), array)
        # A change of effective uid makes the kernel mark the whole process not dumpable.
        _LIBC.prctl(_PR_SET_DUMPABLE, dumpable, 0, 0, 0)
        if os.getresuid() != (0, 0, 0) or os.getresgid() != (0, 0, 0) or os.getgroups() != groups:
            raise _CredentialsLost(f"the spawning thread kept uid {uid} after a spawn")


def doctor() -> tuple[bool, str]:
    """Whether the namespace backend works here, and why not (tries a real sandbox)."""
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        return False, "bubblewrap is not installed (apt-get install bubblewrap)"
    if not os.path.exists(PYTHON):
        return False, f"{PYTHON} is missing (apt-get install python3)"
    try:
        sandbox = NamespaceSandbox()
        result = asyncio.run(_doctor_run(sandbox))
    except SandboxUnavailable as exc:
        return False, str(exc)
    if not result.ok or result.stdout.strip() != "ok":
        return (
            False,
            f"a test execution failed: {result.ended} {result.detail} {result.stderr[-300:]}",
        )
    notes = []
    notes.append("uid per sandbox" if os.geteuid() == 0 else "runs as the calling user")
    notes.append("cgroup limits" if Cgroups.detect() else "rlimits only (no writable cgroup)")
    return True, f"bubblewrap works ({', '.join(notes)})"


async def _doctor_run(sandbox: NamespaceSandbox) -> Result:
    try:
        return await sandbox.execute(Execution(code="print('ok')"))
    finally:
        await sandbox.close()


@dataclass
class _Started:
    """A launched sandbox waiting for its request."""

    launcher: Launcher
    cgroup: SandboxCgroup | None
    uid: int | None
    workspace_mb: int
    started: float
    network: EgressNetwork | None = None
    status_read: int = -1
    """The host's end of the pipe the loader writes its end status to (-1: none)."""
    status_fd: int | None = None
    """That pipe's write end, as numbered inside the sandbox."""


class NamespaceSandbox:
    """Runs each execution in a fresh bubblewrap sandbox (see the module docstring)."""

    def __init__(
        self,
        *,
        pool_size: int = 0,
        pool_limits: Limits | None = None,
        use_cgroup: bool = True,
        seccomp: bool = True,
        python: str = PYTHON,
        egress_uplink: str | None = None,
    ) -> None:
        """Check the host can run sandboxes at all (bwrap present, filter built).

        Args:
            pool_size: sandboxes kept started and waiting (0: every execution starts cold).
            pool_limits: the limits pooled sandboxes are made for; an execution asking for
                another workspace size starts cold.
            use_cgroup: put each sandbox in a cgroup when the host allows (off only for tests).
            seccomp: install the seccomp filter (off only for tests proving what it stops).
            python: the interpreter inside the sandbox; it must live under /usr.
            egress_uplink: the network namespace (under /run/netns) that executions with
                ``NetworkPolicy.ALLOWLIST`` reach the world through (egress.py); without it
                they are refused.
        """
        bwrap = shutil.which("bwrap")
        if bwrap is None:
            raise SandboxUnavailable(
                "bubblewrap (bwrap) is not installed",
                hint="apt-get install bubblewrap, or choose another backend (autonomic sandbox doctor)",
            )
        self._bwrap = bwrap
        self._plain_bwrap = _plain_executable(bwrap)
        self._python = python
        self._seccomp = build_filter() if seccomp else None
        self._root = os.geteuid() == 0
        # The spawning thread takes the sandbox's uid itself (``_thread_as``) where it can: root
        # in all its ids, the syscall numbers known (and a bwrap that gains nothing on exec).
        self._thread_uid = (
            os.getresuid() == (0, 0, 0)
            and os.getresgid() == (0, 0, 0)
            and platform.machine() == "x86_64"
        )
        self._cgroups = Cgroups.detect() if use_cgroup else None
        if self._cgroups is not None:
            # Groups a killed worker made ahead and could not remove (each names its maker).
            self._cgroups.sweep()
        self._pool_size = pool_size
        self._pool_limits = pool_limits or Limits()
        if self._pool_limits.network is not NetworkPolicy.NONE:
            raise InvalidInput(
                "pooled sandboxes cannot have a network",
                hint="leave pool_limits.network at NetworkPolicy.NONE; egress executions start cold",
            )
        self._egress_uplink = egress_uplink
        self._pool: list[_Started] = []
        self._refills: set[asyncio.Task[None]] = set()
        self._launches: set[asyncio.Future[_Started]] = set()
        self._closed = False
        # Finishes each sandbox after its result is handed out (_finish). A thread, not a task:
        # it goes on while the event loop is busy or gone, and the interpreter waits for what it
        # was given before it exits (concurrent.futures joins its threads at exit).
        self._reaper = ThreadPoolExecutor(2, thread_name_prefix="sandbox-reaper")
        self._reaping: set[Future[None]] = set()
        # Cgroups made ahead by the reaper after each execution, so the next one's path has no
        # mkdir (0.12 ms); each is taken once. Removed by close(), or when this object is
        # collected or the interpreter exits (weakref.finalize).
        self._fresh_cgroups: list[SandboxCgroup] = []
        weakref.finalize(self, _remove_fresh, self._fresh_cgroups)
        self._reaper.submit(lambda: None)  # its thread starts now, not on an execution's path

    @property
    def name(self) -> str:
        return "namespace"

    @property
    def cgroups(self) -> Cgroups | None:
        return self._cgroups

    async def start(self) -> None:
        """Fill the warm pool now rather than on first use; returns once every one is ready."""
        await asyncio.gather(*self._refills, return_exceptions=True)
        while len(self._pool) < self._pool_size and not self._closed:
            self._pool.append(await asyncio.to_thread(self._launch, self._pool_limits, True))

    async def execute(self, execution: Execution) -> Result:
        begun = time.monotonic()
        limits = execution.limits
        if limits.network is NetworkPolicy.NONE and limits.egress_allow:
            raise InvalidInput(
                "egress_allow is set but the network policy is NONE",
                hint="set Limits(network=NetworkPolicy.ALLOWLIST, ...) or drop egress_allow",
            )
        if limits.network is NetworkPolicy.ALLOWLIST:
            check_host(self._egress_uplink)
            parse_allow(limits.egress_allow)  # clear errors before anything is started
        if (execution.code is None) == (execution.command is None):
            raise InvalidInput(
                "an execution needs exactly one of code or command",
                hint="pass Python source as code=, or an argv tuple as command=",
            )
        problem = check_files(execution.files, limits.workspace_mb)
        if problem is not None:
            return _refused(problem, begun)
        if self._closed:
            raise SandboxUnavailable("this sandbox was closed", hint="build a new one")
        pooled = self._poolable(limits)
        started = self._pool.pop() if pooled and self._pool else None
        try:
            if started is None:
                started = await self._launch_cold(limits)
            return await self._run(started, execution, begun)
        finally:
            if started is not None:
                self._finish(started)
            if pooled:
                # Refilled once this execution is done, not while it runs: a launch is a few
                # milliseconds of CPU (and a GIL-holding spawn) that on a small machine would be
                # taken from the execution the caller is waiting for.
                self._refill()

    async def close(self) -> None:
        self._closed = True
        # Not cancelled: a launch runs in a thread and would finish unowned; each refill sees
        # ``_closed`` and cleans up what it started.
        await asyncio.gather(*self._refills, *self._launches, return_exceptions=True)
        pool, self._pool = self._pool, []
        for started in pool:
            started.launcher.kill()
            if started.cgroup is not None:
                started.cgroup.kill_all(spare=started.launcher.pid)
            await asyncio.to_thread(self._cleanup, started)
        await self.settle()
        self._reaper.shutdown(wait=False)
        _remove_fresh(self._fresh_cgroups)
        for cgroup in list(_LINGERING):
            if await asyncio.to_thread(_remove_cgroup, cgroup, 10.0):
                _LINGERING.remove(cgroup)

    async def settle(self) -> None:
        """Wait until every execution that has returned is cleaned up.

        An execution's result is returned before its sandbox is torn down: the launcher is
        reaped, what is left killed, the cgroup removed, the uid given back and an egress
        network removed by a thread of this sandbox right after (``close()`` and the
        interpreter's exit wait for it too). This is the point after which nothing of them is
        left on the host.
        """
        while self._reaping:
            await asyncio.gather(
                *(asyncio.wrap_future(f) for f in list(self._reaping)), return_exceptions=True
            )

    # -- internals -----------------------------------------------------------------------------

    async def _launch_cold(self, limits: Limits) -> _Started:
        """Launch in a thread; if the caller is cancelled meanwhile, the sandbox is still reaped."""
        launch: asyncio.Future[_Started]
        if limits.network is NetworkPolicy.NONE:
            launch = asyncio.wrap_future(_SPAWNER.submit(lambda: self._launch_in(limits, None)))
        else:  # the network is built first, in a thread of its own (``ip`` commands)
            launch = asyncio.ensure_future(asyncio.to_thread(self._launch, limits))
        self._launches.add(launch)
        launch.add_done_callback(self._launches.discard)
        try:
            return await asyncio.shield(launch)
        except asyncio.CancelledError:
            # Wait for the launch and reap it here: a done-callback alone never runs if the
            # caller's event loop closes first (asyncio.run returning), leaking the sandbox
            # (and, with an egress allow-list, its namespaces). A second cancellation while
            # waiting falls back to the callback.
            try:
                orphan = await asyncio.shield(launch)
            except asyncio.CancelledError:

                def reap(done: asyncio.Future[_Started]) -> None:
                    if not done.cancelled() and done.exception() is None:
                        self._finish(done.result())

                launch.add_done_callback(reap)
                raise
            except Exception:  # noqa: S110 -- the launch failed: nothing to reap
                pass
            else:
                self._finish(orphan)
            raise

    def _poolable(self, limits: Limits) -> bool:
        return (
            self._pool_size > 0
            and limits.workspace_mb == self._pool_limits.workspace_mb
            and limits.network is NetworkPolicy.NONE
        )

    def _refill(self) -> None:
        if self._closed or len(self._pool) + len(self._refills) >= self._pool_size:
            return

        async def refill() -> None:
            started = await asyncio.to_thread(self._launch, self._pool_limits, True)
            if self._closed:
                started.launcher.kill()
                await asyncio.to_thread(self._cleanup, started)
            else:
                self._pool.append(started)

        task = asyncio.get_running_loop().create_task(refill())
        self._refills.add(task)
        task.add_done_callback(self._refills.discard)

    def _launch(self, limits: Limits, ready: bool = False) -> _Started:
        """Start a sandbox whose loader waits for its request (blocking: run it in a thread).

        With ``ready``, return only once the loader inside has announced itself (for the pool).
        """
        network = None
        if limits.network is NetworkPolicy.ALLOWLIST:
            assert self._egress_uplink is not None  # check_host refused it otherwise
            network = EgressNetwork(self._egress_uplink, parse_allow(limits.egress_allow))
            network.open()
        try:
            started = _SPAWNER.call(lambda: self._launch_in(limits, network))
        except BaseException:
            if network is not None:
                network.close()
            raise
        if ready and not started.launcher.wait_ready(10.0):
            self._cleanup(started)
            raise SandboxUnavailable(
                "a pooled sandbox did not start within 10 s",
                hint="run `autonomic sandbox doctor`",
            )
        return started

    def _launch_in(self, limits: Limits, network: EgressNetwork | None) -> _Started:
        """Create the cgroup and start the launcher (on the spawner thread, see ``_Spawner``)."""
        uid = _UIDS.take() if self._root else None
        cgroup = None
        if self._cgroups is not None:
            try:
                cgroup = self._fresh_cgroups.pop(0)  # the oldest first
            except IndexError:
                cgroup = self._cgroups.create(host_process.tag(next(_NAMES)))
            cgroup.set_limits(memory_mb=limits.memory_mb, processes=limits.processes + 8)
        seccomp_read = gate_read = gate_write = status_read = status_write = -1
        launcher = None
        try:
            if cgroup is not None and cgroup.measures_cpu:
                # The loader's end status (loader.py): the result can be returned before the
                # sandbox has torn down. Only with a cgroup that counts CPU time: the
                # launcher's rusage would give it only once reaped.
                status_read, status_write = os.pipe()
                os.set_blocking(status_read, False)
            if self._seccomp is not None:
                seccomp_read, seccomp_write = os.pipe()
                os.write(seccomp_write, self._seccomp)
                os.close(seccomp_write)
            # cgroup v1: this thread steps into the group while it spawns, so the launcher is
            # born inside; v2 (or a refusal): bwrap waits at a gate until the launcher is moved.
            with (
                cgroup.holding_this_thread() if cgroup else contextlib.nullcontext(False) as inside
            ):
                if cgroup is not None and not inside:
                    # bwrap reads its --args descriptor (empty) to the end before it clones the
                    # sandbox: the gate holds it there until the host has moved the launcher.
                    gate_read, gate_write = os.pipe()
                # nsenter (egress) needs root: then ``unshare`` drops the uid after it.
                thread_uid = (
                    uid if self._thread_uid and self._plain_bwrap and network is None else None
                )
                argv = self._argv(
                    limits,
                    uid if thread_uid is None else None,
                    seccomp_read if seccomp_read >= 0 else None,
                    network,
                    gate_fd=gate_read if gate_read >= 0 else None,
                )
                # The host's Popen itself switches no uid (that would make it fork, copying the
                # worker's page tables: 1.5 ms at the least, far more for a big worker under
                # load, with the GIL held), so it can vfork: this thread has the uid already, or
                # the launcher drops it.
                with _thread_as(thread_uid) if thread_uid is not None else contextlib.nullcontext():
                    launcher = Launcher.spawn(
                        argv,
                        pass_fds=tuple(
                            fd for fd in (seccomp_read, gate_read, status_write) if fd >= 0
                        ),
                        env=_ENV,
                    )
            if cgroup is not None and not inside:
                # The launcher (unshare or nsenter, then bwrap) is moved while it is held at the
                # gate: everything the sandbox ever runs is forked inside the group, its cgroup
                # namespace is rooted there, and no code has run before the limits apply.
                try:
                    cgroup.join(launcher.pid)
                except OSError as exc:
                    raise SandboxUnavailable(
                        f"could not move the sandbox into its cgroup: {exc}",
                        hint="run `autonomic sandbox doctor`",
                    ) from exc
        except BaseException:
            if launcher is not None:
                # Killed before the gate opens, so bwrap never goes on outside its cgroup.
                launcher.kill_session()
                launcher.close()
            if cgroup is not None:
                _remove_cgroup(cgroup, 5.0)
            if uid is not None:
                _UIDS.give(uid)
            if status_read >= 0:
                os.close(status_read)
            raise
        finally:
            for fd in (seccomp_read, gate_read, gate_write, status_write):
                if fd >= 0:
                    os.close(fd)
        launcher.marker_pending = True
        started = _Started(
            launcher,
            cgroup,
            uid,
            limits.workspace_mb,
            time.monotonic(),
            network,
            status_read=status_read,
            status_fd=status_write if status_write >= 0 else None,
        )
        return started

    def _argv(
        self,
        limits: Limits,
        uid: int | None,
        seccomp_fd: int | None,
        network: EgressNetwork | None = None,
        *,
        gate_fd: int | None = None,
    ) -> list[str]:
        argv: list[str] = []
        if network is not None:
            # nsenter execs (no fork for --net alone): the launcher's pid stays the sandbox's.
            argv += ["/usr/bin/nsenter", f"--net={network.sandbox_path}", "--"]
        if uid is not None and self._plain_bwrap:
            # setgroups(0), setgid, setuid, exec: the cheapest uid drop at hand (setpriv looks the
            # numbers up as user and group names first, through NSS: ~0.5 ms more per launch).
            # Without no_new_privs until bwrap sets it, its first act: an exec of a bwrap with no
            # setuid bit and no file capabilities gains nothing.
            argv += ["/usr/bin/unshare", f"--setgid={uid}", f"--setuid={uid}", "--"]
        elif uid is not None:
            argv += [
                "/usr/bin/setpriv",
                f"--reuid={uid}",
                f"--regid={uid}",
                "--clear-groups",
                "--no-new-privs",
            ]
        argv += [self._bwrap, *(["--args", str(gate_fd)] if gate_fd is not None else [])]
        workspace_bytes = str(limits.workspace_mb * 1024 * 1024)
        argv += [
            "--unshare-all",
            # Egress: keep the namespace nsenter entered (its only route is the filtering router).
            *(["--share-net"] if network is not None else []),
            "--unshare-user",
            "--disable-userns",
            "--die-with-parent",
            "--as-pid-1",
            "--new-session",
            "--hostname",
            "sandbox",
            "--ro-bind",
            "/usr",
            "/usr",
            "--symlink",
            "usr/bin",
            "/bin",
            "--symlink",
            "usr/lib",
            "/lib",
            "--symlink",
            "usr/lib64",
            "/lib64",
            "--symlink",
            "usr/sbin",
            "/sbin",
            "--ro-bind-try",
            "/etc/alternatives",
            "/etc/alternatives",
            "--proc",
            "/proc",
            "--dev",
            "/dev",
            "--size",
            workspace_bytes,
            "--tmpfs",
            WORKSPACE,
            "--dir",
            f"{WORKSPACE}/.tmp",
            "--symlink",
            f"{WORKSPACE}/.tmp",
            "/tmp",  # noqa: S108 -- inside the sandbox: a link into its own workspace
            "--remount-ro",
            "/",
            "--remount-ro",
            "/dev",
            "--chdir",
            WORKSPACE,
            "--clearenv",
            "--setenv",
            "PATH",
            "/usr/bin:/bin",
            "--setenv",
            "HOME",
            WORKSPACE,
            "--setenv",
            "TMPDIR",
            "/tmp",  # noqa: S108
            "--setenv",
            "LANG",
            "C.UTF-8",
            *(["--seccomp", str(seccomp_fd)] if seccomp_fd is not None else []),
            self._python,
            "-I",
            "-S",
            "-c",
            LOADER,
        ]
        return argv

    def _rlimits(self, limits: Limits) -> dict[str, tuple[int, int]]:
        # The code runs as its namespace's pid 1, which ignores SIGXCPU: the hard limit's SIGKILL
        # is what stops it (children get SIGXCPU at the same point).
        cpu = max(1, int(limits.cpu_seconds + 0.999))
        file_size = limits.file_size_mb * 1024 * 1024
        rlimits = {
            "CPU": (cpu, cpu),
            "FSIZE": (file_size, file_size),
            "NOFILE": (OPEN_FILES, OPEN_FILES),
            "CORE": (0, 0),
        }
        if self._root:
            # Per-uid, and each sandbox has its own uid; the launcher chain counts too.
            rlimits["NPROC"] = (limits.processes + 8, limits.processes + 8)
        if self._cgroups is None:
            # No cgroup: per-process address space is the best bound left (documented weaker).
            address = (limits.memory_mb + 64) * 1024 * 1024
            rlimits["AS"] = (address, address)
        return rlimits

    async def _run(self, started: _Started, execution: Execution, begun: float) -> Result:
        limits = execution.limits
        if started.cgroup is not None:
            started.cgroup.set_limits(memory_mb=limits.memory_mb, processes=limits.processes + 8)
        payload = encode_request(
            code=execution.code,
            command=execution.command,
            files=execution.files,
            rlimits=self._rlimits(limits),
            stdin=execution.stdin,
            status_fd=started.status_fd,
        )
        cgroup = started.cgroup
        outcome = await started.launcher.run(
            payload,
            wall_seconds=limits.wall_seconds,
            output_bytes=limits.output_bytes,
            on_kill=(
                (lambda: cgroup.kill_all(spare=started.launcher.pid))
                if cgroup is not None
                else lambda: None
            ),
            status_fd=started.status_read if started.status_read >= 0 else None,
        )
        return self._result(outcome, started, limits, begun)

    def _result(self, outcome: Outcome, started: _Started, limits: Limits, begun: float) -> Result:
        oom = started.cgroup.oom_kills() if started.cgroup is not None else 0
        peak = started.cgroup.peak_mb() if started.cgroup is not None else outcome.max_rss_mb
        measured = started.cgroup.cpu_seconds() if started.cgroup is not None else None
        if measured is not None:
            outcome.cpu_seconds = measured
        sig = outcome.signal
        stderr_text = outcome.stderr.data.decode("utf-8", "replace")
        ended, detail = Ended.EXIT, ""
        if outcome.output_exceeded:
            ended, detail = Ended.OUTPUT_LIMIT, f"output passed {limits.output_bytes} bytes"
        elif outcome.timed_out:
            ended, detail = Ended.TIMEOUT, f"still running after {limits.wall_seconds:g} s"
        elif oom > 0 or (self._cgroups is None and stderr_text.rstrip().endswith("MemoryError")):
            ended, detail = Ended.MEMORY, f"went over {limits.memory_mb} MB"
        elif sig in (signal.SIGXCPU, signal.SIGKILL):
            # The code is its namespace's pid 1, which nothing inside the sandbox can SIGKILL;
            # we did not (no timeout, no output cap) and the OOM killer did not: RLIMIT_CPU's
            # hard limit did. (The cgroup's CPU clock is not used to decide: on some virtual
            # machines it lags the rlimit's by a quarter or more under load.)
            ended, detail = Ended.CPU, f"used more than {limits.cpu_seconds:g} s of CPU"
        elif sig is not None:
            ended, detail = Ended.KILLED, f"killed by {signal.Signals(sig).name}"
        exit_code = outcome.exit_code
        if sig is not None:
            exit_code = -sig
        return Result(
            ended=ended,
            exit_code=exit_code if ended is Ended.EXIT or sig is None else None,
            stdout=outcome.stdout.data.decode("utf-8", "replace"),
            stderr=stderr_text,
            stdout_truncated=outcome.stdout.truncated,
            stderr_truncated=outcome.stderr.truncated,
            duration_s=time.monotonic() - begun,
            usage=Usage(cpu_seconds=round(outcome.cpu_seconds, 4), max_rss_mb=round(peak, 2)),
            backend=self.name,
            detail=detail,
        )

    def _finish(self, started: _Started) -> None:
        """Clean up after an execution, off the caller's path: in the reaper thread.

        The result is out already (or the caller gave up). What is left: a launcher to reap
        (still running when the loader's status came first: the sandbox tearing down, or code
        that wrote a status and went on, which ``_cleanup`` kills), a cgroup to remove, a uid
        to give back. ``close()`` waits for these, and so does the interpreter at exit.
        """
        try:
            future = self._reaper.submit(self._cleanup_and_make, started)
        except RuntimeError:  # closed meanwhile (an execution still running when close() began)
            self._cleanup(started)
            return
        self._reaping.add(future)
        future.add_done_callback(self._reaping.discard)

    def _cleanup_and_make(self, started: _Started) -> None:
        self._cleanup(started)
        self._make_cgroups()

    def _make_cgroups(self) -> None:
        """Top up the fresh cgroups (in the reaper thread, off every execution's path)."""
        while (
            self._cgroups is not None
            and not self._closed
            and len(self._fresh_cgroups) < CGROUPS_AHEAD
        ):
            self._fresh_cgroups.append(self._cgroups.create(host_process.tag(next(_NAMES))))

    def _cleanup(self, started: _Started) -> None:
        """Leave nothing: launcher reaped, every process of the cgroup gone, the cgroup removed.

        Blocking (a thread's work): kills what still runs below the launcher and waits for it.
        """
        started.launcher.close()
        if started.status_read >= 0:
            os.close(started.status_read)
            started.status_read = -1
        if started.cgroup is not None and not _remove_cgroup(started.cgroup, 5.0):
            _LINGERING.append(started.cgroup)  # retried by later cleanups and close()
        if started.uid is not None:
            _UIDS.give(started.uid)
            started.uid = None
        if started.network is not None:
            # After the processes: nothing of the sandbox holds the namespace any more.
            network, started.network = started.network, None
            network.close()
        for cgroup in list(_LINGERING):
            if cgroup.remove():
                _LINGERING.remove(cgroup)


_LINGERING: list[SandboxCgroup] = []
"""Cgroups whose processes the kernel was still tearing down when their sandbox was cleaned up."""


def _remove_fresh(fresh: list[SandboxCgroup]) -> None:
    """Remove cgroups made ahead and never used (empty: nothing to kill)."""
    while fresh:
        with contextlib.suppress(IndexError):
            fresh.pop().remove()


def _remove_cgroup(cgroup: SandboxCgroup, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while not cgroup.remove():
        cgroup.kill_all()
        if time.monotonic() > deadline:
            return False
        time.sleep(0.002)  # the kernel finishes tearing down killed tasks
    return True


def _plain_executable(path: str) -> bool:
    """No setuid or setgid bit and no file capabilities: exec'ing ``path`` gains no privilege."""
    if os.stat(path).st_mode & (stat.S_ISUID | stat.S_ISGID):
        return False
    try:
        os.getxattr(path, "security.capability")
    except OSError:
        return True
    return False


def _refused(detail: str, begun: float) -> Result:
    return Result(
        ended=Ended.REFUSED,
        exit_code=None,
        stdout="",
        stderr="",
        stdout_truncated=False,
        stderr_truncated=False,
        duration_s=time.monotonic() - begun,
        backend="namespace",
        detail=detail,
    )
