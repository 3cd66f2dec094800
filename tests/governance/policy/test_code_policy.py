"""The code gate's section of a policy file: every key, and one clear error per mistake."""

from __future__ import annotations

from pathlib import Path

import pytest

from autonomic.errors import PolicyFileError
from autonomic.governance.code_gate import DEFAULT_IMPORTS, CodeGate
from autonomic.governance.decision import Risk
from autonomic.governance.policy.code_policy import load_code_policy
from autonomic.governance.policy.risk import parse_policy_text


def test_every_key_reaches_the_gates_policy() -> None:
    policy = parse_policy_text(
        """
code_gate:
  allow_imports: [numpy]
  deny_imports: [random]
  open: none
  dunders: [__init__]
  block_at: medium
  block: [b602]
  ignore: [AUT006]
  bandit: false
"""
    ).code_gate
    assert policy is not None
    assert policy.imports == (DEFAULT_IMPORTS | {"numpy"}) - {"random"}
    assert (policy.open, policy.dunders, policy.block_at) == ("none", {"__init__"}, Risk.MEDIUM)
    assert (policy.block, policy.ignore, policy.bandit) == ({"B602"}, {"AUT006"}, False)
    gate = CodeGate(policy)
    assert gate.inspect("import numpy").allowed
    assert not gate.inspect("open('data.csv')").allowed
    assert gate.inspect("print(vars())").allowed  # AUT006 ignored


def test_imports_replaces_the_list_and_a_file_without_the_section_has_none() -> None:
    only = parse_policy_text("code_gate:\n  imports: [json]\n").code_gate
    assert only is not None
    assert only.imports == {"json"}
    assert parse_policy_text("default_risk: low\n").code_gate is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("code_gate: [json]", "code_gate must be a mapping"),
        ("code_gate:\n  imports: json", "code_gate imports must be a list of names"),
        ("code_gate:\n  open: maybe", "code_gate open: 'maybe'"),
        ("code_gate:\n  bandit: maybe", "bandit must be true or false"),
        ("code_gate:\n  block_at: severe", "unknown gate severity"),
        ("code_gate:\n  colour: red", "unknown key 'colour' in code_gate"),
    ],
)
def test_a_mistake_names_the_line_and_the_fix(text: str, message: str) -> None:
    with pytest.raises(PolicyFileError, match=message) as caught:
        parse_policy_text(text, "policy.yaml")
    assert str(caught.value).startswith("policy.yaml:")


def test_the_file_is_reread_when_it_changes(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text("code_gate:\n  open: none\n")
    first = load_code_policy(str(path))
    assert first is not None
    assert first.open == "none"
    path.write_text("code_gate:\n  open: any\n# changed\n")
    second = load_code_policy(str(path))
    assert second is not None
    assert second.open == "any"
