"""Risk classification: a policy maps each proposed action to LOW, MEDIUM or HIGH.

LOW executes, MEDIUM waits for a human approval, HIGH is blocked pending review. The policy is a
list of YAML rules (plus an optional Python classifier); every rule that matches the action votes
and the highest risk wins, so adding a rule can only make the policy stricter. Rules match on the
tool's contract (name, data classification, reversibility, idempotency, cost), the tenant, and an
expression over the arguments and the run so far (see ``autonomic.governance.policy.expressions``)::

    default_risk: low
    approval: {group: controllers, expires_after: 24h, escalate_after: 2h,
               escalation_group: finance-managers}
    rules:
      - name: large-adjustment
        tool: post_adjustment
        when: abs(args.amount_cents) > 100000
        risk: medium
        reason: adjustments above 1,000.00 need a controller's approval
      - name: irreversible
        reversible: false
        risk: high
        reason: irreversible actions are blocked pending review
    tools:                      # operational overrides, see autonomic.governance.policy.tool_policy
      post_adjustment: {timeout: 10, retry: {attempts: 3}}

A rule whose expression cannot be evaluated for an action (comparing text with a number, say)
counts as matched: the policy fails closed.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from autonomic.errors import InvalidInput, PolicyFileError
from autonomic.governance.action import ProposedAction
from autonomic.governance.code_gate import CodePolicy
from autonomic.governance.decision import ApprovalRule, Decision, Risk
from autonomic.governance.policy.expressions import Expression
from autonomic.governance.policy.source import Node, Source, line_of, load_yaml, read_file
from autonomic.tools.operational import DataClass


@dataclass(frozen=True)
class RiskRule:
    """One rule: conditions (all must hold; an absent one always holds) and the risk it gives."""

    name: str
    risk: Risk
    reason: str = ""
    tools: frozenset[str] | None = None
    data_classes: frozenset[str] | None = None
    reversible: bool | None = None
    idempotent: bool | None = None
    tenants: frozenset[str] | None = None
    min_cost: float | None = None
    when: Expression | None = None
    approval: dict[str, Any] = field(default_factory=dict)
    """Overrides of the policy's approval settings for actions this rule makes MEDIUM."""
    line: int | None = None

    def matches(self, action: ProposedAction) -> bool:
        _, _, tool = action.in_run()
        if self.tools is not None and tool.name not in self.tools and tool.ref not in self.tools:
            return False
        if self.data_classes is not None and tool.data_class.value not in self.data_classes:
            return False
        if self.reversible is not None and tool.reversible != self.reversible:
            return False
        if self.idempotent is not None and tool.idempotent != self.idempotent:
            return False
        if self.tenants is not None and action.tenant not in self.tenants:
            return False
        if self.min_cost is not None and tool.cost_estimate < self.min_cost:
            return False
        if self.when is not None:
            try:
                return bool(self.when(action.context()))
            except InvalidInput:
                return True  # fail closed
        return True


Classifier = Callable[[ProposedAction], "tuple[Risk, str] | None"]
"""A Python classifier: ``(risk, explanation)`` for an action, or ``None`` for no opinion."""


@dataclass(frozen=True)
class RiskPolicy:
    """Rules, a default, approval settings, and an optional Python classifier."""

    rules: tuple[RiskRule, ...] = ()
    default: Risk = Risk.LOW
    approval: ApprovalRule = field(default_factory=ApprovalRule)
    classifier: Classifier | None = None
    source: str = "<python>"

    def with_classifier(self, classifier: Classifier) -> RiskPolicy:
        return replace(self, classifier=classifier)

    def classify(self, action: ProposedAction) -> tuple[Risk, str, dict[str, Any], ApprovalRule]:
        """The risk of ``action``, why, the evidence, and how to ask for approval."""
        matched = [r for r in self.rules if r.matches(action)]
        risk, reason, approval = (
            self.default,
            f"no rule matched (default {self.default.name})",
            self.approval,
        )
        winner: RiskRule | None = None
        for rule in matched:
            if winner is None or rule.risk > winner.risk:
                winner = rule
        if winner is not None:
            risk = winner.risk
            reason = winner.reason or f"rule {winner.name} matched"
            approval = _merge(self.approval, winner.approval)
        _, _, tool = action.in_run()
        evidence: dict[str, Any] = {
            "policy": self.source,
            "matched_rules": [r.name for r in matched],
            "data_class": tool.data_class.value,
            "reversible": tool.reversible,
            "cost_estimate": tool.cost_estimate,
        }
        if self.classifier is not None:
            opinion = self.classifier(action)
            if opinion is not None:
                evidence["classifier"] = {"risk": opinion[0].name, "explanation": opinion[1]}
                if opinion[0] > risk:
                    risk, reason, approval = opinion[0], opinion[1], self.approval
        return risk, reason, evidence, approval

    def gate(self) -> RiskGate:
        return RiskGate(self)

    @staticmethod
    def from_file(path: str | Path) -> RiskPolicy:
        return load_policy(path).risk


class RiskGate:
    """The risk policy as an action gate: LOW allows, MEDIUM needs approval, HIGH blocks."""

    name = "risk"

    def __init__(self, policy: RiskPolicy) -> None:
        self.policy = policy

    async def check(self, action: ProposedAction) -> Decision:
        risk, reason, evidence, approval = self.policy.classify(action)
        return Decision(
            verdict=risk.verdict,
            explanation=reason,
            gate=self.name,
            risk=risk,
            evidence=evidence,
            approval=approval if risk is Risk.MEDIUM else None,
        )


def _merge(base: ApprovalRule, overrides: dict[str, Any]) -> ApprovalRule:
    if not overrides:
        return base
    return ApprovalRule.from_dict(base.to_dict() | overrides)


# -- the file format ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Policy:
    """A policy file: risk rules and per-tool operational overrides."""

    risk: RiskPolicy
    tools: dict[str, dict[str, Any]]
    tool_lines: dict[str, int | None]
    path: str
    code_gate: CodePolicy | None = None
    """The ``code_gate:`` section (``governance.policy.code_policy``), if the file has one."""


_TOP = {"version", "default_risk", "approval", "rules", "tools", "code_gate"}
_RULE = {
    "name",
    "risk",
    "reason",
    "tool",
    "data_class",
    "reversible",
    "idempotent",
    "tenant",
    "min_cost",
    "when",
    "quorum",
    "group",
    "approvers",
    "expires_after",
    "escalate_after",
    "escalation_group",
    "escalation_approvers",
}
_APPROVAL = {
    "group",
    "approvers",
    "quorum",
    "expires_after",
    "escalate_after",
    "escalation_group",
    "escalation_approvers",
}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_UNITS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def load_policy(path: str | Path) -> Policy:
    """Read a policy file; any mistake raises ``PolicyFileError`` with file, line and fix."""
    name, data = read_file(path)
    return parse_policy(data, name)


def parse_policy_text(text: str, path: str = "<policy>") -> Policy:
    return parse_policy(load_yaml(text, path), path)


def parse_policy(data: Any, path: str) -> Policy:
    from autonomic.governance.policy.code_policy import parse_code_gate
    from autonomic.governance.policy.tool_policy import parse_tool_overrides

    src = Source(path)
    if data is None:
        data = Node()
    top = src.mapping(data, None, None, "a policy file")
    src.check_keys(top, _TOP, "the policy file")
    if top.get("version", 1) != 1:
        raise src.error(
            top, "version", f"unknown policy version {top['version']!r}", "write version: 1"
        )
    default = _risk(src, top, "default_risk", top.get("default_risk", "low"))
    approval = ApprovalRule()
    if "approval" in top:
        node = src.mapping(top["approval"], top, "approval", "approval")
        src.check_keys(node, _APPROVAL, "approval")
        approval = ApprovalRule.from_dict(_approval_fields(src, node))
    rules_data = top.get("rules", [])
    if not isinstance(rules_data, list):
        raise src.error(
            top, "rules", "rules must be a list of rules", "start each rule with '- name: ...'"
        )
    rules = tuple(_rule(src, item, i, top) for i, item in enumerate(rules_data, start=1))
    seen: set[str] = set()
    for rule in rules:
        if rule.name in seen:
            raise PolicyFileError(
                path,
                rule.line,
                f"two rules are named {rule.name!r}",
                hint="give each rule its own name",
            )
        seen.add(rule.name)
    tools, lines = parse_tool_overrides(src, top.get("tools"), top)
    return Policy(
        risk=RiskPolicy(rules=rules, default=default, approval=approval, source=path),
        tools=tools,
        tool_lines=lines,
        path=path,
        code_gate=parse_code_gate(src, top.get("code_gate"), top),
    )


def _rule(src: Source, item: Any, index: int, parent: Node) -> RiskRule:
    node = src.mapping(item, parent, "rules", f"rule {index}")
    src.check_keys(node, _RULE, f"rule {index}")
    if "risk" not in node:
        raise src.error(node, None, f"rule {index} has no risk", "add risk: low, medium or high")
    when = None
    if "when" in node:
        try:
            when = Expression(str(node["when"]))
        except InvalidInput as exc:
            raise src.error(node, "when", exc.message, exc.hint) from None
    data_classes = _names(src, node, "data_class")
    if data_classes is not None:
        for value in data_classes:
            if value not in {d.value for d in DataClass}:
                raise src.error(
                    node,
                    "data_class",
                    f"unknown data class {value!r}",
                    "use " + ", ".join(d.value for d in DataClass),
                )
    for key in ("reversible", "idempotent"):
        if key in node and not isinstance(node[key], bool):
            raise src.error(node, key, f"{key} must be true or false")
    min_cost = node.get("min_cost")
    if min_cost is not None and (
        not isinstance(min_cost, int | float) or isinstance(min_cost, bool)
    ):
        raise src.error(node, "min_cost", "min_cost must be a number")
    approval = _approval_fields(src, node)
    return RiskRule(
        name=str(node.get("name") or f"rule-{index}"),
        risk=_risk(src, node, "risk", node["risk"]),
        reason=str(node.get("reason", "")),
        tools=_names(src, node, "tool"),
        data_classes=data_classes,
        reversible=node.get("reversible"),
        idempotent=node.get("idempotent"),
        tenants=_names(src, node, "tenant"),
        min_cost=float(min_cost) if min_cost is not None else None,
        when=when,
        approval=approval,
        line=line_of(node),
    )


def _approval_fields(src: Source, node: Node) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for key in _APPROVAL:
        if key not in node:
            continue
        value = node[key]
        if key in ("expires_after", "escalate_after"):
            fields[key] = duration(src, node, key, value)
        elif key == "quorum":
            if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 10:
                raise src.error(
                    node, key, f"quorum must be a whole number from 1 to 10, got {value!r}"
                )
            fields[key] = value
        elif key in ("approvers", "escalation_approvers"):
            names = _names(src, node, key)
            fields[key] = sorted(names) if names is not None else None
        else:
            fields[key] = str(value)
    return fields


def duration(src: Source, node: Node, key: str, value: Any) -> float:
    """Seconds from ``90``, ``"30s"``, ``"15m"``, ``"24h"`` or ``"2d"``."""
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        return float(value)
    match = _DURATION.match(str(value))
    if not match or float(match.group(1)) <= 0:
        raise src.error(
            node,
            key,
            f"{key} must be a positive duration, got {value!r}",
            "write e.g. 90, 30s, 15m, 24h or 2d",
        )
    return float(match.group(1)) * _UNITS[match.group(2)]


def _risk(src: Source, node: Node, key: str, value: Any) -> Risk:
    try:
        return Risk.parse(str(value))
    except ValueError:
        raise src.error(node, key, f"unknown risk {value!r}", "use low, medium or high") from None


def _names(src: Source, node: Node, key: str) -> frozenset[str] | None:
    if key not in node:
        return None
    value = node[key]
    if isinstance(value, str):
        return frozenset({value})
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return frozenset(value)
    raise src.error(node, key, f"{key} must be a name or a list of names")
