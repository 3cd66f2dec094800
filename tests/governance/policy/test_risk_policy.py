"""Risk policy files: rules, the Python classifier, and errors that name file, line and fix."""

import asyncio

import pytest

from autonomic.core.run import Lease, Run, RunStatus
from autonomic.core.state import RunState
from autonomic.errors import PolicyFileError
from autonomic.governance.action import ProposedAction
from autonomic.governance.decision import Risk, Verdict
from autonomic.governance.policy.expressions import Expression
from autonomic.governance.policy.risk import load_policy, parse_policy_text
from autonomic.tools.contract import tool

POLICY = """\
default_risk: low
approval:
  group: controllers
  expires_after: 2h
rules:
  - name: big
    tool: pay
    when: args.amount > 100
    risk: medium
    reason: big payments need approval
    quorum: 2
  - name: pii
    data_class: pii
    risk: medium
  - name: gone
    reversible: false
    risk: high
  - name: acme-only
    tenant: globex
    min_cost: 1
    risk: high
"""


@tool(idempotent=True)
def pay(to: str, amount: int) -> str:
    """x"""
    return to


lookup = tool(name="lookup", data_class="pii")(lambda person: person)
drop = tool(name="drop", reversible=False)(lambda table: table)


def _action(t, args, tenant="default"):
    run = Run(
        id="run_" + "0" * 32,
        agent="a",
        agent_version="1",
        model="m",
        status=RunStatus.RUNNING,
        version=1,
        lease=Lease(None, 0, 0),
        created_at=0,
        updated_at=0,
        tenant=tenant,
    )
    return ProposedAction.tool_call(run, RunState(run.id), t, args, call_id="call_1", step=5)


def _classify(policy, t, args, **kw):
    decision = asyncio.run(policy.gate().check(_action(t, args, **kw)))
    return decision


def test_rules_map_actions_to_low_medium_high_with_explanations():
    policy = parse_policy_text(POLICY).risk
    low = _classify(policy, pay, {"to": "a", "amount": 5})
    assert (low.verdict, low.risk) == (Verdict.ALLOW, Risk.LOW)
    assert "no rule matched" in low.explanation
    medium = _classify(policy, pay, {"to": "a", "amount": 500})
    assert (medium.verdict, medium.risk) == (Verdict.APPROVE, Risk.MEDIUM)
    assert medium.explanation == "big payments need approval"
    assert medium.approval.quorum == 2
    assert medium.approval.expires_after == 7200
    assert medium.evidence["matched_rules"] == ["big"]
    assert _classify(policy, lookup, {"person": "x"}).risk is Risk.MEDIUM
    high = _classify(policy, drop, {"table": "t"})
    assert (high.verdict, high.risk) == (Verdict.BLOCK, Risk.HIGH)


def test_the_highest_risk_wins_and_a_classifier_can_only_raise_it():
    policy = parse_policy_text(POLICY).risk.with_classifier(
        lambda a: (Risk.HIGH, "sanctioned payee") if a.arguments.get("to") == "evil" else None
    )
    assert _classify(policy, pay, {"to": "evil", "amount": 1}).risk is Risk.HIGH
    assert _classify(policy, pay, {"to": "ok", "amount": 500}).risk is Risk.MEDIUM
    lowering = parse_policy_text(POLICY).risk.with_classifier(lambda a: (Risk.LOW, "fine"))
    assert _classify(lowering, pay, {"to": "ok", "amount": 500}).risk is Risk.MEDIUM


def test_an_expression_that_cannot_be_evaluated_fails_closed():
    policy = parse_policy_text(POLICY).risk
    assert _classify(policy, pay, {"to": "a", "amount": "lots"}).risk is Risk.MEDIUM


def test_expressions_refuse_anything_but_data():
    for bad in ("__import__('os').system('x')", "args.__class__", "open('f')", "[x for x in y]"):
        with pytest.raises(Exception, match=r"not allowed|calls something|private name"):
            Expression(bad)


@pytest.mark.parametrize(
    ("text", "line", "fragment", "hint"),
    [
        (
            "rules:\n  - name: a\n    risk: severe\n",
            3,
            "unknown risk 'severe'",
            "low, medium or high",
        ),
        ("rules:\n  - name: a\n    risk: low\n    whne: x\n", 4, "unknown key 'whne'", "when"),
        ("rules:\n  - name: a\n    when: args.x >\n    risk: low\n", 3, "cannot parse", "args"),
        ("rules:\n  - name: a\n    tool: pay\n", 2, "rule 1 has no risk", "add risk"),
        ("approval:\n  expires_after: soon\n", 2, "positive duration", "24h"),
        ("approval:\n  quorum: 0\n", 2, "quorum must be", None),
        ("rules:\n  - name: a\n    risk: low\n  - name: a\n    risk: high\n", 4, "two rules", None),
        (
            "rules:\n  - name: a\n    data_class: secret\n    risk: low\n",
            3,
            "unknown data class",
            "pii",
        ),
        ("rules: [\n", 2, "not valid YAML", "indentation"),
        ("rulez: []\n", 1, "unknown key 'rulez'", "rules"),
    ],
)
def test_bad_policy_files_name_file_line_and_fix(tmp_path, text, line, fragment, hint):
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    with pytest.raises(PolicyFileError) as caught:
        load_policy(path)
    error = caught.value
    assert (error.path, error.line) == (str(path), line), str(error)
    assert str(error).startswith(f"{path}:{line}: ")
    assert fragment in error.message
    if hint:
        assert hint in (error.hint or "")


def test_a_missing_policy_file(tmp_path):
    with pytest.raises(PolicyFileError, match="does not exist"):
        load_policy(tmp_path / "nope.yaml")
