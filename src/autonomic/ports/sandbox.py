"""The sandbox port: run untrusted code somewhere that is not the host.

Model-generated code is untrusted input. Every backend (Linux namespaces via bubblewrap, an OCI
runtime, a microVM) answers the same request with the same result shape, so the ``python_exec``
tool, the CLI and the escape probes do not care which one ran the code. A backend never raises
for what the code did (a crash, a timeout, a memory bomb): those are *results* with an
``ended`` reason. It raises ``SandboxUnavailable`` only when it cannot run anything at all.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from autonomic.errors import AutonomicError


class SandboxUnavailable(AutonomicError):
    """The backend cannot run on this host (missing binary, no namespaces, no image)."""

    code = "sandbox_unavailable"


class Ended(enum.StrEnum):
    """Why an execution stopped. ``EXIT`` is the only one where the code chose to stop."""

    EXIT = "exit"
    TIMEOUT = "timeout"
    CPU = "cpu"
    MEMORY = "memory"
    OUTPUT_LIMIT = "output_limit"
    KILLED = "killed"
    REFUSED = "refused"
    """The static-analysis gate refused the code before it ran."""


class NetworkPolicy(enum.StrEnum):
    NONE = "none"
    """No network device besides loopback inside the sandbox (the default)."""
    ALLOWLIST = "allowlist"
    """Egress only to ``Limits.egress_allow``; private ranges and metadata always dropped."""


@dataclass(frozen=True, slots=True)
class Limits:
    """Hard limits; each is enforced by the backend, not trusted to the code."""

    wall_seconds: float = 10.0
    cpu_seconds: float = 10.0
    memory_mb: int = 256
    """Across all processes of the sandbox."""
    processes: int = 64
    file_size_mb: int = 16
    workspace_mb: int = 64
    output_bytes: int = 1_000_000
    """Per stream; beyond it the stream is truncated and flagged."""
    network: NetworkPolicy = NetworkPolicy.NONE
    egress_allow: tuple[str, ...] = ()
    """``host:port`` or ``cidr:port`` entries, only with ``NetworkPolicy.ALLOWLIST``."""


@dataclass(frozen=True, slots=True)
class Execution:
    """What to run: Python source (run as ``python3 main.py``) or an argv command, never both."""

    code: str | None = None
    command: tuple[str, ...] | None = None
    files: Mapping[str, bytes] = field(default_factory=dict)
    """Files placed in the fresh workspace before the run; relative paths only."""
    stdin: bytes = b""
    limits: Limits = field(default_factory=Limits)


@dataclass(frozen=True, slots=True)
class Usage:
    cpu_seconds: float = 0.0
    max_rss_mb: float = 0.0


@dataclass(frozen=True, slots=True)
class Result:
    """The outcome; output is bytes decoded with replacement, so junk never breaks a caller."""

    ended: Ended
    exit_code: int | None
    stdout: str
    stderr: str
    stdout_truncated: bool
    stderr_truncated: bool
    duration_s: float
    usage: Usage = field(default_factory=Usage)
    backend: str = ""
    detail: str = ""
    """A human-readable explanation when ``ended`` is not ``EXIT``."""

    @property
    def ok(self) -> bool:
        return self.ended is Ended.EXIT and self.exit_code == 0


@runtime_checkable
class Sandbox(Protocol):
    """A place to run untrusted code."""

    @property
    def name(self) -> str:
        """The backend's name (``namespace``, ``oci``, ``microvm``)."""
        ...

    async def execute(self, execution: Execution) -> Result:
        """Run it, enforcing ``execution.limits``; raise only ``SandboxUnavailable``."""
        ...

    async def settle(self) -> None:
        """Wait until nothing of the executions that have returned is left on the host (a
        backend may hand a result out before its sandbox is torn down; one that tears down
        before returning has nothing to wait for)."""
        ...

    async def close(self) -> None:
        """Release pooled resources; no process, mount or temp directory may outlive this."""
        ...
