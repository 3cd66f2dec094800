"""autonomic: a self-hostable runtime that runs AI agents as durable, governed, observable processes.

The public API is what ``__all__`` lists; everything else may change between versions.

The names are imported on first use (PEP 562 ``__getattr__``), not when ``autonomic`` is: every
command of the CLI imports this package, and ``autonomic --help`` must not pay for the engine,
jsonschema and the gateway it never touches. ``from autonomic import Engine`` works as before.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from autonomic import _moved

if TYPE_CHECKING:
    from autonomic.adapters.model.scripted import FunctionModel, ScriptedModel
    from autonomic.bootstrap import build_model, build_store
    from autonomic.core.journal import Entry, EntryKind
    from autonomic.core.messages import Message, ModelResponse, Role, ToolCall, ToolSpec, Usage
    from autonomic.core.run import Run, RunStatus
    from autonomic.engine.agent import Agent, AgentRegistry
    from autonomic.engine.executor import Engine
    from autonomic.engine.planning import Planning
    from autonomic.engine.worker import Worker
    from autonomic.errors import (
        AutonomicError,
        ConfigError,
        IllegalTransition,
        InvalidInput,
        LeaseLost,
        ModelError,
        NotFound,
        RunInputError,
        StaleVersion,
        StoreUnavailable,
        ToolArgumentsInvalid,
        ToolError,
        UserError,
    )
    from autonomic.governance.runaway.budget import Budget
    from autonomic.governance.runaway.gate import Runaway
    from autonomic.ports.model import Model
    from autonomic.ports.store import Store
    from autonomic.tools.contract import Tool, ToolContext, tool

_moved.install()

__version__ = "0.1.0"

_WHERE: dict[str, str] = {
    "Agent": "autonomic.engine.agent",
    "AgentRegistry": "autonomic.engine.agent",
    "AutonomicError": "autonomic.errors",
    "Budget": "autonomic.governance.runaway.budget",
    "ConfigError": "autonomic.errors",
    "Engine": "autonomic.engine.executor",
    "Entry": "autonomic.core.journal",
    "EntryKind": "autonomic.core.journal",
    "FunctionModel": "autonomic.adapters.model.scripted",
    "IllegalTransition": "autonomic.errors",
    "InvalidInput": "autonomic.errors",
    "LeaseLost": "autonomic.errors",
    "Message": "autonomic.core.messages",
    "Model": "autonomic.ports.model",
    "ModelError": "autonomic.errors",
    "ModelResponse": "autonomic.core.messages",
    "NotFound": "autonomic.errors",
    "Planning": "autonomic.engine.planning",
    "Role": "autonomic.core.messages",
    "RunInputError": "autonomic.errors",
    "Run": "autonomic.core.run",
    "RunStatus": "autonomic.core.run",
    "Runaway": "autonomic.governance.runaway.gate",
    "ScriptedModel": "autonomic.adapters.model.scripted",
    "StaleVersion": "autonomic.errors",
    "Store": "autonomic.ports.store",
    "StoreUnavailable": "autonomic.errors",
    "Tool": "autonomic.tools.contract",
    "ToolArgumentsInvalid": "autonomic.errors",
    "ToolCall": "autonomic.core.messages",
    "ToolContext": "autonomic.tools.contract",
    "ToolError": "autonomic.errors",
    "ToolSpec": "autonomic.core.messages",
    "Usage": "autonomic.core.messages",
    "UserError": "autonomic.errors",
    "Worker": "autonomic.engine.worker",
    "build_model": "autonomic.bootstrap",
    "build_store": "autonomic.bootstrap",
    "tool": "autonomic.tools.contract",
}
"""Each public name -> the module that defines it (imported the first time the name is asked for)."""


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'autonomic' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # asked once: later lookups are plain attribute reads
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_WHERE))


__all__ = [
    "Agent",
    "AgentRegistry",
    "AutonomicError",
    "Budget",
    "ConfigError",
    "Engine",
    "Entry",
    "EntryKind",
    "FunctionModel",
    "IllegalTransition",
    "InvalidInput",
    "LeaseLost",
    "Message",
    "Model",
    "ModelError",
    "ModelResponse",
    "NotFound",
    "Planning",
    "Role",
    "Run",
    "RunInputError",
    "RunStatus",
    "Runaway",
    "ScriptedModel",
    "StaleVersion",
    "Store",
    "StoreUnavailable",
    "Tool",
    "ToolArgumentsInvalid",
    "ToolCall",
    "ToolContext",
    "ToolError",
    "ToolSpec",
    "Usage",
    "UserError",
    "Worker",
    "build_model",
    "build_store",
    "tool",
]
