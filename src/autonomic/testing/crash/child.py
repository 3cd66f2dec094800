"""Child processes for crash tests: fork one, wait for it, have it drive a run with faults armed.

POSIX only: children are made with ``fork``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from autonomic.bootstrap import build_store
from autonomic.engine.faults import Faults
from autonomic.testing.crash.kit import CrashKit, TrialFiles


@dataclass(frozen=True, slots=True)
class ChildExit:
    """How a child process ended (or stopped)."""

    pid: int
    code: int | None = None
    signal: int | None = None
    stopped: bool = False

    @property
    def killed(self) -> bool:
        return self.signal == signal.SIGKILL

    def __str__(self) -> str:
        if self.stopped:
            return f"pid {self.pid} stopped"
        if self.signal is not None:
            return f"pid {self.pid} killed by {signal.Signals(self.signal).name}"
        return f"pid {self.pid} exited with {self.code}"


def fork_child(body: Callable[[], int]) -> int:
    """Run ``body`` in a forked child and return the child's pid.

    The child leaves with ``os._exit(body())`` (70 and a traceback on stderr if ``body`` raises): it
    never returns into the caller's stack and runs no finalizers, so objects it inherited (open
    database connections of the parent, say) are left alone. Fork with no event loop running and
    no store open, and build stores inside ``body``. (Python 3.12+ warns when a process that runs
    threads forks; ``asyncio.run`` stops its worker threads when it returns, so fork after it.)
    """
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid != 0:
        return pid
    code = 70
    try:
        code = body()
    except BaseException:
        with contextlib.suppress(BaseException):
            os.write(2, traceback.format_exc().encode())
    finally:
        os._exit(code)


def wait_child(pid: int, *, until_stopped: bool = False) -> ChildExit:
    """Block until ``pid`` exits (or, with ``until_stopped``, stops or exits); no polling."""
    _, status = os.waitpid(pid, os.WUNTRACED if until_stopped else 0)
    if os.WIFSTOPPED(status):
        return ChildExit(pid, stopped=True, signal=os.WSTOPSIG(status))
    if os.WIFSIGNALED(status):
        return ChildExit(pid, signal=os.WTERMSIG(status))
    return ChildExit(pid, code=os.WEXITSTATUS(status))


def spawn_driver(
    url: str,
    kit: CrashKit,
    run_id: str,
    files: TrialFiles,
    faults: Faults,
    **engine_options: Any,
) -> int:
    """Fork a child that starts ``run_id`` and drives it with ``faults`` armed; return its pid.

    The child builds its own store from ``url`` (connections are never shared across ``fork``)
    and exits 0 if the run stopped without the faults ending the process.
    """

    def body() -> int:
        async def go() -> None:
            store = build_store(url)
            try:
                engine = kit.engine(store, faults=faults, **engine_options)
                await kit.start(engine, run_id, files)
                await engine.run_to_end(run_id)
            finally:
                await store.close()

        asyncio.run(go())
        return 0

    return fork_child(body)


def drive_in_child(
    url: str, kit: CrashKit, run_id: str, files: TrialFiles, faults: Faults
) -> ChildExit:
    """``spawn_driver`` and wait for the child to end."""
    return wait_child(spawn_driver(url, kit, run_id, files, faults))
