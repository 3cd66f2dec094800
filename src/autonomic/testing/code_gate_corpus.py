"""The code gate's corpora: escapes it must refuse, data-analysis code it must let through.

Two data files beside this module (``code_gate/escapes.txt``, ``code_gate/benign.txt``), each a
list of snippets that start with a ``### name`` line. ``score(gate)`` runs a gate over both and
says which escapes got through and which benign snippets were refused, so a user who changes the
policy (adds ``numpy``, allows ``open: any``) sees at once what the change lets in::

    from autonomic.governance.code_gate import CodeGate, CodePolicy
    from autonomic.testing.code_gate_corpus import score

    report = score(CodeGate(CodePolicy(bandit=False)))
    assert report.escaped == () and report.refused_benign == ()
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from typing import Literal

from autonomic.governance.code_gate import CodeGate

Kind = Literal["escapes", "benign"]


@dataclass(frozen=True, slots=True)
class Snippet:
    """One snippet of a corpus: its name (the ``###`` line) and its code."""

    name: str
    code: str


@dataclass(frozen=True, slots=True)
class Report:
    """What a gate did with both corpora."""

    escapes: int
    benign: int
    escaped: tuple[str, ...]
    """Names of escape snippets the gate allowed (must be empty)."""
    refused_benign: tuple[str, ...]
    """Names of benign snippets the gate refused (must be empty)."""

    @property
    def refusal_rate(self) -> float:
        return 1.0 - len(self.escaped) / self.escapes if self.escapes else 1.0

    @property
    def allow_rate(self) -> float:
        return 1.0 - len(self.refused_benign) / self.benign if self.benign else 1.0


def load(kind: Kind) -> list[Snippet]:
    """The snippets of one corpus, in file order."""
    text = resources.files("autonomic.testing").joinpath(f"code_gate/{kind}.txt").read_text()
    snippets: list[Snippet] = []
    name: str | None = None
    lines: list[str] = []
    for line in text.splitlines():
        if line.startswith("### "):
            if name is not None:
                snippets.append(Snippet(name, "\n".join(lines) + "\n"))
            name, lines = line[4:].strip(), []
        elif name is not None:
            lines.append(line)
    if name is not None:
        snippets.append(Snippet(name, "\n".join(lines) + "\n"))
    return snippets


def score(gate: CodeGate) -> Report:
    """Run ``gate`` over both corpora."""
    escapes, benign = load("escapes"), load("benign")
    return Report(
        escapes=len(escapes),
        benign=len(benign),
        escaped=tuple(s.name for s in escapes if gate.inspect(s.code).allowed),
        refused_benign=tuple(s.name for s in benign if not gate.inspect(s.code).allowed),
    )
