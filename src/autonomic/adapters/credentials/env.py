"""Secrets from environment variables: ``AUTONOMIC_SECRET_<TENANT>__<NAME>``, else the shared
``AUTONOMIC_SECRET_<NAME>`` (names upper-cased, ``-`` and ``.`` as ``_``).

A tenant-specific variable wins, so one worker can hold a different secret per tenant; a shared
one serves every tenant (a single-tenant deployment).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

from autonomic.errors import NotFound
from autonomic.ports.credentials import SecretSource

PREFIX = "AUTONOMIC_SECRET_"


def _part(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]", "_", text).upper()


class EnvSecrets(SecretSource):
    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self._environ = os.environ if environ is None else environ

    def secret(self, tenant: str, name: str) -> str:
        for variable in (f"{PREFIX}{_part(tenant)}__{_part(name)}", f"{PREFIX}{_part(name)}"):
            value = self._environ.get(variable)
            if value:
                return value
        raise NotFound(
            f"no secret {name!r} for tenant {tenant} in the environment",
            hint=f"set {PREFIX}{_part(tenant)}__{_part(name)} (or {PREFIX}{_part(name)})",
        )
