"""Sandbox backends by name: ``build_sandbox(name, **opts)`` and a ``doctor()`` for each.

A backend module is imported only when it is asked for, so a host without bubblewrap (or QEMU)
still imports this registry. ``BACKENDS`` is a plain dict so new backends are one entry each.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from autonomic.errors import ConfigError
from autonomic.ports.sandbox import Sandbox


@dataclass(frozen=True, slots=True)
class Backend:
    """How to build one backend and how to ask whether it works on this host."""

    factory: Callable[..., Sandbox]
    doctor: Callable[[], tuple[bool, str]]
    summary: str


def _namespace(**opts: Any) -> Sandbox:
    from autonomic.adapters.sandbox.namespace import NamespaceSandbox

    return NamespaceSandbox(**opts)


def _namespace_doctor() -> tuple[bool, str]:
    from autonomic.adapters.sandbox.namespace import doctor

    return doctor()


def _oci(**opts: Any) -> Sandbox:
    from autonomic.adapters.sandbox.oci import OciSandbox

    return OciSandbox(**opts)


def _runsc(**opts: Any) -> Sandbox:
    return _oci(runtime="runsc", **opts)


def _oci_doctor() -> tuple[bool, str]:
    from autonomic.adapters.sandbox.oci import doctor

    return doctor("runc")


def _runsc_doctor() -> tuple[bool, str]:
    from autonomic.adapters.sandbox.oci import doctor

    return doctor("runsc")


def _microvm(**opts: Any) -> Sandbox:
    from autonomic.adapters.sandbox.microvm import MicroVmSandbox

    return MicroVmSandbox(**opts)


def _microvm_doctor() -> tuple[bool, str]:
    from autonomic.adapters.sandbox.microvm import doctor

    return doctor()


BACKENDS: dict[str, Backend] = {
    "namespace": Backend(
        factory=_namespace,
        doctor=_namespace_doctor,
        summary="Linux namespaces via bubblewrap, seccomp, cgroup (the fast default)",
    ),
    "oci": Backend(
        factory=_oci,
        doctor=_oci_doctor,
        summary="an OCI container per execution under runc (cgroup limits, seccomp, no caps)",
    ),
    "oci-runsc": Backend(
        factory=_runsc,
        doctor=_runsc_doctor,
        summary="the OCI bundle under gVisor's runsc: a user-space kernel between code and host",
    ),
    "microvm": Backend(
        factory=_microvm,
        doctor=_microvm_doctor,
        summary="a QEMU microVM (Firecracker layout; KVM when it boots, emulation otherwise)",
    ),
}


def build_sandbox(name: str, **opts: Any) -> Sandbox:
    """The backend called ``name``, built with ``opts`` (e.g. ``pool_size=4``)."""
    backend = BACKENDS.get(name)
    if backend is None:
        raise ConfigError(
            f"unknown sandbox backend {name!r}",
            hint=f"choose one of: {', '.join(sorted(BACKENDS))} (AUTONOMIC_SANDBOX, --backend)",
        )
    return backend.factory(**opts)


def sandbox_from_env(environ: Mapping[str, str] | None = None) -> Sandbox:
    """The backend named by ``AUTONOMIC_SANDBOX`` (default ``namespace``).

    ``AUTONOMIC_SANDBOX_POOL`` sets the warm pool size where the backend has one;
    ``AUTONOMIC_SANDBOX_EGRESS_UPLINK`` names the network namespace egress allow-lists reach the
    world through (every backend).
    """
    env = os.environ if environ is None else environ
    name = env.get("AUTONOMIC_SANDBOX", "namespace").strip() or "namespace"
    opts: dict[str, Any] = {}
    pool = env.get("AUTONOMIC_SANDBOX_POOL", "").strip()
    if pool:
        if not pool.isdigit():
            raise ConfigError(
                f"AUTONOMIC_SANDBOX_POOL={pool!r} is not a number",
                hint="set it to how many sandboxes to keep warm, e.g. 4",
            )
        opts["pool_size"] = int(pool)
    uplink = env.get("AUTONOMIC_SANDBOX_EGRESS_UPLINK", "").strip()
    if uplink:
        opts["egress_uplink"] = uplink
    return build_sandbox(name, **opts)
