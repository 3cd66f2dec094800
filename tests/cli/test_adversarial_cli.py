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
