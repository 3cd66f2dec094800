"""The audit log's records: what a commit anchors, what an operator did, and how they chain.

The journal's hash chain is per run: it shows an edit, but not a run's journal cut short or a run
deleted whole, because nothing outside the run remembers how far it had got. The audit log is
that memory: one global, append-only, hash-chained log. Every commit that writes journal entries
also appends one **anchor** record, in the same transaction, naming the run, each entry's seq,
kind and chain hash, and what the entry did (the action, the decision, the approval and who gave
it), with arguments and results kept as the tool's ``audit_level`` says. An operator's act
(cancel, forced resume, budget raise, settlement, an approval vote, a policy change) rides in the
anchor of the commit it made, with who did it; an act that changes no run is a record of its own.

A record's hash is ``sha256(prev_hash \\n pos \\n kind \\n sha256(body))``: the record before it is
the one at ``pos - 1``, a genesis record at ``pos 0`` (written by the migration, hash
``GENESIS_HASH``) starts the log. Both stores compute the same bytes (PostgreSQL in SQL, under
its lock; SQLite in Python, under its write lock), so ``verify`` needs no store to check it.

Pure: no I/O. The stores write what this module builds; ``core/verification.py`` checks it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from autonomic.core.canonical import canonical_json

__all__ = [
    "AUDIT_LEVELS",
    "GENESIS_HASH",
    "AuditAct",
    "AuditNote",
    "anchor_body",
    "body_digest",
    "record_hash",
]

GENESIS_HASH: Final = "0" * 64
"""The hash of the genesis record (``pos 0``) every audit log starts with."""

ANCHOR: Final = "anchor"
"""A commit's record: the entries it wrote (and the act it carried)."""
ACT: Final = "act"
"""An operator's act that wrote no journal entry (a policy change, say)."""
CHECKPOINT: Final = "checkpoint"
"""A signed statement of the log's head and length (``autonomic audit checkpoint``)."""

AUDIT_LEVELS: Final = ("full", "basic", "none")
"""What the audit log keeps of a tool call's arguments and result: everything, their sha256
only (the default), or nothing. The journal keeps them whole either way: a replay needs them."""


@dataclass(frozen=True, slots=True)
class AuditAct:
    """Something a person (or a program on their behalf) did, with who did it.

    Args:
        act: what, as a dotted name: ``run.cancel``, ``run.reopen``, ``budget.raise``,
            ``run.settle``, ``approval.vote``, ``policy.change``...
        by: who (an operator's name, an approver, ``operator`` when the door knows no name).
        detail: what else an auditor needs (a reason, the new limits); JSON values.
    """

    act: str
    by: str
    detail: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"act": self.act, "by": self.by}
        if self.detail:
            out["detail"] = dict(self.detail)
        return out


@dataclass(frozen=True, slots=True)
class AuditNote:
    """What a writer tells the store about a commit beyond its entries.

    Args:
        levels: each tool's ``audit_level`` by tool name (``full``/``basic``/``none``); a tool
            not named is ``basic``.
        act: the operator's act this commit carries, if any.
    """

    levels: Mapping[str, str] = field(default_factory=dict)
    act: AuditAct | None = None


NO_NOTE: Final = AuditNote()


def body_digest(body: str) -> str:
    """The sha256 (hex) of a record's body text, as its hash covers it."""
    return hashlib.sha256(body.encode()).hexdigest()


def record_hash(prev_hash: str, pos: int, kind: str, digest_hex: str) -> str:
    """The hash that links the record at ``pos`` to the one before it."""
    return hashlib.sha256(f"{prev_hash}\n{pos}\n{kind}\n{digest_hex}".encode()).hexdigest()


def _sha(value: Any) -> str:
    return hashlib.sha256(canonical_json(value).encode()).hexdigest()


def _kept(out: dict[str, Any], name: str, value: Any, level: str) -> None:
    """Keep ``value`` under ``name`` as ``level`` says: whole, as a hash, or not at all."""
    if level == "full":
        out[name] = value
    elif level != "none":
        out[f"{name}_sha256"] = _sha(value)


def _summary(
    kind: str, seq: int, chain: str, p: Mapping[str, Any], levels: Mapping[str, str]
) -> dict[str, Any]:
    """One entry as the audit log keeps it: position, kind and chain hash, and what it did."""
    out: dict[str, Any] = {"seq": seq, "kind": kind, "hash": chain}
    if kind in ("tool.intent", "tool.result"):
        tool = str(p.get("tool", ""))
        level = levels.get(tool, "basic")
        out["tool"] = tool
        if level != "basic":
            out["audit"] = level
        if kind == "tool.intent":
            out["version"] = p.get("version")
            out["key"] = p.get("key")
            _kept(out, "arguments", p.get("arguments"), level)
        else:
            out["ok"] = bool(p.get("ok"))
            if p.get("refused"):
                out["refused"] = True
            error = p.get("error")
            if isinstance(error, Mapping):
                out["error"] = error.get("code")
            if p.get("ok"):
                _kept(out, "output", p.get("output"), level)
            if p.get("settled"):
                out["settled_by"] = (p.get("settled") or {}).get("by")
    elif kind == "decision":
        for key in ("tool", "verdict", "gate", "risk", "approval_id"):
            if p.get(key) is not None:
                out[key] = p[key]
    elif kind == "approval":
        for key in ("approval_id", "tool", "event", "status", "by", "reason"):
            if p.get(key) is not None:
                out[key] = p[key]
    elif kind == "transition":
        for key in ("from", "to", "reason", "by", "worker", "budget"):
            if p.get(key) is not None:
                out[key] = p[key]
    elif kind == "settlement":
        for key in ("tool", "key", "executed", "by", "reason"):
            if p.get(key) is not None:
                out[key] = p[key]
    elif kind == "run.started":
        for key in ("agent", "agent_version", "model", "tenant", "requester"):
            if p.get(key) is not None:
                out[key] = p[key]
    elif kind == "model.response":
        calls = p.get("tool_calls") or ()
        if calls:
            out["chose"] = [c.get("name") for c in calls if isinstance(c, Mapping)]
    return out


def anchor_body(
    run_id: str,
    entries: Sequence[tuple[int, str, str, Mapping[str, Any]]],
    note: AuditNote = NO_NOTE,
) -> str:
    """The body (canonical JSON) of the anchor of one commit of ``run_id``.

    ``entries``: ``(seq, kind, chain hash, payload)`` of each entry the commit writes, in order.
    """
    body: dict[str, Any] = {
        "run": run_id,
        "entries": [_summary(k, s, h, p, note.levels) for s, k, h, p in entries],
    }
    if note.act is not None:
        body["act"] = note.act.to_dict()
    return canonical_json(body)


def act_body(act: AuditAct, run_id: str | None = None) -> str:
    """The body of a record for an act that wrote no journal entry."""
    body: dict[str, Any] = {"act": act.to_dict()}
    if run_id is not None:
        body["run"] = run_id
    return canonical_json(body)
