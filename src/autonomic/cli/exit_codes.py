"""What the ``autonomic`` command's exit status means, in one place.

``run``, ``resume`` and ``demo`` exit with the outcome of the run they drove, so a script or a
scheduler can tell "done" from "a human must act" from "it failed" without parsing the output.
Every other command exits 0 when it did what it was asked. docs/cli.md holds the same table.
"""

from __future__ import annotations

from enum import IntEnum

from autonomic.core.run import RunStatus


class ExitCode(IntEnum):
    """The exit statuses of ``autonomic``; numbers are stable across versions."""

    OK = 0
    """The command did what it was asked; for ``run``/``resume``/``demo``: the run COMPLETED."""
    ERROR = 1
    """The command could not do its work for a reason that is not the input (the database is
    unreachable, a check found problems, a sandbox probe got through)."""
    USAGE = 2
    """Bad input: an unknown option, an invalid id, a missing file. The message says what to fix."""
    FAILED = 3
    """The run ended FAILED."""
    TAINTED = 4
    """``autonomic screen``: the content was flagged as an injection."""
    WAITING = 5
    """The run waits for a human: an approval, or a decision about it (``autonomic show`` says
    which, ``autonomic approvals`` lists approvals)."""
    SUSPENDED = 6
    """The run is SUSPENDED (a guard or the workflow stopped it): inspect it, then ``resume
    --force`` or ``cancel``."""
    CANCELLED = 7
    """The run is CANCELLED."""
    UNFINISHED = 8
    """The run is still PENDING, RUNNING or WAITING_FOR_CHILD but this process stopped driving it
    (it lost the lease to another worker, or was asked to stop; or it waits for a child run): a
    worker or ``resume`` goes on with it."""
    INTERRUPTED = 130
    """Ctrl-C (the shell's convention: 128 + SIGINT)."""

    @classmethod
    def of(cls, status: RunStatus) -> ExitCode:
        """The exit status that reports a run in ``status``."""
        return _BY_STATUS[status]


_BY_STATUS: dict[RunStatus, ExitCode] = {
    RunStatus.COMPLETED: ExitCode.OK,
    RunStatus.FAILED: ExitCode.FAILED,
    RunStatus.WAITING_FOR_HUMAN: ExitCode.WAITING,
    RunStatus.SUSPENDED: ExitCode.SUSPENDED,
    RunStatus.CANCELLED: ExitCode.CANCELLED,
    RunStatus.PENDING: ExitCode.UNFINISHED,
    RunStatus.RUNNING: ExitCode.UNFINISHED,
    RunStatus.WAITING_FOR_CHILD: ExitCode.UNFINISHED,
}
