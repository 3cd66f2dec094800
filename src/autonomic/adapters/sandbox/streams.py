"""Reading untrusted output without trusting its size or encoding, and checking requests.

Shared by the OCI and microVM backends. A stream is drained to the end (so the writer never
blocks on a full pipe and can be killed cleanly) but only ``cap`` bytes are kept; crossing the cap
sets an event that the backend turns into ``Ended.OUTPUT_LIMIT``.
"""

from __future__ import annotations

import asyncio
import time

from autonomic.adapters.sandbox.loader import check_files
from autonomic.errors import InvalidInput
from autonomic.ports.sandbox import Ended, Execution, NetworkPolicy, Result, SandboxUnavailable

_CHUNK = 65536


class CappedStream:
    """Keeps the first ``cap`` bytes of ``reader``; flags and signals anything beyond."""

    def __init__(self, reader: asyncio.StreamReader, cap: int, overflow: asyncio.Event) -> None:
        self._reader = reader
        self._cap = cap
        self._overflow = overflow
        self._chunks: list[bytes] = []
        self._kept = 0
        self.truncated = False

    async def drain(self) -> None:
        while chunk := await self._reader.read(_CHUNK):
            room = self._cap - self._kept
            if len(chunk) > room:
                chunk = chunk[: max(room, 0)]
                self.truncated = True
                self._overflow.set()
            if chunk:
                self._chunks.append(chunk)
                self._kept += len(chunk)

    @property
    def data(self) -> bytes:
        return b"".join(self._chunks)


def decode(data: bytes) -> str:
    """Bytes from the sandbox as text; invalid UTF-8 becomes U+FFFD, never an exception."""
    return data.decode("utf-8", errors="replace")


def check_execution(execution: Execution) -> None:
    """Refuse a malformed request with one line saying what to change (``InvalidInput``)."""
    if (execution.code is None) == (execution.command is None):
        raise InvalidInput(
            "an execution needs exactly one of code or command",
            hint="pass code='...' for Python source, or command=('prog', 'arg') for a program",
        )
    if execution.command is not None and not execution.command:
        raise InvalidInput("command is empty", hint="give the program and its arguments")
    limits = execution.limits
    for name in ("wall_seconds", "cpu_seconds", "memory_mb", "processes", "output_bytes"):
        if getattr(limits, name) <= 0:
            raise InvalidInput(f"limit {name} must be positive", hint="raise it above zero")
    if limits.workspace_mb <= 0 or limits.file_size_mb <= 0:
        raise InvalidInput("workspace_mb and file_size_mb must be positive", hint="raise them")


def refuse_network(backend: str, execution: Execution) -> None:
    """Backends without egress support refuse an allow-list rather than silently ignore it."""
    if execution.limits.network is not NetworkPolicy.NONE:
        raise SandboxUnavailable(
            f"the {backend} backend has no network at all; NetworkPolicy.ALLOWLIST is not supported",
            hint="use NetworkPolicy.NONE, or the namespace backend for an egress allow-list",
        )


def refused_files(execution: Execution, backend: str, begun: float) -> Result | None:
    """A ``REFUSED`` result when the files escape or overflow the workspace, as every backend.

    The port raises only when nothing can run; files the code asked for that cannot be placed
    are an answer about this request (the conformance suite holds all backends to it).
    """
    problem = check_files(execution.files, execution.limits.workspace_mb)
    if problem is None:
        return None
    return Result(
        ended=Ended.REFUSED,
        exit_code=None,
        stdout="",
        stderr="",
        stdout_truncated=False,
        stderr_truncated=False,
        duration_s=time.monotonic() - begun,
        backend=backend,
        detail=problem,
    )
