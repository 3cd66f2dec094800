"""The static-analysis gate: look at generated code before it reaches a sandbox.

It is a filter, not the boundary. Python is too dynamic for any static check to be complete
(``getattr(__builtins__, "ev" + "al")``), so the sandbox assumes the gate let everything through.
What the gate buys: obviously hostile or careless code (shelling out, raw sockets, ``ctypes``,
reading ``/etc``) is refused before it costs a sandbox, and every finding — blocked or merely
warned — is returned so the ``python_exec`` tool journals it with the step for the audit trail.

Two analyses run: our own AST rules (``AUT...``, always) and Bandit's (``B...``, when the
``sandbox`` extra is installed; it runs in-process and offline). A ``GatePolicy`` decides which
findings block: by default those of HIGH severity; per-rule overrides come from code or from the
``AUTONOMIC_SANDBOX_GATE`` setting, e.g. ``block_at=medium;ignore=B404;block=AUT003``.
"""

from __future__ import annotations

import ast
import contextlib
import enum
import importlib.util
import logging
import os
import tempfile
import warnings
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from autonomic.errors import ConfigError
from autonomic.ports.sandbox import Ended, Result


class Severity(enum.IntEnum):
    LOW = 1
    MEDIUM = 2
    HIGH = 3

    @classmethod
    def parse(cls, text: str) -> Severity:
        try:
            return cls[text.strip().upper()]
        except KeyError:
            raise ConfigError(
                f"unknown gate severity {text!r}", hint="use low, medium or high"
            ) from None


@dataclass(frozen=True, slots=True)
class Finding:
    """One thing the gate noticed; JSON-able for the journal."""

    rule: str
    line: int
    message: str
    severity: Severity
    blocked: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "line": self.line,
            "message": self.message,
            "severity": self.severity.name.lower(),
            "blocked": self.blocked,
        }


@dataclass(frozen=True, slots=True)
class GateVerdict:
    allowed: bool
    findings: tuple[Finding, ...]

    @property
    def reason(self) -> str:
        """One line naming what blocked the code (empty when allowed)."""
        blocking = [f for f in self.findings if f.blocked]
        return "; ".join(f"{f.rule} line {f.line}: {f.message}" for f in blocking)

    def refusal(self) -> Result:
        """The sandbox result that stands for code this gate refused (it never ran)."""
        return Result(
            ended=Ended.REFUSED,
            exit_code=None,
            stdout="",
            stderr="",
            stdout_truncated=False,
            stderr_truncated=False,
            duration_s=0.0,
            backend="gate",
            detail=f"refused by the static-analysis gate: {self.reason}",
        )


@dataclass(frozen=True, slots=True)
class GatePolicy:
    """Which findings block: at or above ``block_at``, plus ``block``, minus ``ignore``."""

    block_at: Severity = Severity.HIGH
    block: frozenset[str] = frozenset()
    ignore: frozenset[str] = frozenset()
    bandit: bool = True

    @classmethod
    def parse(cls, text: str) -> GatePolicy:
        """``block_at=high;block=AUT003,B602;ignore=B404;bandit=off`` (every part optional)."""
        options: dict[str, Any] = {}
        for part in filter(None, (p.strip() for p in text.split(";"))):
            key, sep, value = part.partition("=")
            key = key.strip()
            if not sep:
                raise ConfigError(
                    f"gate policy part {part!r} is not key=value",
                    hint="e.g. block_at=medium;ignore=B404",
                )
            if key == "block_at":
                options["block_at"] = Severity.parse(value)
            elif key in ("block", "ignore"):
                options[key] = frozenset(r.strip().upper() for r in value.split(",") if r.strip())
            elif key == "bandit":
                if value.strip() not in ("on", "off"):
                    raise ConfigError(f"gate policy bandit={value!r}", hint="use bandit=on or off")
                options["bandit"] = value.strip() == "on"
            else:
                raise ConfigError(
                    f"unknown gate policy key {key!r}",
                    hint="known keys: block_at, block, ignore, bandit",
                )
        return cls(**options)

    def blocks(self, finding: Finding) -> bool:
        if finding.rule in self.ignore:
            return False
        return finding.rule in self.block or finding.severity >= self.block_at


# -- our AST rules ---------------------------------------------------------------------------------

MODULES: Mapping[str, tuple[Severity, str]] = {
    "ctypes": (Severity.HIGH, "ctypes reaches raw memory and any syscall"),
    "cffi": (Severity.HIGH, "cffi reaches raw memory and any syscall"),
    "subprocess": (Severity.HIGH, "runs other programs"),
    "pty": (Severity.HIGH, "spawns terminals"),
    "socket": (Severity.HIGH, "opens network sockets"),
    "mmap": (Severity.MEDIUM, "maps memory and files"),
    "multiprocessing": (Severity.MEDIUM, "starts processes"),
    "signal": (Severity.LOW, "handles signals"),
    "importlib": (Severity.MEDIUM, "imports modules by computed name"),
    "marshal": (Severity.MEDIUM, "loads code objects"),
    "pickle": (Severity.MEDIUM, "unpickling runs code"),
    "shutil": (Severity.LOW, "copies and deletes trees"),
    "urllib": (Severity.MEDIUM, "makes network requests"),
    "http": (Severity.MEDIUM, "makes network requests"),
    "ftplib": (Severity.MEDIUM, "makes network requests"),
    "smtplib": (Severity.MEDIUM, "sends mail"),
    "telnetlib": (Severity.MEDIUM, "makes network connections"),
    "requests": (Severity.MEDIUM, "makes network requests"),
    "resource": (Severity.LOW, "changes resource limits"),
}
OS_CALLS: Mapping[str, tuple[Severity, str]] = {
    "system": (Severity.HIGH, "runs a shell command"),
    "popen": (Severity.HIGH, "runs a shell command"),
    "fork": (Severity.MEDIUM, "forks a process"),
    "forkpty": (Severity.HIGH, "forks a terminal"),
    "kill": (Severity.MEDIUM, "signals a process"),
    "killpg": (Severity.MEDIUM, "signals a process group"),
    "setuid": (Severity.HIGH, "changes identity"),
    "chroot": (Severity.HIGH, "changes the root directory"),
    "mknod": (Severity.HIGH, "creates device nodes"),
}
OS_PREFIXES = (("exec", Severity.HIGH, "replaces the process"), ("spawn", Severity.HIGH, "spawns"))
DUNDERS = frozenset(
    {
        "__subclasses__",
        "__globals__",
        "__builtins__",
        "__code__",
        "__mro__",
        "__bases__",
        "__closure__",
        "__getattribute__",
        "__dict__",
    }
)
DYNAMIC_CALLS = frozenset({"eval", "exec", "compile"})


class _Rules(ast.NodeVisitor):
    def __init__(self) -> None:
        self.found: list[Finding] = []

    def add(self, rule: str, node: ast.AST, message: str, severity: Severity) -> None:
        self.found.append(Finding(rule, getattr(node, "lineno", 0), message, severity))

    def _module(self, name: str, node: ast.AST) -> None:
        top = name.split(".")[0]
        if top in MODULES:
            severity, why = MODULES[top]
            self.add("AUT001", node, f"imports {name}: {why}", severity)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._module(alias.name, node)
        self.generic_visit(node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.module:
            self._module(node.module, node)
            if node.module == "os":
                for alias in node.names:
                    self._os_call(alias.name, node)
        self.generic_visit(node)

    def _os_call(self, name: str, node: ast.AST) -> None:
        hit = OS_CALLS.get(name)
        if hit is None:
            for prefix, severity, why in OS_PREFIXES:
                if name.startswith(prefix):
                    hit = (severity, why)
        if hit is not None:
            self.add("AUT002", node, f"os.{name} {hit[1]}", hit[0])

    def visit_Attribute(self, node: ast.Attribute) -> None:
        if isinstance(node.value, ast.Name) and node.value.id == "os":
            self._os_call(node.attr, node)
        if node.attr in DUNDERS:
            self.add("AUT004", node, f"reaches {node.attr}, a sandbox-escape gadget", Severity.HIGH)
        self.generic_visit(node)

    def visit_Name(self, node: ast.Name) -> None:
        if node.id == "__builtins__":
            self.add("AUT004", node, "reaches __builtins__, a sandbox-escape gadget", Severity.HIGH)

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        name = func.id if isinstance(func, ast.Name) else None
        if name in DYNAMIC_CALLS:
            literal = bool(node.args) and isinstance(node.args[0], ast.Constant)
            self.add(
                "AUT003",
                node,
                f"{name}() of {'a literal' if literal else 'a computed string'}",
                Severity.MEDIUM if literal else Severity.HIGH,
            )
        elif name == "__import__":
            self.add("AUT003", node, "__import__() imports by computed name", Severity.HIGH)
        elif name in ("getattr", "setattr", "delattr") and len(node.args) >= 2:
            if not isinstance(node.args[1], ast.Constant):
                self.add("AUT003", node, f"{name}() with a computed name", Severity.MEDIUM)
        elif name == "open" and node.args:
            self._path(node.args[0], node)
        self.generic_visit(node)

    def _path(self, arg: ast.expr, node: ast.AST) -> None:
        if isinstance(arg, ast.Constant) and isinstance(arg.value, str | bytes):
            text = arg.value if isinstance(arg.value, str) else arg.value.decode("latin-1")
            if text.startswith("/") and not text.startswith(("/workspace", "/tmp")):  # noqa: S108
                self.add(
                    "AUT005",
                    node,
                    f"opens an absolute path outside the workspace: {text}",
                    Severity.MEDIUM,
                )
            elif ".." in text.split("/"):
                self.add("AUT005", node, f"opens a path that climbs out: {text}", Severity.MEDIUM)


def ast_findings(code: str) -> list[Finding]:
    """Our own rules; code that does not parse is left to the sandbox to report."""
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError) as exc:
        line = getattr(exc, "lineno", 0) or 0
        return [Finding("AUT000", line, f"does not parse: {exc.__class__.__name__}", Severity.LOW)]
    rules = _Rules()
    rules.visit(tree)
    return rules.found


# -- Bandit -----------------------------------------------------------------------------------------


def bandit_available() -> bool:
    """Whether the ``sandbox`` extra (Bandit) is installed; checked without importing it."""
    return importlib.util.find_spec("bandit") is not None


@contextlib.contextmanager
def _quiet_bandit() -> Iterator[None]:
    """Bandit logs progress and its plugin loader warns about stevedore deprecations: not ours."""
    logger = logging.getLogger("bandit")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            yield
    finally:
        logger.setLevel(level)


def bandit_findings(code: str) -> list[Finding]:
    """Bandit's findings, run in-process on a temporary file that is always removed."""
    fd, path = tempfile.mkstemp(prefix="autonomic-gate-", suffix=".py")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", errors="surrogateescape") as f:
            f.write(code)
        with _quiet_bandit():
            from bandit.core import config, manager

            mgr = manager.BanditManager(config.BanditConfig(), "file", quiet=True)
            mgr.discover_files([path])
            mgr.run_tests()
            issues = mgr.get_issue_list()
    finally:
        os.unlink(path)
    return [
        Finding(
            rule=str(issue.test_id),
            line=int(issue.lineno),
            message=str(issue.text),
            severity=Severity.parse(str(issue.severity)),
        )
        for issue in issues
    ]


# -- the gate ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Gate:
    """Run the analyses, apply the policy."""

    policy: GatePolicy = field(default_factory=GatePolicy)

    def inspect(self, code: str) -> GateVerdict:
        findings = ast_findings(code)
        parses = not any(f.rule == "AUT000" for f in findings)
        if self.policy.bandit and parses and bandit_available():
            findings += bandit_findings(code)
        judged = tuple(
            sorted(
                (
                    Finding(f.rule, f.line, f.message, f.severity, self.policy.blocks(f))
                    for f in _dedupe(findings)
                    if f.rule not in self.policy.ignore
                ),
                key=lambda f: (f.line, f.rule),
            )
        )
        return GateVerdict(allowed=not any(f.blocked for f in judged), findings=judged)


def _dedupe(findings: Iterable[Finding]) -> list[Finding]:
    seen: set[tuple[str, int, str]] = set()
    out = []
    for f in findings:
        key = (f.rule, f.line, f.message)
        if key not in seen:
            seen.add(key)
            out.append(f)
    return out
