"""The shape of the package: every import points down the table below, nothing forms a circle, the
core does no I/O, and the public API is pinned.

Imports are read from the source with ``ast``: top-level ones, ones inside functions (a lazy import
is still a dependency) and ones under ``if TYPE_CHECKING:`` (a type is a dependency too) all count.
"""

import ast
import subprocess
import sys
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import autonomic
from autonomic import _moved

SRC = Path(autonomic.__file__).parent

BELOW: dict[str, set[str]] = {
    "errors": set(),
    "host_process": set(),
    "core": {"errors"},
    "ports": {"core", "errors"},
    "adapters": {"host_process", "ports", "core", "errors"},
    "tools": {"ports", "core", "errors"},
    "observability": {"ports", "core", "errors"},
    "governance": {"tools", "ports", "core", "errors"},
    "audit": {"ports", "core", "errors"},
    "gateway": {"governance", "tools", "adapters", "ports", "core", "errors"},
    "toolbox": {"governance", "tools", "observability", "adapters", "ports", "core", "errors"},
    "engine": {
        "gateway", "governance", "tools", "observability", "host_process", "ports", "core", "errors",
    },
    "examples": {
        "observability", "engine", "gateway", "governance", "toolbox", "tools", "adapters", "ports", "core",
        "host_process", "errors",
    },
    "release": {
        "observability", "engine", "gateway", "governance", "tools", "ports", "core", "host_process",
        "errors",
    },
    "bootstrap": {
        "observability", "examples", "engine", "audit", "gateway", "governance", "toolbox",
        "tools", "adapters", "ports", "core", "host_process", "errors",
    },
    "testing": {
        "observability", "release", "bootstrap", "examples", "engine", "audit", "gateway", "governance",
        "toolbox", "tools", "adapters", "ports", "core", "host_process", "errors",
    },
    "service": {
        "observability", "release", "bootstrap", "testing", "examples", "engine", "audit", "gateway",
        "governance", "toolbox", "tools", "adapters", "ports", "core", "host_process", "errors",
    },
    "cli": {
        "service", "observability", "release", "bootstrap", "testing", "examples", "engine", "audit",
        "gateway", "governance", "toolbox", "tools",
        "adapters", "ports", "core", "host_process", "errors",
    },
    "_moved": set(),
}  # fmt: skip
"""What each part of the house may import, besides itself: the layers from the bottom (errors,
the pure core, the ports) to the doors (the CLI). ``autonomic/__init__.py`` is the public facade
over all of them. docs/architecture.md draws the same table."""

FORBIDDEN_IN_CORE = ("asyncio", "sqlite3", "psycopg", "openai", "socket", "os", "subprocess")


def _modules() -> dict[str, Path]:
    found = {}
    for path in SRC.rglob("*.py"):
        parts = path.relative_to(SRC.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


MODULES = _modules()


def _imports(path: Path, name: str) -> Iterator[str]:
    """Every ``autonomic`` module ``path`` imports, wherever the import statement stands."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                yield submodule if submodule in MODULES else base


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = defaultdict(set)
    for name, path in MODULES.items():
        for target in _imports(path, name):
            while target and target not in MODULES:
                target = target.rpartition(".")[0]
            if target.startswith("autonomic") and target != name:
                graph[name].add(target)
    return graph


GRAPH = _graph()


def _part(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "autonomic"


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one member (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(set(graph) | {n for targets in graph.values() for n in targets}):
        if node not in index:
            visit(node)
    return found


def test_every_part_of_the_house_is_in_the_table():
    parts = {_part(m) for m in MODULES} - {"autonomic"}
    assert parts == set(BELOW), "add the new part to BELOW (and to docs/architecture.md)"


def test_the_table_itself_points_down():
    assert not _cycles({part: set(below) for part, below in BELOW.items()})


def test_every_import_points_down_the_table():
    upward = sorted(
        f"{source} -> {target}"
        for source, targets in GRAPH.items()
        for target in targets
        if _part(source) != "autonomic"
        and _part(target) != _part(source)
        and _part(target) not in BELOW[_part(source)]
    )
    assert upward == []


def test_no_module_import_cycle():
    assert _cycles(GRAPH) == []


def test_the_checks_above_can_fail():
    """The cycle finder finds a circle and the table check an upward arrow when there is one."""
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _part("autonomic.engine.step") == "engine"
    assert "engine" not in BELOW["governance"]


def test_core_does_no_io():
    bad = sorted(
        f"{source} -> {name}"
        for source, path in MODULES.items()
        if _part(source) == "core"
        for name in _imports(path, source)
        if name.split(".")[0] in FORBIDDEN_IN_CORE
    )
    assert bad == []


def test_old_module_names_still_import_with_a_warning():
    """The moved modules of 0.2 answer to their old names for one release (``_moved``)."""
    code = (
        "import importlib, warnings, json\n"
        "from autonomic._moved import MOVED\n"
        "seen = {}\n"
        "for old, new in MOVED.items():\n"
        "    with warnings.catch_warnings(record=True) as caught:\n"
        "        warnings.simplefilter('always')\n"
        "        module = importlib.import_module(old)\n"
        "    seen[old] = [module is importlib.import_module(new),"
        " any(issubclass(w.category, DeprecationWarning) for w in caught)]\n"
        "print(json.dumps(seen))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    import json

    seen = json.loads(out.stdout)
    assert set(seen) == set(_moved.MOVED)
    assert {old for old, (same, warned) in seen.items() if not (same and warned)} == set()
    assert all(new in MODULES for new in _moved.MOVED.values())


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
        "RunInputError",
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
    # `import autonomic` loads its public names lazily: the engine and jsonschema are not needed
    # (tests/cli/test_startup.py checks `--help` and `runs` against the longer list)
    optional = (
        "openai",
        "psycopg",
        "redis",
        "autonomic.adapters.sandbox",
        "autonomic.engine.executor",
        "jsonschema",
    )
    code = f"import sys; from autonomic.cli.app import app; print(sorted(m for m in {optional!r} if m in sys.modules))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"
