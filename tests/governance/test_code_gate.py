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
from autonomic.governance.decision import Risk
from autonomic.testing.code_gate_corpus import load, score


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
        ("import pickle", "AUT001"),
        ("import sys\nsys.modules['os'].system('id')", "AUT001"),
        ("import random\nrandom._os.system('id')", "AUT008"),
        ("import typing\ntyping.sys.modules", "AUT008"),
        ("import json\nx = json", "AUT007"),
        ("print(vars())", "AUT006"),
        ("f.gi_frame", "AUT004"),
        ("open(name)", "AUT005"),
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


def test_the_default_policy_blocks_every_rule_and_warns_below() -> None:
    gate = CodeGate(CodePolicy(bandit=False))
    blocked = gate.inspect("import subprocess\nsubprocess.run(['ls'])")
    assert not blocked.allowed
    assert "AUT001 line 1" in blocked.explanation
    assert "not on the import allow-list" in blocked.explanation
    lenient = CodeGate(CodePolicy(block_at=Risk.MEDIUM, bandit=False, ignore=frozenset()))
    assert lenient.inspect("import json").findings == ()


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
        "message": "imports ctypes: not on the import allow-list (reaches raw memory and any "
        "syscall)",
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
        ("open=sometimes", "unknown code gate open mode"),
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


def test_the_import_list_is_policy() -> None:
    default = CodeGate(CodePolicy(bandit=False))
    assert not default.inspect("import numpy").allowed
    widened = CodeGate(CodePolicy.parse("allow_imports=numpy;bandit=off"))
    assert widened.inspect("import numpy as np\nprint(np.pi)").allowed
    narrowed = CodeGate(CodePolicy.parse("deny_imports=random;bandit=off"))
    assert not narrowed.inspect("import random").allowed
    only = CodeGate(CodePolicy.parse("imports=json;bandit=off"))
    assert only.inspect("import json").allowed
    assert not only.inspect("import csv").allowed


def test_submodules_are_allowed_by_the_package_but_not_the_other_way_round() -> None:
    gate = CodeGate(CodePolicy(bandit=False))
    assert gate.inspect("import collections.abc\nprint(collections.abc.Mapping)").allowed
    assert gate.inspect("from collections.abc import Mapping").allowed
    only_path = CodeGate(CodePolicy.parse("imports=os.path;bandit=off"))
    assert only_path.inspect("from os.path import join\nprint(join('a', 'b'))").allowed
    assert not only_path.inspect("import os.path").allowed  # binds os itself
    assert "AUT001" in {f.code for f in only_path.inspect("import os.path").findings}


@pytest.mark.parametrize(
    ("mode", "code", "allowed"),
    [
        ("workspace", "open('data.csv')", True),
        ("workspace", "open('/workspace/a/b.txt', 'w')", True),
        ("workspace", "open(file='data.csv')", True),
        ("workspace", "open('/etc/passwd')", False),
        ("workspace", "open('/workspace/../etc/passwd')", False),
        ("workspace", "open(path)", False),
        ("none", "open('data.csv')", False),
        ("any", "open('/etc/passwd')", True),
        ("any", "reader = open", True),
    ],
)
def test_open_follows_the_policy(mode: str, code: str, allowed: bool) -> None:
    gate = CodeGate(CodePolicy.parse(f"open={mode};bandit=off"))
    assert gate.inspect(code).allowed is allowed


def test_a_refusal_names_the_rule_and_the_line() -> None:
    decision = CodeGate(CodePolicy(bandit=False)).inspect(
        "x = 1\ny = 2\nprint(().__class__.__mro__)"
    )
    assert not decision.allowed
    record = finding_record(decision.findings[0])
    assert (record["rule"], record["line"], record["blocked"]) == ("AUT004", 3, True)
    assert "__mro__" in record["message"]
    assert "AUT004 line 3" in decision.explanation


def test_the_escape_corpus_is_refused_and_the_benign_corpus_allowed() -> None:
    report = score(CodeGate(CodePolicy(bandit=False)))
    assert report.escapes >= 40
    assert report.benign >= 40
    assert report.escaped == ()
    assert report.refused_benign == ()
    assert report.refusal_rate == 1.0
    assert report.allow_rate == 1.0


def test_the_corpus_test_can_fail() -> None:
    # With every rule ignored the same escapes get through: the corpus really exercises the rules.
    rules = ",".join(f"AUT00{n}" for n in range(1, 9))
    report = score(CodeGate(CodePolicy.parse(f"ignore={rules};bandit=off")))
    assert len(report.escaped) == report.escapes


def test_the_corpus_snippets_parse() -> None:
    for kind in ("escapes", "benign"):
        for snippet in load(kind):  # type: ignore[arg-type]
            compile(snippet.code, snippet.name, "exec")


def test_the_issues_examples_are_refused_with_bandit_on_too() -> None:
    gate = CodeGate(CodePolicy())
    for code in (
        'import sys\nsys.modules["os"].system("id")',
        'import builtins\nvars(builtins)["__imp" + "ort__"]("os")',
        'import importlib\nimportlib.import_module("o" + "s")',
        'open("/etc/shadow")',
    ):
        assert not gate.inspect(code).allowed, code
