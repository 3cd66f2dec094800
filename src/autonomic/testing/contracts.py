"""Contract tests: check a tool's schemas against recorded real responses.

A tool's contract promises what its arguments look like and, with an ``output_schema``, what its
results look like. The service behind a tool changes without telling anyone; recording real calls
(arguments and what came back) and replaying them against the contract in CI catches the drift
before a run does. Recordings are JSON lines, one call each::

    {"tool": "fx_rate@2", "arguments": {"pair": "EURUSD"}, "output": {"rate": 1.08}}

``record(path, tool, arguments, output)`` appends one (call it from a staging job or a test that
talks to the real service); ``check_recordings`` returns every problem; ``assert_contract`` raises
one ``AssertionError`` listing them.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autonomic.core.canonical import canonical_json
from autonomic.errors import InvalidInput
from autonomic.tools.contract import Tool


@dataclass(frozen=True, slots=True)
class ContractProblem:
    """One recording the contract does not accept."""

    index: int
    """1-based line of the recording."""
    message: str


def record(path: str | Path, tool: Tool, arguments: dict[str, Any], output: Any) -> None:
    """Append one real call of ``tool`` to the recording file at ``path``."""
    line = canonical_json({"tool": tool.ref, "arguments": arguments, "output": output})
    with Path(path).open("a", encoding="utf-8") as f:
        f.write(line + "\n")


def load_recordings(path: str | Path) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InvalidInput(f"{path}:{number}: not JSON: {exc.msg}") from None
        if not isinstance(value, dict) or "arguments" not in value:
            raise InvalidInput(
                f"{path}:{number}: a recording needs arguments (and output)",
                hint='write {"tool": "name@version", "arguments": {...}, "output": ...}',
            )
        found.append(value)
    return found


def check_recordings(
    tool: Tool, recordings: Iterable[Mapping[str, Any]] | str | Path
) -> list[ContractProblem]:
    """Every way the recorded calls disagree with ``tool``'s contract (empty: it holds)."""
    items = load_recordings(recordings) if isinstance(recordings, str | Path) else list(recordings)
    problems: list[ContractProblem] = []
    if not items:
        problems.append(ContractProblem(0, f"no recordings for {tool.ref}: nothing was checked"))
    for index, item in enumerate(items, start=1):
        ref = item.get("tool")
        if ref is not None and ref not in (tool.ref, tool.name):
            problems.append(ContractProblem(index, f"recorded against {ref}, checking {tool.ref}"))
            continue
        arguments = item.get("arguments")
        if not isinstance(arguments, dict):
            problems.append(ContractProblem(index, "arguments are not a JSON object"))
            continue
        try:
            tool.validate(arguments)
        except InvalidInput as exc:
            problems.append(ContractProblem(index, exc.message))
        if "output" in item:
            try:
                tool.validate_output(item["output"])
            except InvalidInput as exc:
                problems.append(ContractProblem(index, exc.message))
    return problems


def assert_contract(tool: Tool, recordings: Iterable[Mapping[str, Any]] | str | Path) -> None:
    """Raise ``AssertionError`` listing every recording ``tool``'s contract rejects."""
    problems = check_recordings(tool, recordings)
    if problems:
        lines = "\n".join(f"  recording {p.index}: {p.message}" for p in problems)
        raise AssertionError(f"{tool.ref} breaks its contract:\n{lines}")
