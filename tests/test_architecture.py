"""The shape of the package: a pure core, ports that import no adapter, a pinned public API."""

import ast
from pathlib import Path

import autonomic

SRC = Path(autonomic.__file__).parent


def _imports(folder: str) -> set[tuple[str, str]]:
    found: set[tuple[str, str]] = set()
    for path in (SRC / folder).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found.update((path.name, alias.name) for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module:
                found.add((path.name, node.module))
    return found


def test_core_does_no_io_and_imports_nothing_outward():
    forbidden = (
        "autonomic.adapters",
        "autonomic.engine",
        "autonomic.cli",
        "autonomic.bootstrap",
        "autonomic.ports",
        "asyncio",
        "sqlite3",
        "psycopg",
        "openai",
        "socket",
        "os",
        "subprocess",
    )
    bad = {(f, m) for f, m in _imports("core") if m.startswith(forbidden)}
    assert not bad


def test_ports_import_only_the_core():
    bad = {
        (f, m)
        for f, m in _imports("ports")
        if m.startswith("autonomic.") and not m.startswith(("autonomic.core", "autonomic.errors"))
    }
    assert not bad


def test_engine_does_not_import_adapters():
    assert not {
        (f, m)
        for f, m in _imports("engine")
        if m.startswith(("autonomic.adapters", "autonomic.bootstrap"))
    }


def test_public_api_is_pinned():
    assert autonomic.__all__ == sorted(
        autonomic.__all__, key=str.lower
    ) or autonomic.__all__ == sorted(autonomic.__all__)
    assert set(autonomic.__all__) == {
        "Agent",
        "AgentRegistry",
        "AutonomicError",
        "ConfigError",
        "Engine",
        "Budget",
        "Planning",
        "Runaway",
        "Entry",
        "EntryKind",
        "FunctionModel",
        "IllegalTransition",
        "InvalidInput",
        "LeaseLost",
        "Message",
        "Model",
        "ModelError",
        "ModelResponse",
        "NotFound",
        "Role",
        "Run",
        "RunStatus",
        "ScriptedModel",
        "StaleVersion",
        "Store",
        "StoreUnavailable",
        "Tool",
        "ToolArgumentsInvalid",
        "ToolCall",
        "ToolContext",
        "ToolError",
        "ToolSpec",
        "Usage",
        "UserError",
        "Worker",
        "build_model",
        "build_store",
        "tool",
    }
    for name in autonomic.__all__:
        assert getattr(autonomic, name) is not None


def test_help_does_not_import_optional_backends():
    import subprocess
    import sys

    # not yet checked: autonomic.engine.executor and jsonschema, which `import autonomic` loads
    optional = ("openai", "psycopg", "autonomic.adapters.sandbox")
    code = f"import sys; from autonomic.cli.app import app; print(sorted(m for m in {optional!r} if m in sys.modules))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


def test_policies_import_no_adapter_and_do_no_io_beyond_reading_their_files():
    bad = {
        (f, m)
        for f, m in _imports("policy")
        if m.startswith(
            ("autonomic.adapters", "autonomic.bootstrap", "autonomic.cli", "asyncio", "sqlite3")
        )
    }
    assert not bad
