"""autonomic: a self-hostable runtime that runs AI agents as durable, governed, observable processes.

The public API is what ``__all__`` lists; everything else may change between versions.
"""

from autonomic import _moved
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
