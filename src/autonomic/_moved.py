"""Modules that moved in 0.2, importable from their old names for one more release.

The house was reshaped (one governance package, one sandbox wing, Redis in one place): code that
still imports ``autonomic.guards.budget`` or ``autonomic.policy.risk`` keeps working, gets the very
same module object as the new name (so ``isinstance`` and monkeypatching agree), and is told once,
by a ``DeprecationWarning``, where the module lives now. The table below is the whole shim; a test
imports every old name through it.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import sys
import warnings
from collections.abc import Sequence
from types import ModuleType
from typing import TYPE_CHECKING, cast

if TYPE_CHECKING:
    from importlib.abc import Loader

MOVED: dict[str, str] = {
    "autonomic.guards": "autonomic.governance.runaway",
    "autonomic.guards.action": "autonomic.governance.action",
    "autonomic.guards.budget": "autonomic.governance.runaway.budget",
    "autonomic.guards.delegation": "autonomic.governance.runaway.delegation",
    "autonomic.guards.guard": "autonomic.governance.runaway.guards",
    "autonomic.guards.injection": "autonomic.governance.injection",
    "autonomic.guards.loops": "autonomic.governance.runaway.loops",
    "autonomic.guards.normalise": "autonomic.governance.runaway.normalise",
    "autonomic.guards.provenance": "autonomic.governance.provenance",
    "autonomic.guards.state": "autonomic.governance.runaway.state",
    "autonomic.guards.taint": "autonomic.governance.runaway.taint",
    "autonomic.guards.tenant": "autonomic.governance.runaway.tenant",
    "autonomic.guards.verdict": "autonomic.governance.decision",
    "autonomic.policy": "autonomic.governance.policy",
    "autonomic.policy.expressions": "autonomic.governance.policy.expressions",
    "autonomic.policy.risk": "autonomic.governance.policy.risk",
    "autonomic.policy.source": "autonomic.governance.policy.source",
    "autonomic.policy.tool_policy": "autonomic.governance.policy.tool_policy",
    "autonomic.policy.workflow": "autonomic.governance.policy.workflow",
    "autonomic.engine.gates": "autonomic.governance.gate",
    "autonomic.engine.approvals": "autonomic.governance.approvals",
    "autonomic.engine.runaway": "autonomic.governance.runaway.gate",
    "autonomic.engine.circuits": "autonomic.governance.circuits",
    "autonomic.resilience": "autonomic.governance.breakers",
    "autonomic.resilience.breaker": "autonomic.governance.breakers",
    "autonomic.resilience.redis_breakers": "autonomic.adapters.redis.breakers",
    "autonomic.adapters.counters.redis": "autonomic.adapters.redis.counters",
    "autonomic.adapters.embedder.hashed": "autonomic.governance.runaway.hashed",
    "autonomic.sandbox": "autonomic.adapters.sandbox",
    "autonomic.sandbox.gate": "autonomic.governance.code_gate",
    "autonomic.sandbox.image": "autonomic.adapters.sandbox.image",
    "autonomic.sandbox.guest_runner": "autonomic.adapters.sandbox.guest_runner",
    "autonomic.sandbox.probes": "autonomic.testing.probes",
    "autonomic.sandbox.probe_host": "autonomic.testing.probe_host",
    "autonomic.tools.python_exec": "autonomic.toolbox.python_exec",
    "autonomic.gateway.context": "autonomic.ports.model",
}
"""Old module name -> where it lives now."""


class _Alias:
    """A loader (by its two methods: ``importlib.abc`` would import ``importlib.resources``,
    ``tempfile`` and ``shutil`` into every ``import autonomic``, ``autonomic --help`` included)."""

    def __init__(self, old: str, new: str) -> None:
        self.old = old
        self.new = new
        self._spec: importlib.machinery.ModuleSpec | None = None

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        warnings.warn(
            f"{self.old} moved to {self.new}; the old name goes away in the next release",
            DeprecationWarning,
            stacklevel=2,
        )
        module = importlib.import_module(self.new)
        self._spec = module.__spec__
        return module

    def exec_module(self, module: ModuleType) -> None:
        """The module was executed under its new name already; give it back its own spec (the
        import system just stamped the old name's on it)."""
        module.__spec__ = self._spec


class _MovedFinder:
    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        new = MOVED.get(fullname)
        if new is None:
            return None
        is_package = any(other.startswith(fullname + ".") for other in MOVED)
        return importlib.machinery.ModuleSpec(
            fullname, cast("Loader", _Alias(fullname, new)), is_package=is_package
        )


def install() -> None:
    """Answer imports of the old names (idempotent)."""
    if not any(isinstance(f, _MovedFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _MovedFinder())  # before the path finder: no second copy
