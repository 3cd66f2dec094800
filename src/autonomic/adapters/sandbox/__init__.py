"""Sandbox backends, by name: the composition root picks one with ``build_sandbox(name, **opts)``.

Imports are lazy so that choosing one backend never loads another's dependencies.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from autonomic.errors import ConfigError
from autonomic.ports.sandbox import Sandbox


def _oci(**opts: Any) -> Sandbox:
    from autonomic.adapters.sandbox.oci import OciSandbox

    return OciSandbox(**opts)


def _microvm(**opts: Any) -> Sandbox:
    from autonomic.adapters.sandbox.microvm import MicroVmSandbox

    return MicroVmSandbox(**opts)


BACKENDS: dict[str, Callable[..., Sandbox]] = {"oci": _oci, "microvm": _microvm}


def build_sandbox(name: str, **opts: Any) -> Sandbox:
    """The backend called ``name``, built with ``opts`` (e.g. ``runtime="runsc"`` for ``oci``)."""
    try:
        factory = BACKENDS[name]
    except KeyError:
        raise ConfigError(
            f"unknown sandbox backend {name!r}", hint=f"use one of {', '.join(sorted(BACKENDS))}"
        ) from None
    return factory(**opts)
