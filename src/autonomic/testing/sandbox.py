"""Test helpers for sandbox backends: skip only when the host truly cannot, and leak checks."""

from __future__ import annotations

import functools
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from autonomic.adapters.sandbox.namespace import UID_BASE


def require_bwrap() -> None:
    """Skip when bubblewrap is missing (``scripts/test`` installs it); fail under ``CI``."""
    if shutil.which("bwrap") is None:
        reason = "bubblewrap is not installed (apt-get install bubblewrap; scripts/test does it)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)


def sandbox_processes(everyone: bool = False) -> list[int]:
    """Host processes running under one of this process's sandbox uids (there must be none
    between executions); ``everyone``: under any sandbox uid.

    Each process draws its sandbox uids from a range of its own (``namespace._Uids``), so
    other test processes on the same machine (parallel workers, another checkout's run) are
    not counted as our leftovers.
    """
    first = UID_BASE + (os.getpid() % 10_000) * 10_000
    low, high = (UID_BASE, 1 << 32) if everyone else (first, first + 10_000)
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            status = Path(f"/proc/{entry}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("Uid:") and low <= int(line.split()[1]) < high:
                found.append(int(entry))
    return found


OUR_TEMP_PREFIXES = ("autonomic-probe-", "autonomic-host-", "autonomic-gate-")
"""What the sandbox code names its temporary files (other engineers' tools share /tmp)."""


def temp_entries() -> set[str]:
    """The sandbox code's entries in the host's temporary directory (compared before/after)."""
    return {p for p in os.listdir(tempfile.gettempdir()) if p.startswith(OUR_TEMP_PREFIXES)}


@functools.cache
def _doctor(name: str) -> tuple[bool, str]:
    from autonomic.adapters.sandbox import BACKENDS

    return BACKENDS[name].doctor()


def require_backend(name: str) -> None:
    """Skip when the backend's own ``doctor()`` says it cannot run here (asked once per name).

    Under ``CI`` that is a failure instead: ``scripts/test`` installs what every backend needs.
    """
    ok, why = _doctor(name)
    if not ok:
        reason = f"the {name} sandbox backend cannot run here: {why}"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
