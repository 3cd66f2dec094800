"""The static-analysis gate: look at generated code before it reaches a sandbox.

It is a filter, not the boundary: the sandbox assumes the gate let everything through. What the
gate buys: code that reaches outside what data work needs is refused before it costs a sandbox,
and every finding — blocked or merely warned — is returned so the ``python_exec`` tool journals it
with the step for the audit trail.

The rules allow-list rather than deny-list (``code_rules``): only modules on the policy's import
list, no dynamic imports or code, no namespace introspection, no computed attribute names, no
dunder walks, modules used only as ``module.name``, ``open`` only on literal paths inside the
work dir. Bandit's findings (``B...``, when the ``sandbox`` extra is installed; in-process and
offline) are added as warnings. A ``CodePolicy`` holds the lists and decides which findings block:
by default those of HIGH severity (every ``AUT`` rule); it comes from a policy file's
``code_gate:`` section (``governance.policy.code_policy``) and the ``AUTONOMIC_SANDBOX_GATE``
setting, e.g. ``allow_imports=numpy;open=none;ignore=B404``.

The gate speaks governance's vocabulary: ``CodeGate.inspect(code)`` answers with a ``Decision``
(``BLOCK`` or ``ALLOW``, gate ``code``) whose ``Finding``s carry the rule as their code, the
severity as their risk and the line in their evidence; ``finding_record`` is the journal's form.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import tempfile
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from autonomic.errors import ConfigError
from autonomic.governance.code_rules import (
    CHECK,
    DEFAULT_DUNDERS,
    DEFAULT_IMPORTS,
    OPEN_MODES,
    Allowances,
    OpenMode,
    ast_findings,
    finding,
)
from autonomic.governance.decision import Decision, Finding, Risk, Verdict
from autonomic.ports.sandbox import Ended, Result

__all__ = [
    "CHECK",
    "DEFAULT_DUNDERS",
    "DEFAULT_IMPORTS",
    "CodeGate",
    "CodePolicy",
    "ast_findings",
    "bandit_available",
    "bandit_findings",
    "finding",
    "finding_record",
    "refusal",
    "severity",
]


def severity(text: str) -> Risk:
    """``low`` / ``medium`` / ``high``: how severe a finding is (governance's ``Risk``)."""
    try:
        return Risk.parse(text)
    except ValueError:
        raise ConfigError(
            f"unknown gate severity {text!r}", hint="use low, medium or high"
        ) from None


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
    """What code may reach (the allow-lists) and which findings block: at or above
    ``block_at``, plus ``block``, minus ``ignore``."""

    block_at: Risk = Risk.HIGH
    block: frozenset[str] = frozenset()
    ignore: frozenset[str] = frozenset()
    bandit: bool = True
    imports: frozenset[str] = DEFAULT_IMPORTS
    """Modules code may import (a package allows its submodules)."""
    dunders: frozenset[str] = DEFAULT_DUNDERS
    """Dunder names code may use; any other is an escape gadget."""
    open: OpenMode = "workspace"
    """``none``: no ``open``; ``workspace``: literal paths inside the work dir; ``any``."""

    def __post_init__(self) -> None:
        if self.open not in OPEN_MODES:
            raise ConfigError(
                f"unknown code gate open mode {self.open!r}", hint="use none, workspace or any"
            )

    @property
    def allowances(self) -> Allowances:
        return Allowances(imports=self.imports, dunders=self.dunders, open=self.open)

    @classmethod
    def parse(cls, text: str, base: CodePolicy | None = None) -> CodePolicy:
        """``block_at=high;block=AUT003,B602;ignore=B404;bandit=off;imports=json,csv;
        allow_imports=numpy;deny_imports=random;open=none`` (every part optional), applied on
        ``base`` (the policy file's, or the default)."""
        policy = base or cls()
        options: dict[str, Any] = {}
        for part in filter(None, (p.strip() for p in text.split(";"))):
            key, sep, value = part.partition("=")
            key = key.strip()
            if not sep:
                raise ConfigError(
                    f"gate policy part {part!r} is not key=value",
                    hint="e.g. block_at=medium;ignore=B404",
                )
            names = frozenset(r.strip() for r in value.split(",") if r.strip())
            if key == "block_at":
                options["block_at"] = severity(value)
            elif key in ("block", "ignore"):
                options[key] = frozenset(n.upper() for n in names)
            elif key == "bandit":
                if value.strip() not in ("on", "off"):
                    raise ConfigError(f"gate policy bandit={value!r}", hint="use bandit=on or off")
                options["bandit"] = value.strip() == "on"
            elif key == "imports":
                options["imports"] = names
            elif key == "allow_imports":
                options["imports"] = options.get("imports", policy.imports) | names
            elif key == "deny_imports":
                options["imports"] = options.get("imports", policy.imports) - names
            elif key == "open":
                options["open"] = value.strip()
            else:
                raise ConfigError(
                    f"unknown gate policy key {key!r}",
                    hint="known keys: block_at, block, ignore, bandit, imports, allow_imports, "
                    "deny_imports, open",
                )
        return replace(policy, **options)

    def blocks(self, finding: Finding) -> bool:
        if finding.code in self.ignore:
            return False
        risk = finding.risk or Risk.LOW
        return finding.code in self.block or risk >= self.block_at


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
        found = ast_findings(code, self.policy.allowances)
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
