"""The guards are a pure library: no I/O, no engine, no store; the ports import only the core."""

import ast
from pathlib import Path

import autonomic.governance.runaway

GUARDS = Path(autonomic.governance.runaway.__file__).parent
FORBIDDEN = (
    "asyncio",
    "sqlite3",
    "psycopg",
    "redis",
    "socket",
    "subprocess",
    "os",
    "torch",
    "autonomic.engine",
    "autonomic.adapters.store",
    "autonomic.cli",
    "autonomic.bootstrap",
)


def test_guards_do_no_io_and_do_not_import_the_engine():
    found = set()
    for path in GUARDS.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            found.update(
                (path.name, n)
                for n in names
                if n.split(".")[0] in FORBIDDEN or n.startswith(FORBIDDEN)
            )
    assert found == set()


def test_public_names_are_sorted_and_exist():
    assert autonomic.governance.runaway.__all__ == sorted(autonomic.governance.runaway.__all__)
    for name in autonomic.governance.runaway.__all__:
        assert getattr(autonomic.governance.runaway, name) is not None
