"""An agent's version when its author names none: a short hash of what decides its behaviour.

A run pins the version of the agent it started with, and only a worker that has that version
drives it. When the author gives no explicit ``version``, the version is the digest of the
agent's instructions, its tools (name and version of each), and its policy (workflow, gates,
budget, turn limit, read-only and expected tools, planning, the event types it handles and
emits): change any of them and it is another version, so a run started before the change is
never driven by the changed agent by accident.

What is *not* in it: where a policy was read from (paths, line numbers: the same policy in
another checkout is the same version), the model spec (the run pins it by itself), and the
input check (it validates, it does not act). Objects are described by their public fields,
never by ``repr`` (which holds memory addresses and differs between processes).
"""

from __future__ import annotations

import ast
import dataclasses
import enum
import hashlib
import re
from collections.abc import Mapping
from typing import Any

from autonomic.core.canonical import canonical_json

VERSION_LENGTH = 12
"""Hex digits of a computed version: short enough to read, long enough never to collide."""

_LOCATIONS = frozenset({"path", "source", "line", "lines", "tool_lines"})
"""Field names that say where a definition came from, not what it is."""
_DEPTH = 8


def describe(value: Any, depth: int = 0) -> Any:
    """``value`` as plain JSON data that is the same in every process for the same definition."""
    if depth > _DEPTH:
        return type(value).__qualname__
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, enum.Enum):
        return str(value.value)
    if isinstance(value, Mapping):
        return {str(k): describe(v, depth + 1) for k, v in value.items()}
    if isinstance(value, set | frozenset):
        return sorted((describe(v, depth + 1) for v in value), key=canonical_json)
    if isinstance(value, list | tuple):
        return [describe(v, depth + 1) for v in value]
    if isinstance(value, re.Pattern):
        return value.pattern
    if isinstance(value, ast.AST):
        return ast.dump(value)
    fingerprint = getattr(value, "fingerprint", None)
    if callable(fingerprint):
        return describe(fingerprint(), depth + 1)
    if callable(value) and hasattr(value, "__qualname__"):
        return f"{getattr(value, '__module__', '?')}.{value.__qualname__}"
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    elif hasattr(value, "__dict__"):
        fields = dict(vars(value))
    else:
        return type(value).__qualname__
    kept = {
        k: describe(v, depth + 1)
        for k, v in sorted(fields.items())
        if not k.startswith("_") and k not in _LOCATIONS
    }
    return {"type": type(value).__qualname__, **kept}


def agent_fingerprint(agent: Any) -> dict[str, Any]:
    """What an agent's computed version is the digest of (``agent``: an ``Agent``, typed
    loosely so that this module does not import the one that imports it)."""
    return {
        "instructions": agent.instructions,
        "tools": sorted(t.ref for t in agent.tools),
        "max_turns": agent.max_turns,
        "workflow": agent.workflow.pin()["digest"] if agent.workflow is not None else None,
        "gates": [describe(g) for g in agent.gates],
        "budget": describe(agent.budget),
        "read_only": sorted(agent.read_only),
        "expected_actions": (
            sorted(agent.expected_actions) if agent.expected_actions is not None else None
        ),
        "planning": (
            {k: v for k, v in agent.planning.pin("").items() if k != "model"}
            if agent.planning is not None
            else None
        ),
        "handles": list(agent.handles),
        "emits": list(agent.emits),
        # only when set, so the versions of agents that do not coordinate stay what they were
        **(
            {"coordination": describe(agent.coordination)}
            if getattr(agent, "coordination", None) is not None
            else {}
        ),
    }


def computed_version(agent: Any) -> str:
    """The version of an agent that names none: ``VERSION_LENGTH`` hex digits."""
    text = canonical_json(agent_fingerprint(agent))
    return hashlib.sha256(text.encode()).hexdigest()[:VERSION_LENGTH]
