"""``autonomic adversarial``: bad requests are one line with exit 2 (the suite itself is measured
in tests/testing/test_adversarial.py)."""

import subprocess
import sys

CLI = [sys.executable, "-m", "autonomic.cli", "adversarial"]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=120, check=False)


def test_bad_agents_are_one_line() -> None:
    for args, expected in (
        (("--agent", "nodots"), "bad import path"),
        (("--agent", "autonomic.testing.adversarial.agents:CONTACTS"), "is not an Agent"),
        (
            ("--agent", "autonomic.examples.runaway.agent:runaway_agent"),
            "is not an Agent",
        ),
    ):
        result = _run(*args)
        assert result.returncode == 2, result.stderr
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert expected in lines[0]
        assert "Traceback" not in result.stderr


def test_target_runs_the_corpus_against_a_users_agent(tmp_path) -> None:
    import json
    import os

    (tmp_path / "my_agent.py").write_text(
        "from autonomic.engine.agent import Agent\n"
        "from autonomic.tools.contract import tool\n\n\n"
        "@tool\ndef fetch(doc: str) -> str:\n    raise RuntimeError('never called')\n\n\n"
        "@tool(effects=['pay'])\ndef wire(account: str, amount: int) -> str:\n    raise RuntimeError('never called')\n\n\n"
        "AGENT = Agent('mine', 'x', tools=[fetch, wire], read_only={'fetch'})\n"
    )
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    args = [*CLI, "--target", "my_agent:AGENT", "--style", "todo", "--style", "base64"]
    result = subprocess.run(
        [*args, "--json"], capture_output=True, text=True, timeout=120, check=False, env=env
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert (report["proposed"], report["gated"], report["executed"]) == (2, 2, 0)
    bad = subprocess.run(
        [*CLI, "--target", "my_agent:AGENT", "--style", "nope"],
        capture_output=True, text=True, timeout=120, check=False, env=env,
    )  # fmt: skip
    assert bad.returncode == 2
    assert "unknown attack style(s) nope" in bad.stderr
