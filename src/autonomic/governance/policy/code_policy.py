"""The code gate's policy in YAML: the import allow-list and the rules, changed without code.

In a policy file's ``code_gate:`` section::

    code_gate:
      allow_imports: [numpy, pandas]   # added to the default list
      deny_imports: [random]           # taken off it
      # imports: [json, csv, math]     # or replace the list outright
      open: workspace                  # none | workspace (literal paths in the work dir) | any
      dunders: [__init__, __name__]    # replace the dunder names code may use
      block_at: high                   # which findings block: low, medium or high
      block: [B602]                    # rules that block whatever their severity
      ignore: [AUT006]                 # rules that neither block nor warn
      bandit: true                     # add Bandit's findings as warnings

Every key is optional; what is absent keeps the default (``autonomic.governance.code_rules``).
``AUTONOMIC_SANDBOX_GATE`` (``CodePolicy.parse``) is applied on top of the file.
"""

from __future__ import annotations

import os
from dataclasses import replace
from functools import lru_cache
from typing import Any

from autonomic.errors import ConfigError
from autonomic.governance.code_gate import CodePolicy, severity
from autonomic.governance.code_rules import OPEN_MODES
from autonomic.governance.policy.source import Node, Source, read_file

_KEYS = {
    "imports",
    "allow_imports",
    "deny_imports",
    "open",
    "dunders",
    "block_at",
    "block",
    "ignore",
    "bandit",
}


def parse_code_gate(src: Source, data: Any, parent: Node | None) -> CodePolicy | None:
    """The ``code_gate:`` section as a ``CodePolicy``; ``None`` when the file has none."""
    if data is None:
        return None
    node = src.mapping(data, parent, "code_gate", "code_gate")
    src.check_keys(node, _KEYS, "code_gate")
    policy = CodePolicy()
    fields: dict[str, Any] = {}
    try:
        for key, value in node.items():
            if key in ("imports", "allow_imports", "deny_imports", "dunders", "block", "ignore"):
                names = _names(src, node, key, value)
                if key == "imports":
                    fields["imports"] = names
                elif key == "allow_imports":
                    fields["imports"] = fields.get("imports", policy.imports) | names
                elif key == "deny_imports":
                    fields["imports"] = fields.get("imports", policy.imports) - names
                elif key in ("block", "ignore"):
                    fields[key] = frozenset(n.upper() for n in names)
                else:
                    fields[key] = names
            elif key == "open":
                if value not in OPEN_MODES:
                    raise src.error(
                        node, key, f"code_gate open: {value!r}", "use none, workspace or any"
                    )
                fields["open"] = value
            elif key == "block_at":
                fields["block_at"] = severity(str(value))
            elif key == "bandit":
                if not isinstance(value, bool):
                    raise src.error(node, key, "code_gate bandit must be true or false")
                fields["bandit"] = value
    except ConfigError as exc:
        raise src.error(node, key, exc.message, exc.hint) from None
    return replace(policy, **fields)


def _names(src: Source, node: Node, key: str, value: Any) -> frozenset[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise src.error(
            node, key, f"code_gate {key} must be a list of names", f"write {key}: [json, csv]"
        )
    return frozenset(v.strip() for v in value)


def load_code_policy(path: str) -> CodePolicy | None:
    """The ``code_gate:`` section of a YAML file (a policy file); ``None`` if it has none."""
    stat = os.stat(path) if os.path.exists(path) else None
    return _cached(path, (stat.st_mtime_ns, stat.st_size) if stat else (0, 0))


@lru_cache(maxsize=16)
def _cached(path: str, version: tuple[int, int]) -> CodePolicy | None:
    # Keyed by modification time and size: python_exec asks on every call, the file is read once.
    name, data = read_file(path)
    src = Source(name)
    top = src.mapping(data, None, None, "a policy file")
    return parse_code_gate(src, top.get("code_gate"), top)
