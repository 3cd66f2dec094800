"""The python_exec tool: gate, then a real namespace sandbox; a JSON-able observation."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from autonomic.adapters.sandbox import sandbox_from_env
from autonomic.adapters.sandbox.namespace import NamespaceSandbox
from autonomic.errors import ConfigError, ToolArgumentsInvalid
from autonomic.governance.code_gate import CodeGate, CodePolicy, bandit_available
from autonomic.ports.sandbox import Limits
from autonomic.testing.sandbox import require_bwrap
from autonomic.toolbox.python_exec import gate_from_env, python_exec_tool
from autonomic.tools.contract import ToolContext

CTX = ToolContext(run_id="r1", call_id="c1", idempotency_key="r1:3")


def call(arguments: str, **kw: Any) -> dict[str, Any]:
    require_bwrap()

    async def main() -> dict[str, Any]:
        sandbox = NamespaceSandbox()
        tool = python_exec_tool(
            sandbox, gate=kw.get("gate") or CodeGate(CodePolicy()), limits=kw.get("limits")
        )
        try:
            result: dict[str, Any] = await tool.invoke(tool.parse_arguments(arguments), CTX)
            return result
        finally:
            await sandbox.close()

    return asyncio.run(main())


def test_the_contract_is_idempotent_and_validates_arguments() -> None:
    tool = python_exec_tool()  # the sandbox is built on first use only
    assert tool.name == "python_exec"
    assert tool.idempotent
    assert tool.spec().parameters["required"] == ["code"]
    with pytest.raises(ToolArgumentsInvalid, match="code"):
        tool.parse_arguments("{}")
    with pytest.raises(ToolArgumentsInvalid, match="Additional properties"):
        tool.parse_arguments('{"code": "1", "shell": true}')
    with pytest.raises(ToolArgumentsInvalid, match="not valid JSON"):
        tool.parse_arguments("print(1)")


def test_it_runs_code_with_files_and_returns_a_json_observation() -> None:
    args = json.dumps(
        {
            "code": "import csv\nrows = list(csv.reader(open('t.csv')))\nprint(sum(int(r[1]) for r in rows))",
            "files": {"t.csv": "a,1\nb,2\nc,39\n"},
        }
    )
    result = call(args)
    assert json.loads(json.dumps(result)) == result
    assert result["ok"] is True
    assert result["ended"] == "exit"
    assert result["stdout"] == "42\n"
    assert result["backend"] == "namespace"
    assert result["findings"] == []


def test_the_gate_refuses_before_any_sandbox_runs() -> None:
    result = call(json.dumps({"code": "import os\nos.system('cat /etc/shadow')"}))
    assert result["ended"] == "refused"
    assert result["backend"] == "gate"
    assert result["ok"] is False
    assert "AUT002 line 2" in result["detail"]
    assert {f["rule"] for f in result["findings"] if f["blocked"]} == {"AUT001", "AUT002"}


def test_warnings_are_returned_with_a_run_that_went_ahead() -> None:
    if not bandit_available():
        pytest.skip("bandit is not installed (the sandbox extra; scripts/test installs it)")
    # Bandit's B311 (a non-cryptographic random generator) is LOW: a warning, not a refusal.
    result = call(json.dumps({"code": "import random\nprint(random.Random(1).randint(7, 7))"}))
    assert result["stdout"] == "7\n"
    assert [(f["rule"], f["blocked"]) for f in result["findings"]] == [("B311", False)]


def test_the_policy_files_code_gate_section_is_used(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text("code_gate:\n  deny_imports: [json]\n  bandit: false\n")
    gate = gate_from_env({"AUTONOMIC_POLICY": str(policy)})
    assert not gate.inspect("import json").allowed
    assert gate.inspect("import csv").allowed
    assert gate.policy.bandit is False
    widened = gate_from_env(
        {"AUTONOMIC_POLICY": str(policy), "AUTONOMIC_SANDBOX_GATE": "allow_imports=json"}
    )
    assert widened.inspect("import json").allowed
    result = call(json.dumps({"code": "import json\nprint(1)"}), gate=gate)
    assert result["ended"] == "refused"
    assert [(f["rule"], f["line"], f["blocked"]) for f in result["findings"]] == [
        ("AUT001", 1, True)
    ]


def test_a_timeout_and_bad_code_come_back_as_results() -> None:
    slow = call(
        json.dumps({"code": "while True:\n    pass"}),
        limits=Limits(wall_seconds=1.0, cpu_seconds=5.0),
    )
    assert slow["ended"] == "timeout"
    broken = call(json.dumps({"code": "def (:"}))
    assert broken["ended"] == "exit"
    assert broken["exit_code"] == 1
    assert "SyntaxError" in broken["stderr"]


def test_the_backend_comes_from_the_environment() -> None:
    with pytest.raises(ConfigError, match="unknown sandbox backend 'nope'"):
        sandbox_from_env({"AUTONOMIC_SANDBOX": "nope"})
    with pytest.raises(ConfigError, match="AUTONOMIC_SANDBOX_POOL"):
        sandbox_from_env({"AUTONOMIC_SANDBOX_POOL": "many"})
    oci = sandbox_from_env({"AUTONOMIC_SANDBOX": "oci", "AUTONOMIC_SANDBOX_EGRESS_UPLINK": "up"})
    assert getattr(oci, "egress_uplink", None) == "up"
