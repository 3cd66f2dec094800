"""Test helpers for sandbox backends: skip only when the host truly cannot, and leak checks."""

from __future__ import annotations

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


def sandbox_processes() -> list[int]:
    """Host processes running under a sandbox uid (there must be none between executions)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            status = Path(f"/proc/{entry}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("Uid:") and int(line.split()[1]) >= UID_BASE:
                found.append(int(entry))
    return found


OUR_TEMP_PREFIXES = ("autonomic-probe-", "autonomic-host-", "autonomic-gate-")
"""What the sandbox code names its temporary files (other engineers' tools share /tmp)."""


def temp_entries() -> set[str]:
    """The sandbox code's entries in the host's temporary directory (compared before/after)."""
    return {p for p in os.listdir(tempfile.gettempdir()) if p.startswith(OUR_TEMP_PREFIXES)}
