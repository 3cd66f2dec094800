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
import json
import re
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
    "anchor_summary",
    "body_digest",
    "parse_anchor",
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
    kind: str, seq: int, p: Mapping[str, Any], levels: Mapping[str, str], run_id: str
) -> dict[str, Any]:
    """One entry as the audit log keeps it: its kind and what it did (its seq is the anchor's
    first line's; an intent's key only when it is not the usual ``run_id:seq``: both are put
    back by ``anchor_summary``)."""
    out: dict[str, Any] = {"kind": kind}
    if kind in ("tool.intent", "tool.result"):
        tool = str(p.get("tool", ""))
        level = levels.get(tool, "basic")
        out["tool"] = tool
        if level != "basic":
            out["audit"] = level
        if kind == "tool.intent":
            out["version"] = p.get("version")
            key = p.get("key")
            if key != f"{run_id}:{seq}":
                out["key"] = key
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
    elif kind == "compensation":  # an undo is an effect: which, for what, how it went
        for key in ("phase", "step", "tool", "of", "key", "ok", "by", "reason"):
            if p.get(key) is not None:
                out[key] = p[key]
    elif kind == "subtask":  # a coordinator's graph, hand-offs and their ends
        for key in ("phase", "node", "attempt", "agent", "capability", "key", "ok", "source"):
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
    """The body of the anchor of one commit of ``run_id``: a first line for machines, then JSON.

    ``entries``: ``(seq, kind, chain hash, payload)`` of each entry the commit writes, in order
    (consecutive seqs). The first line is ``FIRST_SEQ HASHES RUN``: the first entry's seq, the
    entries' chain hashes run together (64 hex digits each), and the run id as a JSON string;
    ``verify`` reads only that line (``parse_anchor``). The JSON after it says what each entry
    did, for people and exports. The record's hash covers both.
    """
    first = entries[0][0] if entries else 0
    consecutive = True
    expected = first
    for entry in entries:
        if entry[0] != expected:
            consecutive = False
            break
        expected += 1
    levels = note.levels
    summary: dict[str, Any] = {
        "entries": [_summary(k, s, p, levels, run_id) for s, k, _, p in entries]
    }
    if note.act is not None:
        summary["act"] = note.act.to_dict()
    # the run id as JSON: most ids need no escaping, and json.dumps costs more than the check
    quoted = f'"{run_id}"' if _PLAIN_ID.fullmatch(run_id) else json.dumps(run_id)
    if consecutive:
        line = f"{first} {''.join([h for _, _, h, _ in entries])} {quoted}"
    else:  # never from the engine; a store's own callers may: each seq named (``-`` first)
        line = f"- {','.join(f'{s}:{h}' for s, _, h, _ in entries)} {quoted}"
    return f"{line}\n{canonical_json(summary)}"


_PLAIN_ID: Final = re.compile(r"[A-Za-z0-9_.:@-]*")
"""Characters ``json.dumps`` writes as they are (no escape, ASCII)."""


def parse_anchor(body: str) -> tuple[str, list[tuple[int, str]], str]:
    """``(run_id, [(seq, chain hash)], summary JSON)`` of an anchor's body; ``ValueError``
    when it is not one."""
    line, _, summary = body.partition("\n")
    first, joined, run = line.split(" ", 2)
    if first == "-":
        pairs = [(int(a), b) for a, _, b in (p.partition(":") for p in joined.split(",") if p)]
    elif len(joined) % 64:
        raise ValueError("an anchor's hashes are not 64 hex digits each")
    else:
        pairs = [(int(first) + i // 64, joined[i : i + 64]) for i in range(0, len(joined), 64)]
    run_id = run[1:-1] if "\\" not in run else json.loads(run)
    if not (run.startswith('"') and run.endswith('"')):
        raise ValueError("an anchor's run is not a JSON string")
    return str(run_id), pairs, summary


def anchor_summary(body: str) -> dict[str, Any]:
    """What an anchor says each entry did (its JSON part), with each entry's seq and chain hash
    and the run. Anchors written since issue 17 leave out of the JSON what the first line holds
    (the run, each seq) and an intent's key when it is the usual ``run_id:seq``; both forms read
    the same here."""
    run_id, pairs, summary = parse_anchor(body)
    data: dict[str, Any] = json.loads(summary)
    data.setdefault("run", run_id)
    for entry, (seq, chain) in zip(data["entries"], pairs, strict=True):
        entry.setdefault("seq", seq)
        entry["hash"] = chain
        if entry.get("kind") == "tool.intent" and "key" not in entry:
            entry["key"] = f"{run_id}:{seq}"
    return data


def act_body(act: AuditAct, run_id: str | None = None) -> str:
    """The body of a record for an act that wrote no journal entry."""
    body: dict[str, Any] = {"act": act.to_dict()}
    if run_id is not None:
        body["run"] = run_id
    return canonical_json(body)
