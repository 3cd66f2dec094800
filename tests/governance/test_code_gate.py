"""The static-analysis gate: what it flags, what the policy blocks, and that Bandit runs offline."""

from __future__ import annotations

import os

import pytest

from autonomic.errors import ConfigError
from autonomic.governance.code_gate import (
    CodeGate,
    CodePolicy,
    ast_findings,
    bandit_available,
    finding_record,
)
from autonomic.governance.decision import Risk, Verdict


def rules(code: str) -> set[str]:
    return {f.code for f in ast_findings(code)}


@pytest.mark.parametrize(
    ("code", "rule"),
    [
        ("import ctypes", "AUT001"),
        ("from subprocess import run", "AUT001"),
        ("import socket as s", "AUT001"),
        ("import os\nos.system('id')", "AUT002"),
        ("from os import execv", "AUT002"),
        ("import os\nos.spawnl(0, 'x')", "AUT002"),
        ("eval(input())", "AUT003"),
        ("exec('print(1)')", "AUT003"),
        ("__import__('o' + 's')", "AUT003"),
        ("getattr(x, name)", "AUT003"),
        ("().__class__.__bases__[0].__subclasses__()", "AUT004"),
        ("f.__globals__", "AUT004"),
        ("open('/etc/shadow')", "AUT005"),
        ("open('../../secret')", "AUT005"),
    ],
)
def test_suspicious_code_is_flagged(code: str, rule: str) -> None:
    assert rule in rules(code)


@pytest.mark.parametrize(
    "code",
    [
        "print(sum(range(1000)))",
        "import json, math, statistics\nprint(json.dumps({'m': statistics.mean([1, 2])}))",
        "with open('data.csv') as f:\n    rows = f.read().splitlines()",
        "open('/workspace/out.txt', 'w').write('x')",
        "getattr(obj, 'name')",
    ],
)
def test_ordinary_computation_is_not_flagged(code: str) -> None:
    assert rules(code) == set()


def test_the_default_policy_blocks_high_and_warns_below() -> None:
    gate = CodeGate(CodePolicy(bandit=False))
    blocked = gate.inspect("import subprocess\nsubprocess.run(['ls'])")
    assert not blocked.allowed
    assert "AUT001 line 1" in blocked.explanation
    warned = gate.inspect("import pickle\nprint(1)")
    assert warned.allowed
    assert [(f.code, f.verdict) for f in warned.findings] == [("AUT001", Verdict.ALLOW)]


def test_a_policy_can_block_lower_or_ignore_a_rule() -> None:
    strict = CodeGate(CodePolicy(block_at=Risk.MEDIUM, bandit=False))
    assert not strict.inspect("import pickle").allowed
    lenient = CodeGate(CodePolicy.parse("ignore=AUT001;bandit=off"))
    verdict = lenient.inspect("import subprocess")
    assert verdict.allowed
    assert verdict.findings == ()


def test_findings_serialise_for_the_journal() -> None:
    verdict = CodeGate(CodePolicy(bandit=False)).inspect("x = 1\nimport ctypes")
    assert finding_record(verdict.findings[0]) == {
        "rule": "AUT001",
        "line": 2,
        "message": "imports ctypes: ctypes reaches raw memory and any syscall",
        "severity": "high",
        "blocked": True,
    }


def test_code_that_does_not_parse_is_left_to_the_sandbox() -> None:
    verdict = CodeGate(CodePolicy()).inspect("def (:")
    assert verdict.allowed
    assert [f.code for f in verdict.findings] == ["AUT000"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("block_at=severe", "unknown gate severity"),
        ("colour=red", "unknown gate policy key"),
        ("block_at", "is not key=value"),
        ("bandit=maybe", "bandit='maybe'"),
    ],
)
def test_a_bad_policy_setting_is_one_clear_error(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        CodePolicy.parse(text)


def test_bandit_adds_its_findings_offline_and_leaves_no_temp_file() -> None:
    if not bandit_available():
        pytest.skip("bandit is not installed (the sandbox extra; scripts/test installs it)")
    before = {p for p in os.listdir("/tmp") if p.startswith("autonomic-gate-")}
    verdict = CodeGate(CodePolicy()).inspect("import hashlib\nhashlib.md5(b'x')\nassert True\n")
    found = {f.code for f in verdict.findings}
    assert {"B324", "B101"} <= found  # md5 for security, and assert: Bandit's own rules
    assert not any(f.code.startswith("AUT") for f in verdict.findings)
    after = {p for p in os.listdir("/tmp") if p.startswith("autonomic-gate-")}
    assert after == before
