"""The static-analysis gate: look at generated code before it reaches a sandbox.

It is a filter, not the boundary. Python is too dynamic for any static check to be complete
(``getattr(__builtins__, "ev" + "al")``), so the sandbox assumes the gate let everything through.
What the gate buys: obviously hostile or careless code (shelling out, raw sockets, ``ctypes``,
reading ``/etc``) is refused before it costs a sandbox, and every finding — blocked or merely
warned — is returned so the ``python_exec`` tool journals it with the step for the audit trail.

Two analyses run: our own AST rules (``AUT...``, always) and Bandit's (``B...``, when the
``sandbox`` extra is installed; it runs in-process and offline). A ``CodePolicy`` decides which
findings block: by default those of HIGH severity; per-rule overrides come from code or from the
``AUTONOMIC_SANDBOX_GATE`` setting, e.g. ``block_at=medium;ignore=B404;block=AUT003``.

The gate speaks governance's vocabulary: ``CodeGate.inspect(code)`` answers with a ``Decision``
(``BLOCK`` or ``ALLOW``, gate ``code``) whose ``Finding``s carry the rule as their code, the
severity as their risk and the line in their evidence; ``finding_record`` is the journal's form.
"""

from __future__ import annotations

import ast
import contextlib
import importlib.util
import logging
import os
import tempfile
import warnings
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from autonomic.errors import ConfigError
from autonomic.governance.decision import Decision, Finding, Risk, Verdict
from autonomic.ports.sandbox import Ended, Result

CHECK = "code"
"""The name the code gate's findings and decisions carry."""


def severity(text: str) -> Risk:
    """``low`` / ``medium`` / ``high``: how severe a finding is (governance's ``Risk``)."""
    try:
        return Risk.parse(text)
    except ValueError:
        raise ConfigError(
            f"unknown gate severity {text!r}", hint="use low, medium or high"
        ) from None


def finding(rule: str, line: int, message: str, risk: Risk, *, blocked: bool = False) -> Finding:
    """What the gate noticed at ``line``, as governance's ``Finding``: the rule is its code, the
    severity its risk, and a blocking finding asks for ``BLOCK`` (a warning for ``ALLOW``)."""
    verdict = Verdict.BLOCK if blocked else Verdict.ALLOW
    return Finding(CHECK, rule, verdict, message, {"line": line}, risk=risk)


def finding_record(f: Finding) -> dict[str, Any]:
    """A finding as the tool result records it for the journal (the shape 0.1 wrote)."""
    return {
        "rule": f.code,
        "line": f.evidence.get("line", 0),
        "message": f.reason,
        "severity": (f.risk or Risk.LOW).name.lower(),
        "blocked": f.verdict is Verdict.BLOCK,
    }


def refusal(decision: Decision) -> Result:
    """The sandbox result that stands for code the gate refused (it never ran)."""
    return Result(
        ended=Ended.REFUSED,
        exit_code=None,
        stdout="",
        stderr="",
        stdout_truncated=False,
        stderr_truncated=False,
        duration_s=0.0,
        backend="gate",
        detail=f"refused by the static-analysis gate: {decision.explanation}",
    )


@dataclass(frozen=True, slots=True)
class CodePolicy:
    """Which findings block: at or above ``block_at``, plus ``block``, minus ``ignore``."""

    block_at: Risk = Risk.HIGH
    block: frozenset[str] = frozenset()
    ignore: frozenset[str] = frozenset()
    bandit: bool = True

    @classmethod
    def parse(cls, text: str) -> CodePolicy:
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
                options["block_at"] = severity(value)
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
        if finding.code in self.ignore:
            return False
        risk = finding.risk or Risk.LOW
        return finding.code in self.block or risk >= self.block_at


# -- our AST rules ---------------------------------------------------------------------------------

MODULES: Mapping[str, tuple[Risk, str]] = {
    "ctypes": (Risk.HIGH, "ctypes reaches raw memory and any syscall"),
    "cffi": (Risk.HIGH, "cffi reaches raw memory and any syscall"),
    "subprocess": (Risk.HIGH, "runs other programs"),
    "pty": (Risk.HIGH, "spawns terminals"),
    "socket": (Risk.HIGH, "opens network sockets"),
    "mmap": (Risk.MEDIUM, "maps memory and files"),
    "multiprocessing": (Risk.MEDIUM, "starts processes"),
    "signal": (Risk.LOW, "handles signals"),
    "importlib": (Risk.MEDIUM, "imports modules by computed name"),
    "marshal": (Risk.MEDIUM, "loads code objects"),
    "pickle": (Risk.MEDIUM, "unpickling runs code"),
    "shutil": (Risk.LOW, "copies and deletes trees"),
    "urllib": (Risk.MEDIUM, "makes network requests"),
    "http": (Risk.MEDIUM, "makes network requests"),
    "ftplib": (Risk.MEDIUM, "makes network requests"),
    "smtplib": (Risk.MEDIUM, "sends mail"),
    "telnetlib": (Risk.MEDIUM, "makes network connections"),
    "requests": (Risk.MEDIUM, "makes network requests"),
    "resource": (Risk.LOW, "changes resource limits"),
}
OS_CALLS: Mapping[str, tuple[Risk, str]] = {
    "system": (Risk.HIGH, "runs a shell command"),
    "popen": (Risk.HIGH, "runs a shell command"),
    "fork": (Risk.MEDIUM, "forks a process"),
    "forkpty": (Risk.HIGH, "forks a terminal"),
    "kill": (Risk.MEDIUM, "signals a process"),
    "killpg": (Risk.MEDIUM, "signals a process group"),
    "setuid": (Risk.HIGH, "changes identity"),
    "chroot": (Risk.HIGH, "changes the root directory"),
    "mknod": (Risk.HIGH, "creates device nodes"),
}
OS_PREFIXES = (("exec", Risk.HIGH, "replaces the process"), ("spawn", Risk.HIGH, "spawns"))
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

    def add(self, rule: str, node: ast.AST, message: str, risk: Risk) -> None:
        self.found.append(finding(rule, getattr(node, "lineno", 0), message, risk))

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
            self.add("AUT004", node, f"reaches {node.attr}, a sandbox-escape gadget", Risk.HIGH)
        self.generic_visit(node)

    def visit_Name(self, node: ast.Name) -> None:
        if node.id == "__builtins__":
            self.add("AUT004", node, "reaches __builtins__, a sandbox-escape gadget", Risk.HIGH)

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        name = func.id if isinstance(func, ast.Name) else None
        if name in DYNAMIC_CALLS:
            literal = bool(node.args) and isinstance(node.args[0], ast.Constant)
            self.add(
                "AUT003",
                node,
                f"{name}() of {'a literal' if literal else 'a computed string'}",
                Risk.MEDIUM if literal else Risk.HIGH,
            )
        elif name == "__import__":
            self.add("AUT003", node, "__import__() imports by computed name", Risk.HIGH)
        elif name in ("getattr", "setattr", "delattr") and len(node.args) >= 2:
            if not isinstance(node.args[1], ast.Constant):
                self.add("AUT003", node, f"{name}() with a computed name", Risk.MEDIUM)
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
                    Risk.MEDIUM,
                )
            elif ".." in text.split("/"):
                self.add("AUT005", node, f"opens a path that climbs out: {text}", Risk.MEDIUM)


def ast_findings(code: str) -> list[Finding]:
    """Our own rules; code that does not parse is left to the sandbox to report."""
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError) as exc:
        line = getattr(exc, "lineno", 0) or 0
        return [finding("AUT000", line, f"does not parse: {exc.__class__.__name__}", Risk.LOW)]
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
        finding(
            str(issue.test_id), int(issue.lineno), str(issue.text), severity(str(issue.severity))
        )
        for issue in issues
    ]


# -- the gate ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CodeGate:
    """Run the analyses, apply the policy; answer as every gate does, with a ``Decision``."""

    policy: CodePolicy = field(default_factory=CodePolicy)

    def inspect(self, code: str) -> Decision:
        """``BLOCK`` when a finding blocks (the explanation names each), else ``ALLOW`` with the
        warnings; every finding, ordered by line, goes to the journal with the step."""
        found = ast_findings(code)
        parses = not any(f.code == "AUT000" for f in found)
        if self.policy.bandit and parses and bandit_available():
            found += bandit_findings(code)
        judged = tuple(
            sorted(
                (
                    replace(f, verdict=Verdict.BLOCK if self.policy.blocks(f) else Verdict.ALLOW)
                    for f in _dedupe(found)
                    if f.code not in self.policy.ignore
                ),
                key=lambda f: (f.evidence.get("line", 0), f.code),
            )
        )
        blocking = [f for f in judged if f.verdict is Verdict.BLOCK]
        risks = [f.risk for f in judged if f.risk is not None]
        return Decision(
            Verdict.BLOCK if blocking else Verdict.ALLOW,
            "; ".join(f"{f.code} line {f.evidence.get('line')}: {f.reason}" for f in blocking),
            gate=CHECK,
            risk=max(risks) if risks else None,
            findings=judged,
        )


def _dedupe(findings: Iterable[Finding]) -> list[Finding]:
    seen: set[tuple[str, int, str]] = set()
    out = []
    for f in findings:
        key = (f.code, int(f.evidence.get("line", 0)), f.reason)
        if key not in seen:
            seen.add(key)
            out.append(f)
    return out
