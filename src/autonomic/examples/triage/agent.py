"""The support-triage agent: the plan cache and the model split, offline.

Customer e-mails come in a few kinds ("where is my order", "please cancel my order") with other
values each time. The agent plans before it acts: the planner - a small model, here the
deterministic ``function:triage-planner`` - sees only the task's *pattern* and answers with steps
naming tools; the actor - the large model, ``function:triage`` - reads the plan from its system
prompt and follows it. The second e-mail of a kind reuses the first one's plan from the cache and
costs no planning call. Both "models" decide from the conversation alone, so a resumed run decides
the same way. With a gateway the same agent splits across providers:
``Agent(model="gateway:providers.yaml#large", planning=Planning(model="gateway:providers.yaml#small"))``.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Sequence
from typing import Any

from autonomic.adapters.model.scripted import FunctionModel
from autonomic.core.canonical import canonical_json
from autonomic.core.messages import Message, ModelResponse, Role, ToolCall, ToolSpec
from autonomic.engine.agent import Agent
from autonomic.engine.planning import Planning
from autonomic.errors import InvalidInput
from autonomic.ports.model import Model
from autonomic.tools.contract import tool

INSTRUCTIONS = """You answer customer e-mails about orders. Look the order up before you say
anything about it, check the cancellation policy before promising a cancellation, and draft the
reply with draft_reply; then answer with the drafted text."""

DEMO_EMAILS = (
    "Where is my order 48213? I ordered it on 2026-11-02. - alice@example.com",
    "Where is my order 99120? I ordered it on 2026-10-30. - bob@example.org",
    "Please cancel order 5505, I changed my mind. - carol@example.net",
    "Please cancel order 70002, I changed my mind. - dave@example.com",
)
"""``autonomic demo --scenario planning``: two kinds of e-mail, two of each."""

TOOLS_IN_ORDER = ("order_status", "cancellation_policy", "draft_reply")
DEFAULT_PLAN = ("Look up the order with order_status", "Draft the reply with draft_reply")


@tool(idempotent=True)
def order_status(order_id: str) -> dict[str, Any]:
    """Where an order is: status, carrier and days in transit (a read; the demo's shop is a hash
    of the id, so every order has a stable, made-up history)."""
    if not order_id.isdigit() or len(order_id) > 12:
        raise InvalidInput(f"order_id must be the order's digits, got {order_id!r}")
    digest = hashlib.sha256(order_id.encode()).digest()
    status = ("processing", "shipped", "delivered")[digest[0] % 3]
    return {
        "order_id": order_id,
        "status": status,
        "carrier": ("DHL", "UPS", "PostNL")[digest[1] % 3],
        "days_in_transit": digest[2] % 6 if status != "processing" else 0,
    }


@tool(idempotent=True)
def cancellation_policy(status: str) -> dict[str, Any]:
    """Whether an order in ``status`` can still be cancelled, and why."""
    if status not in ("processing", "shipped", "delivered"):
        raise InvalidInput(f"unknown order status {status!r}")
    if status == "processing":
        return {"cancellable": True, "reason": "it has not left the warehouse"}
    return {"cancellable": False, "reason": f"it is {status}; a return is possible instead"}


@tool(idempotent=True)
def draft_reply(to: str, body: str) -> dict[str, Any]:
    """Save a reply draft for a human to send (idempotent: the same draft twice is one draft)."""
    if "@" not in to:
        raise InvalidInput(f"to must be an e-mail address, got {to!r}")
    draft = hashlib.sha256(f"{to}\x00{body}".encode()).hexdigest()[:12]
    return {"draft_id": f"draft-{draft}", "to": to, "body": body}


def triage_agent() -> Agent:
    """The agent: plans with the small model, caches plans for ten minutes, acts with the large."""
    return Agent(
        name="triage",
        instructions=INSTRUCTIONS,
        tools=(order_status, cancellation_policy, draft_reply),
        model="function:triage",
        read_only=frozenset({"order_status", "cancellation_policy"}),
        max_turns=8,
        planning=Planning(model="function:triage-planner", cache_ttl=600.0, max_steps=6),
    )


# -- the two deterministic "models" ------------------------------------------------------------


def plan_policy(messages: Sequence[Message], tools: Sequence[ToolSpec]) -> ModelResponse:
    """The small model: a plan for the task pattern (the user message)."""
    pattern = next((m.content or "" for m in messages if m.role is Role.USER), "").lower()
    if "cancel" in pattern:
        steps = [
            "Look up order <n> with order_status",
            "Check with cancellation_policy whether an order in that status can be cancelled",
            "Draft the reply to the customer with draft_reply: cancelled, or why not",
            "Answer with the drafted reply",
        ]
    elif "where" in pattern or "status" in pattern:
        steps = [
            "Look up order <n> with order_status",
            "Draft the reply to the customer with draft_reply: status, carrier, days in transit",
            "Answer with the drafted reply",
        ]
    else:
        steps = [*DEFAULT_PLAN, "Answer with the drafted reply"]
    return ModelResponse(content=json.dumps({"steps": steps}), model="function:triage-planner")


def act_policy(messages: Sequence[Message], tools: Sequence[ToolSpec]) -> ModelResponse:
    """The large model: take the plan's tools in order, each once, then answer with the draft."""
    task = next((m.content or "" for m in messages if m.role is Role.USER), "")
    done = _results(messages)
    for name in _planned_tools(messages):
        if name in done:
            continue
        arguments = _arguments(name, task, done)
        if arguments is None:
            continue
        call_id = f"call_{len(done) + 1}_{name}"
        return ModelResponse(
            content=None,
            tool_calls=(ToolCall(call_id, name, canonical_json(arguments)),),
            model="function:triage",
        )
    draft = done.get("draft_reply")
    answer = draft.get("body") if isinstance(draft, dict) else "I could not draft a reply."
    return ModelResponse(content=str(answer), model="function:triage")


def _planned_tools(messages: Sequence[Message]) -> list[str]:
    """The tools the plan in the system prompt names, in plan order (the default plan without)."""
    system = (messages[0].content or "") if messages and messages[0].role is Role.SYSTEM else ""
    _, _, plan = system.partition("\nPlan (")
    steps = re.findall(r"^\d+\. (.+)$", plan, re.MULTILINE) if plan else list(DEFAULT_PLAN)
    order: list[str] = []
    for step in steps:
        order.extend(n for n in TOOLS_IN_ORDER if n in step and n not in order)
    return order


def _results(messages: Sequence[Message]) -> dict[str, Any]:
    names: dict[str, str] = {}
    done: dict[str, Any] = {}
    for m in messages:
        if m.role is Role.ASSISTANT:
            names.update({c.id: c.name for c in m.tool_calls})
        elif m.role is Role.TOOL and m.tool_call_id in names:
            try:
                done[names[m.tool_call_id]] = json.loads(m.content or "null")
            except json.JSONDecodeError:
                done[names[m.tool_call_id]] = m.content
    return done


def _arguments(name: str, task: str, done: dict[str, Any]) -> dict[str, Any] | None:
    order = re.search(r"order\D{0,12}(\d{1,12})", task, re.IGNORECASE)
    email = re.search(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+", task)
    status = done.get("order_status") if isinstance(done.get("order_status"), dict) else None
    if name == "order_status":
        return {"order_id": order.group(1)} if order else None
    if name == "cancellation_policy":
        return {"status": status["status"]} if status else None
    if name == "draft_reply":
        return {"to": email.group(0) if email else "customer@example.com", "body": _body(done)}
    return None


def _body(done: dict[str, Any]) -> str:
    status = done.get("order_status")
    if not isinstance(status, dict):
        return "Thank you for your message; we are looking into your order."
    text = f"Your order {status['order_id']} is {status['status']}"
    if status.get("status") != "processing":
        text += f" with {status['carrier']}, {status['days_in_transit']} day(s) in transit"
    policy = done.get("cancellation_policy")
    if isinstance(policy, dict):
        text += (
            ". We have cancelled it"
            if policy.get("cancellable")
            else f". It cannot be cancelled any more: {policy.get('reason')}"
        )
    return text + "."


FUNCTION_MODELS: dict[str, Callable[[], Model]] = {
    "triage-planner": lambda: FunctionModel(plan_policy, name="function:triage-planner"),
    "triage": lambda: FunctionModel(act_policy, name="function:triage"),
}
"""The deterministic models this example brings (a small planner, a large actor); the
composition root registers them when it loads the example."""
