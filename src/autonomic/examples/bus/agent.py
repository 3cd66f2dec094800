"""Two agents talking over the event bus, offline: a code analyzer and a security auditor.

The **code analyzer** scans a file (``scan_code``: a made-up, deterministic scan keyed by the
path) and, when it finds something, emits ``com.acme.audit.requested`` with the findings
(``emit_event``, which it has because it ``emits`` that type); it then answers at once: it does
not wait for the audit. The **security auditor** ``handles`` that type: a worker on the bus starts
one auditor run per event, the event's data as its task, in the analyzer's conversation (its
correlation id). The auditor rates each finding (``rate_finding``) and answers with a report.

Both "models" are deterministic functions of the conversation (``function:code-analyzer``,
``function:security-auditor``), so the demo runs offline and a resumed run decides the same way.
``autonomic demo --scenario bus`` runs it on the embedded bus.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from typing import Any

from autonomic.adapters.model.scripted import FunctionModel
from autonomic.core.canonical import canonical_json
from autonomic.core.event_types import EventType, EventTypes
from autonomic.core.messages import Message, ModelResponse, Role, ToolCall, ToolSpec
from autonomic.engine.agent import Agent
from autonomic.errors import InvalidInput
from autonomic.ports.model import Model
from autonomic.tools.contract import tool

AUDIT_REQUESTED = EventType(
    "com.acme.audit.requested",
    {
        "type": "object",
        "properties": {
            "path": {"type": "string", "minLength": 1},
            "findings": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "rule": {"type": "string"},
                        "line": {"type": "integer", "minimum": 1},
                    },
                    "required": ["rule", "line"],
                },
                "minItems": 1,
            },
        },
        "required": ["path", "findings"],
    },
    "the code analyzer found something a security auditor should look at",
)

RULES = ("sql-injection", "hardcoded-secret", "weak-hash", "shell-injection", "open-redirect")
SEVERITY = {
    "sql-injection": "high",
    "hardcoded-secret": "high",
    "shell-injection": "high",
    "weak-hash": "medium",
    "open-redirect": "low",
}
DEMO_FILES = ("src/payments/api.py", "src/accounts/login.py")


def declare_types(types: EventTypes | None = None) -> EventTypes:
    """Declare the demo's event type (in the process's registry unless one is given)."""
    registry = types or EventTypes.default()
    registry.add(AUDIT_REQUESTED)
    return registry


@tool(idempotent=True)
def scan_code(path: str) -> dict[str, Any]:
    """Scan a source file for risky patterns (made up from the path's hash: stable per path)."""
    if not path or len(path) > 300:
        raise InvalidInput("path must be a file path of at most 300 characters")
    digest = hashlib.sha256(path.encode()).digest()
    count = 1 + digest[0] % 3
    findings = [
        {"rule": RULES[digest[1 + i] % len(RULES)], "line": 1 + digest[5 + i] % 400}
        for i in range(count)
    ]
    return {"path": path, "findings": findings}


@tool(idempotent=True)
def rate_finding(rule: str, line: int) -> dict[str, Any]:
    """The severity of a finding and what to do about it."""
    if rule not in SEVERITY:
        raise InvalidInput(f"unknown rule {rule!r}; known: {', '.join(RULES)}")
    severity = SEVERITY[rule]
    action = "block the release" if severity == "high" else "fix in the next sprint"
    return {"rule": rule, "line": line, "severity": severity, "action": action}


def code_analyzer() -> Agent:
    return Agent(
        name="code-analyzer",
        instructions="Scan the file you are given with scan_code. If it finds anything, emit "
        "com.acme.audit.requested with the path and the findings, then say so.",
        tools=(scan_code,),
        model="function:code-analyzer",
        max_turns=6,
        emits=[AUDIT_REQUESTED.name],
        read_only=frozenset({"scan_code"}),
    )


def security_auditor() -> Agent:
    return Agent(
        name="security-auditor",
        instructions="You get the findings of a code scan. Rate each with rate_finding, then "
        "answer with a short report: the worst severity first.",
        tools=(rate_finding,),
        model="function:security-auditor",
        max_turns=12,
        handles=[AUDIT_REQUESTED.name],
        read_only=frozenset({"rate_finding"}),
    )


def agents() -> list[Agent]:
    """Both agents (``--agent autonomic.examples.bus.agent:agents``); declares the event type."""
    declare_types()
    return [code_analyzer(), security_auditor()]


# -- the deterministic "models" ----------------------------------------------------------------


def _task(messages: Sequence[Message]) -> str:
    return next((m.content or "" for m in messages if m.role is Role.USER), "")


def _results(messages: Sequence[Message]) -> list[Any]:
    out: list[Any] = []
    for m in messages:
        if m.role is Role.TOOL and m.content:
            try:
                out.append(json.loads(m.content))
            except ValueError:
                out.append(m.content)
    return out


def _call(name: str, arguments: dict[str, Any], n: int, model: str) -> ModelResponse:
    return ModelResponse(
        content=None,
        tool_calls=(ToolCall(f"call_{n}_{name}", name, canonical_json(arguments)),),
        model=model,
    )


def analyzer_policy(messages: Sequence[Message], tools: Sequence[ToolSpec]) -> ModelResponse:
    model = "function:code-analyzer"
    task = _task(messages)
    path = task.strip().strip('"')
    results = _results(messages)
    if not results:
        return _call("scan_code", {"path": path}, 1, model)
    scan = results[0] if isinstance(results[0], dict) else {}
    findings = scan.get("findings") or []
    if len(results) == 1 and findings:
        data = {"path": scan.get("path", path), "findings": findings}
        return _call("emit_event", {"type": AUDIT_REQUESTED.name, "data": data}, 2, model)
    if not findings:
        return ModelResponse(content=f"{path}: nothing found", model=model)
    return ModelResponse(
        content=f"{path}: {len(findings)} finding(s); audit requested from the security auditor",
        model=model,
    )


def auditor_policy(messages: Sequence[Message], tools: Sequence[ToolSpec]) -> ModelResponse:
    model = "function:security-auditor"
    try:
        request = json.loads(_task(messages))
    except ValueError:
        return ModelResponse(content="the audit request is not JSON", model=model)
    findings = request.get("findings", []) if isinstance(request, dict) else []
    rated = [r for r in _results(messages) if isinstance(r, dict) and "severity" in r]
    if len(rated) < len(findings):
        f = findings[len(rated)]
        return _call("rate_finding", {"rule": f["rule"], "line": f["line"]}, len(rated) + 1, model)
    order = {"high": 0, "medium": 1, "low": 2}
    rated.sort(key=lambda r: order.get(r["severity"], 3))
    lines = [f"{r['severity']}: {r['rule']} at line {r['line']} - {r['action']}" for r in rated]
    return ModelResponse(
        content=f"audit of {request.get('path')}: " + "; ".join(lines), model=model
    )


FUNCTION_MODELS: dict[str, Callable[[], Model]] = {
    "code-analyzer": lambda: FunctionModel(analyzer_policy, name="function:code-analyzer"),
    "security-auditor": lambda: FunctionModel(auditor_policy, name="function:security-auditor"),
}
"""The deterministic models this example brings; the composition root registers them."""
