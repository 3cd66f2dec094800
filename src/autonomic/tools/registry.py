"""The tool registry: which tool versions exist, looked up by name or ``name@version``."""

from __future__ import annotations

from collections.abc import Iterable

from autonomic.errors import NotFound, UserError
from autonomic.tools.contract import Tool


class ToolRegistry:
    """Tools by name and version. A run pins ``name@version`` refs and resolves them here."""

    def __init__(self, tools: Iterable[Tool] = ()) -> None:
        self._by_ref: dict[str, Tool] = {}
        self._latest: dict[str, Tool] = {}
        for t in tools:
            self.register(t)

    def register(self, tool: Tool) -> None:
        if tool.ref in self._by_ref and self._by_ref[tool.ref] is not tool:
            raise UserError(
                f"tool {tool.ref} is already registered",
                hint="bump the version when a tool's behaviour changes",
            )
        self._by_ref[tool.ref] = tool
        self._latest[tool.name] = tool

    def get(self, name: str, version: str | None = None) -> Tool:
        """The tool ``name`` at ``version`` (latest registered when ``version`` is None)."""
        found = self._latest.get(name) if version is None else self._by_ref.get(f"{name}@{version}")
        if found is None:
            known = ", ".join(sorted(self._by_ref)) or "none"
            raise NotFound(f"unknown tool {name}{'@' + version if version else ''}; known: {known}")
        return found

    def resolve(self, ref: str) -> Tool:
        name, _, version = ref.partition("@")
        return self.get(name, version or None)

    def refs(self, name: str) -> list[str]:
        """Every registered ``name@version`` of ``name``."""
        return [ref for ref, t in self._by_ref.items() if t.name == name]

    def latest(self) -> list[Tool]:
        """The newest registered version of every tool."""
        return list(self._latest.values())

    def __len__(self) -> int:
        return len(self._latest)
