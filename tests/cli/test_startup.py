"""``autonomic --help`` and ``autonomic runs`` start fast because they import only what they use:
the engine, jsonschema, the gateway, the sandbox backends and the optional drivers are imported by
the commands that need them, when they run (docs/cli.md, "Start-up time")."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

HEAVY = (
    "jsonschema",
    "litellm",
    "tiktoken",
    "openai",
    "httpx",
    "psycopg",
    "redis",
    "yaml",
    "numpy",
    "autonomic.engine",
    "autonomic.gateway",
    "autonomic.adapters.sandbox",
    "autonomic.adapters.redis",
    "autonomic.adapters.store.postgres",
    "autonomic.examples",
    "autonomic.toolbox",
    "autonomic.tools",
    "autonomic.governance",
)
"""Modules (and packages, with everything under them) that neither command may import."""

PROBE = """
import json, sys
from autonomic.cli.app import main
sys.argv = ["autonomic", *json.loads(sys.argv[1])]
try:
    main()
except SystemExit as exc:
    code = exc.code
sys.stderr.write("\\nMODULES " + json.dumps(sorted(sys.modules)) + "\\n")
sys.exit(code)
"""


def _modules_after(*args: str, cwd: Path, prelude: str = "") -> tuple[int, str, set[str]]:
    """Run the CLI with ``args`` in a fresh interpreter; what it printed and every module it
    had imported by the end."""
    env = {k: v for k, v in os.environ.items() if k != "AUTONOMIC_DB"} | {"COLUMNS": "80"}
    done = subprocess.run(
        [sys.executable, "-c", prelude + PROBE, json.dumps(args)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    modules = json.loads(done.stderr.rpartition("MODULES ")[2])
    return done.returncode, done.stdout, set(modules)


def _heavy(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if any(m == h or m.startswith(h + ".") for h in HEAVY))


def test_help_imports_none_of_the_heavy_modules(tmp_path: Path) -> None:
    code, out, modules = _modules_after("--help", cwd=tmp_path)
    assert code == 0
    assert "Commands" in out
    assert _heavy(modules) == []
    assert "asyncio" not in modules  # no command ran: no event loop was needed
    assert "autonomic.bootstrap" not in modules


def test_runs_imports_the_store_and_nothing_heavy(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path}/empty.db"
    assert _modules_after("--db", db, "migrate", cwd=tmp_path)[0] == 0
    code, out, modules = _modules_after("--db", db, "runs", cwd=tmp_path)
    assert code == 0
    assert "runs" in out
    assert "autonomic.adapters.store.sqlite" in modules  # it did open the store
    assert _heavy(modules) == []


def test_the_probe_sees_a_heavy_import_when_there_is_one(tmp_path: Path) -> None:
    """The check above can fail: the same probe, after importing the engine, reports it."""
    _, _, modules = _modules_after(
        "--help", cwd=tmp_path, prelude="import autonomic.engine.executor\n"
    )
    assert "autonomic.engine.executor" in _heavy(modules)
    assert "jsonschema" in _heavy(modules)


def test_the_public_api_is_imported_on_first_use() -> None:
    code = (
        "import sys, autonomic\n"
        "before = 'autonomic.engine.executor' in sys.modules\n"
        "from autonomic import Engine\n"
        "from autonomic.engine.executor import Engine as Defined\n"
        "missing = [n for n in autonomic.__all__ if getattr(autonomic, n, None) is None]\n"
        "print(before, Engine is Defined, missing, set(autonomic.__all__) <= set(dir(autonomic)))\n"
        "try:\n"
        "    autonomic.Nope\n"
        "except AttributeError as exc:\n"
        "    print(exc)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert done.stdout.splitlines() == [
        "False True [] True",
        "module 'autonomic' has no attribute 'Nope'",
    ]


def test_help_lists_the_commands_in_their_order(tmp_path: Path) -> None:
    """The top-level help did not change with the lazy imports: the same commands, in the same
    order, with the first line of each one's docstring."""
    _, out, _ = _modules_after("--help", cwd=tmp_path)
    listed = [s.split()[1] for s in out.splitlines() if s.startswith("│ ") and s[2] not in " -"]
    assert listed == [
        "demo",
        "run",
        "resume",
        "worker",
        "runs",
        "agents",
        "breakers",
        "kpis",
        "show",
        "export",
        "replay",
        "cancel",
        "abort",
        "settle",
        "approvals",
        "approve",
        "deny",
        "migrate",
        "serve",
        "gateway-check",
        "screen",
        "adversarial",
        "chaos",
        "workflow",
        "sandbox",
        "keys",
        "events",
        "dlq",
        "audit",
        "trace",
        "canary",
        "shadow",
    ]
    assert "Start a run of AGENT on TASK and drive it here" in out
    assert "Exits with" not in out  # the exit-code paragraph belongs to `run --help` only
