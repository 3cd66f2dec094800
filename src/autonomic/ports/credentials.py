"""The credentials port: short-lived credentials scoped to one tool call, never to a process.

A tool that needs a secret says so in its contract (``@tool(credentials=["github"])``). For each
call, the engine asks a ``CredentialIssuer`` for a ``ScopedCredential`` per name, scoped to
(tenant, run, tool) and expiring soon after; the tool reads it from ``ctx.credentials["github"]``
and calls ``.reveal()`` at the moment it uses it. Nothing else ever holds it:

* it is not an argument (the model neither chooses nor sees it), not in the ``tool.intent`` or
  ``tool.result`` (a result that echoes it has it replaced by ``[credential redacted]`` before it
  is journaled or shown to the model), not in logs (its ``repr`` and ``str`` are masked), and not
  serialisable (``canonical_json`` refuses it), so it cannot slip into a journal entry;
* the worker process's environment is never handed to a sandbox (the sandbox backends start
  their programs with an empty environment), and the credential is not in it anyway unless the
  source is the environment.

Where secrets come from is a ``SecretSource`` (``adapters/credentials``: the environment, a file;
a Vault-like provider would be another adapter that mints a real short-lived token in ``issue``).
"""

from __future__ import annotations

import abc
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from autonomic.errors import NotFound, UserError

REDACTED = "[credential redacted]"


class CredentialExpired(UserError):
    code = "credential_expired"


@dataclass(frozen=True, slots=True)
class CredentialScope:
    """What one credential is for: this tenant's run, this tool, this name."""

    tenant: str
    run_id: str
    tool: str
    name: str


@dataclass(frozen=True, slots=True)
class ScopedCredential:
    """A secret for one call, until ``expires_at``. Masked wherever it is printed."""

    scope: CredentialScope
    expires_at: float
    _secret: str = field(repr=False)
    _clock: Callable[[], float] = field(default=time.time, repr=False, compare=False)

    def reveal(self) -> str:
        """The secret, while the credential lasts; ``CredentialExpired`` after."""
        if self._clock() >= self.expires_at:
            raise CredentialExpired(
                f"the {self.scope.name!r} credential of {self.scope.tool} expired",
                hint="credentials last one call; ask for it again in the next call",
            )
        return self._secret

    def reveal_unchecked(self) -> str:
        """The secret whether or not it expired: for redacting it from what a call returned, never
        for using it."""
        return self._secret

    def __repr__(self) -> str:
        s = self.scope
        return f"ScopedCredential({s.name!r} for {s.tool} in run {s.run_id}, ***)"

    __str__ = __repr__


class SecretSource(abc.ABC):
    """Where long-lived secrets are kept, per tenant."""

    @abc.abstractmethod
    def secret(self, tenant: str, name: str) -> str:
        """The secret ``name`` of ``tenant``; ``NotFound`` (naming no value) if there is none."""


class CredentialIssuer:
    """Issues a ``ScopedCredential`` per (tenant, run, tool, name) from a ``SecretSource``.

    Args:
        source: where the secrets are.
        ttl: how long an issued credential lasts (seconds): one call's worth.
        clock: seconds since the epoch.
    """

    def __init__(
        self, source: SecretSource, *, ttl: float = 300.0, clock: Callable[[], float] = time.time
    ) -> None:
        self.source = source
        self.ttl = ttl
        self.clock = clock

    def issue(self, scope: CredentialScope) -> ScopedCredential:
        """A credential for ``scope``; ``NotFound`` when the source has no such secret."""
        secret = self.source.secret(scope.tenant, scope.name)
        if not secret:
            raise NotFound(f"no secret {scope.name!r} for tenant {scope.tenant}")
        return ScopedCredential(scope, self.clock() + self.ttl, secret, self.clock)


def redact(value: object, secrets: tuple[str, ...]) -> object:
    """``value`` (JSON-like) with every occurrence of a secret replaced by ``REDACTED``."""
    if not secrets:
        return value
    if isinstance(value, str):
        for s in secrets:
            if s and s in value:
                value = value.replace(s, REDACTED)
        return value
    if isinstance(value, dict):
        return {redact(k, secrets): redact(v, secrets) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(v, secrets) for v in value]
    return value
