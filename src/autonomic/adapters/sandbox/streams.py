"""Reading untrusted output without trusting its size or encoding, and checking requests.

Shared by the OCI and microVM backends. A stream is drained to the end (so the writer never
blocks on a full pipe and can be killed cleanly) but only ``cap`` bytes are kept; crossing the cap
sets an event that the backend turns into ``Ended.OUTPUT_LIMIT``.
"""

from __future__ import annotations

import asyncio
from pathlib import PurePosixPath

from autonomic.errors import InvalidInput
from autonomic.ports.sandbox import Execution, NetworkPolicy, SandboxUnavailable

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
    for rel in execution.files:
        path = PurePosixPath(rel)
        if path.is_absolute() or ".." in path.parts or not path.parts or rel.endswith("/"):
            raise InvalidInput(
                f"file name {rel!r} is not a relative path inside the workspace",
                hint="use names like 'data.csv' or 'dir/data.csv', without '..' or a leading '/'",
            )
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
