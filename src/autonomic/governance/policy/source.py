"""Policy and workflow files: YAML read with line numbers, so every error names file and line.

``load_yaml`` returns plain dicts and lists, but every mapping is a ``Node`` (a ``dict`` that also
knows the line it starts on and the line of each key). ``Source`` wraps a loaded file with helpers
that raise ``PolicyFileError`` pointing at the offending key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from autonomic.errors import PolicyFileError


class Node(dict[str, Any]):
    """A YAML mapping that remembers where it was written (1-based lines)."""

    line: int = 0
    key_lines: dict[str, int]


class _Loader(yaml.SafeLoader):
    def construct_node(self, node: yaml.MappingNode) -> Node:
        result = Node()
        result.line = node.start_mark.line + 1
        result.key_lines = {}
        for key_node, value_node in node.value:
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, str):
                raise PolicyFileError(
                    str(self.name),
                    key_node.start_mark.line + 1,
                    f"keys must be text, got {key!r}",
                )
            if key in result:
                raise PolicyFileError(
                    str(self.name), key_node.start_mark.line + 1, f"duplicate key {key!r}"
                )
            result[key] = self.construct_object(value_node, deep=True)
            result.key_lines[key] = key_node.start_mark.line + 1
        return result


_Loader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _Loader.construct_node,
)


def load_yaml(text: str, path: str) -> Any:
    """Parse ``text`` (the contents of ``path``); a syntax error names the line."""
    loader = _Loader(text)
    loader.name = path
    try:
        return loader.get_single_data()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        line = mark.line + 1 if mark is not None else None
        raise PolicyFileError(
            path, line, f"not valid YAML: {exc.problem}", hint="check indentation and quoting"
        ) from None
    except yaml.YAMLError as exc:
        raise PolicyFileError(path, None, f"not valid YAML: {exc}") from None
    finally:
        loader.dispose()


def read_file(path: str | Path) -> tuple[str, Any]:
    """Read and parse a YAML file; ``(path as text, data)``."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PolicyFileError(str(p), None, "file does not exist") from None
    except OSError as exc:
        raise PolicyFileError(str(p), None, f"cannot read: {exc.strerror}") from None
    return str(p), load_yaml(text, str(p))


class Source:
    """Errors about one file, pointing at lines."""

    def __init__(self, path: str) -> None:
        self.path = path

    def error(
        self, node: Any, key: str | None, problem: str, hint: str | None = None
    ) -> PolicyFileError:
        return PolicyFileError(self.path, line_of(node, key), problem, hint=hint)

    def mapping(self, value: Any, where: Node | None, key: str | None, what: str) -> Node:
        if not isinstance(value, Node):
            raise self.error(where, key, f"{what} must be a mapping, got {_kind(value)}")
        return value

    def check_keys(self, node: Node, allowed: set[str], what: str) -> None:
        for key in node:
            if key not in allowed:
                raise self.error(
                    node,
                    key,
                    f"unknown key {key!r} in {what}",
                    hint="allowed keys: " + ", ".join(sorted(allowed)),
                )


def line_of(node: Any, key: str | None = None) -> int | None:
    """The line of ``node[key]`` (or of ``node``) if known."""
    if isinstance(node, Node):
        if key is not None and key in node.key_lines:
            return node.key_lines[key]
        return node.line or None
    return None


def _kind(value: Any) -> str:
    if value is None:
        return "nothing"
    return {
        list: "a list",
        str: "text",
        int: "a number",
        float: "a number",
        bool: "true/false",
    }.get(type(value), type(value).__name__)
