"""Tool operational policy in YAML: change a tool's timeout, retries, cost, classification... with
no code change, or declare a whole tool around a Python function.

In a policy file's ``tools:`` section (or a file of its own)::

    tools:
      post_adjustment:                 # an existing tool: override its operational metadata
        timeout: 10
        retry: {attempts: 3, backoff: 0.2}
        data_class: financial
        reversible: false
        cost_estimate: 0.02
        breaker: {failure_rate: 0.5, window: 20, min_calls: 5, open_seconds: 60}
      fx_rate:                         # a new tool declared in YAML around a typed function
        function: mypackage.rates:fx_rate
        version: "2"
        idempotent: true
        output_schema: {type: object, required: [rate]}

The contract's argument schema still comes from the function's type hints (or ``parameters:``).
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Any

from autonomic.errors import InvalidInput, PolicyFileError
from autonomic.governance.policy.source import Node, Source, line_of, read_file
from autonomic.tools.contract import Tool, tool
from autonomic.tools.operational import AuditLevel, BreakerThresholds, DataClass, RetryPolicy

_KEYS = {
    "timeout",
    "retry",
    "cost_estimate",
    "audit",
    "data_class",
    "idempotent",
    "reversible",
    "breaker",
    "output_schema",
    "function",
    "version",
    "description",
    "parameters",
    "effects",
    "trusted_output",
    "trusted_fields",
}


def parse_tool_overrides(
    src: Source, data: Any, parent: Node | None
) -> tuple[dict[str, dict[str, Any]], dict[str, int | None]]:
    """``{tool name: {field: value}}`` (values already typed) and the line of each tool."""
    if data is None:
        return {}, {}
    node = src.mapping(data, parent, "tools", "tools")
    found: dict[str, dict[str, Any]] = {}
    lines: dict[str, int | None] = {}
    for name, item in node.items():
        entry = src.mapping(item, node, name, f"tool {name}")
        src.check_keys(entry, _KEYS, f"tool {name}")
        found[name] = _fields(src, name, entry)
        lines[name] = line_of(node, name)
    return found, lines


def _fields(src: Source, name: str, node: Node) -> dict[str, Any]:
    out: dict[str, Any] = {}
    try:
        for key, value in node.items():
            if key == "retry":
                sub = src.mapping(value, node, key, "retry")
                src.check_keys(sub, {"attempts", "backoff", "max_backoff"}, "retry")
                out["retry"] = RetryPolicy(**{k: sub[k] for k in sub})
            elif key == "breaker":
                sub = src.mapping(value, node, key, "breaker")
                src.check_keys(
                    sub, {"failure_rate", "window", "min_calls", "open_seconds"}, "breaker"
                )
                out["breaker"] = BreakerThresholds(**{k: sub[k] for k in sub})
            elif key == "audit":
                out["audit"] = AuditLevel(str(value))
            elif key == "data_class":
                out["data_class"] = DataClass(str(value))
            elif key in ("effects", "trusted_fields"):
                if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                    raise src.error(node, key, f"{key} must be a list of names")
                out[key] = tuple(value)
            elif key in ("idempotent", "reversible", "trusted_output"):
                if not isinstance(value, bool):
                    raise src.error(node, key, f"{key} must be true or false")
                out[key] = value
            elif key in ("timeout", "cost_estimate"):
                if not isinstance(value, int | float) or isinstance(value, bool):
                    raise src.error(node, key, f"{key} must be a number")
                out[key] = float(value)
            elif key in ("output_schema", "parameters"):
                out[key] = src.mapping(value, node, key, key)
            else:
                out[key] = str(value)
    except (ValueError, TypeError, InvalidInput) as exc:
        raise src.error(node, key, f"tool {name}: bad {key}: {exc}", _HINTS.get(key)) from None
    return out


_HINTS = {
    "audit": "use none, basic or full",
    "data_class": "use public, internal, pii or financial",
    "retry": "write retry: {attempts: 3, backoff: 0.1}",
    "breaker": "write breaker: {failure_rate: 0.5, window: 20, min_calls: 5, open_seconds: 30}",
}


def apply_tool_policy(
    tools: Sequence[Tool],
    overrides: dict[str, dict[str, Any]],
    *,
    path: str = "<policy>",
    lines: dict[str, int | None] | None = None,
) -> list[Tool]:
    """``tools`` with the overrides applied, plus any tool declared with ``function:``."""
    lines = lines or {}
    by_name = {t.name: t for t in tools}
    result = list(tools)
    for name, fields in overrides.items():
        line = lines.get(name)
        try:
            if "function" in fields:
                result.append(_declare(name, fields))
                continue
            if name not in by_name:
                raise PolicyFileError(
                    path,
                    line,
                    f"policy for unknown tool {name!r}",
                    hint="known tools: "
                    + (", ".join(sorted(by_name)) or "none")
                    + "; or declare it with function: module:function",
                )
            current = by_name[name]
            changed = current.with_policy(**fields)
            result[result.index(current)] = changed
        except InvalidInput as exc:
            raise PolicyFileError(path, line, exc.message, hint=exc.hint) from None
    return result


def _declare(name: str, fields: dict[str, Any]) -> Tool:
    spec = str(fields.pop("function"))
    module_name, _, attribute = spec.partition(":")
    try:
        fn = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError, ValueError) as exc:
        raise InvalidInput(
            f"tool {name}: cannot import function {spec!r}: {exc}",
            hint="write function: package.module:function",
        ) from None
    if isinstance(fn, Tool):
        return fn.with_policy(name=name, **fields)
    description = fields.pop("description", None)
    declared = tool(name=name, **fields)(fn)
    return declared.with_policy(description=description) if description else declared


def load_tool_policy(path: str) -> tuple[dict[str, dict[str, Any]], dict[str, int | None]]:
    """The ``tools:`` section of a YAML file (a policy file or a file of tool declarations)."""
    name, data = read_file(path)
    src = Source(name)
    top = src.mapping(data, None, None, "a tool policy file")
    return parse_tool_overrides(src, top.get("tools"), top)
