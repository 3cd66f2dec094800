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

**Compact anchors (issue 17, item 3).** An anchor written since issue 17's compaction (the
*compact* form; the form before it is the *spelled-out* one, and both verify and read the same
through ``parse_anchor`` and ``anchor_summary``) costs about half the bytes, without giving up
anything the log proves or keeps:

* the run is named once, by the row's ``run_id`` column, and the record's digest covers that
  column (``record_digest``), so the body no longer repeats it: moving an anchor to another
  run still breaks the log's chain;
* hashes are written as base64 of their 32 bytes (no padding), not 64 hex digits: the chain
  hashes on the first line as one string (each entry's 32 bytes run together), the
  ``*_sha256`` digests of the ``basic`` audit level each as 43 characters; the readers give
  them back as hex. Standard base64, not base64url: ``binascii`` decodes it without a
  translation, which ``verify`` pays once per record;
* the JSON's own keys come in the order ``_summary`` builds them, not sorted (a third of the
  encoding's cost; the text is as deterministic, and ``verify`` hashes the text as stored);
  a value from outside that it keeps whole (a ``full`` audit level's arguments or output, a
  transition's budget, an operator's act) is written as canonical JSON;
* the JSON is the entries' array (an object ``{"act", "e"}`` when an operator's act rides
  along), spells its usual keys and kinds with one letter (``_KEYS``, ``_KINDS``) and leaves a
  result's ``"ok": true`` implied; ``anchor_summary`` restores the spelled-out dict;
* the stores keep the record's own ``hash`` as its 32 raw bytes (SQLite a BLOB in the TEXT
  column, ``adapters/store/sqlite.py``; PostgreSQL ``bytea`` since migration 0010): the chain
  and what every reader sees (hex) do not change.

What an anchor keeps did not change: every entry's seq and chain hash (so ``verify`` still names
the first broken entry, whichever way the run's journal was rewritten), and what each entry did
at its tool's ``audit_level`` (the log must still say what a deleted run did). Held back, with
why: anchoring only a commit's last chain hash (saves 43 bytes an extra entry of a commit, about
one a step, and would lose the position of an edit inside a commit whose chain was recomputed);
dropping from the summary what the journal's chain commits to (the tool, the model's choice: a
deleted run's record would be gone with it).

Pure: no I/O. The stores write what this module builds; ``core/verification.py`` checks it.
"""

from __future__ import annotations

import binascii
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from autonomic.core.canonical import canonical_json, compact_json

__all__ = [
    "AUDIT_LEVELS",
    "GENESIS_HASH",
    "AuditAct",
    "AuditNote",
    "anchor_body",
    "anchor_summary",
    "body_digest",
    "parse_anchor",
    "record_digest",
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
    """The sha256 (hex) of a record's body text: what a record's hash covers, but for a compact
    anchor's (``record_digest``)."""
    return hashlib.sha256(body.encode()).hexdigest()


def record_digest(kind: str, run_id: str | None, body: str) -> str:
    """The digest (hex) a record's hash covers: ``sha256(body)``, but for a compact anchor, whose
    body leaves the run to the row's ``run_id`` column: ``sha256(LEN RUN \n body)``, the run id
    after its length in characters (so the run and the body cannot be shifted into each other,
    and no escaping to do)."""
    if kind == ANCHOR and is_compact(body):
        run = run_id or ""
        return hashlib.sha256(f"{len(run)} {run}\n{body}".encode()).hexdigest()
    return hashlib.sha256(body.encode()).hexdigest()


def is_compact(body: str) -> bool:
    """Whether an anchor's body is the compact form: its first line names no run (a spelled-out
    one always ends with the run as a JSON string)."""
    end = body.find("\n")
    return '"' not in (body if end < 0 else body[:end])


def b64_hashes(hashes: Sequence[str]) -> str:
    """Hex hashes as one base64 string of their bytes run together (no padding: the length says
    how many)."""
    raw = bytes.fromhex("".join(hashes))
    return binascii.b2a_base64(raw, newline=False).decode().rstrip("=")


def hex_hashes(text: str) -> str:
    """``b64_hashes`` undone: the hashes' hex run together (64 digits each); ``ValueError`` when
    ``text`` is not base64 of whole 32-byte hashes."""
    try:
        raw = binascii.a2b_base64(text + "=" * (-len(text) % 4), strict_mode=True)
    except (binascii.Error, ValueError):
        raise ValueError("an anchor's hashes are not base64") from None
    if len(raw) % 32 or b64_len(len(raw)) != len(text):
        raise ValueError("an anchor's hashes are not whole sha256 hashes")
    return raw.hex()


def b64_len(n: int) -> int:
    """The length of ``n`` bytes in unpadded base64."""
    return (4 * n + 2) // 3


def record_hash(prev_hash: str, pos: int, kind: str, digest_hex: str) -> str:
    """The hash that links the record at ``pos`` to the one before it."""
    return hashlib.sha256(f"{prev_hash}\n{pos}\n{kind}\n{digest_hex}".encode()).hexdigest()


_KEYS: Final = {
    "kind": "k",
    "tool": "t",
    "version": "v",
    "chose": "c",
    "arguments_sha256": "a",
    "output_sha256": "o",
}
"""A compact anchor's one-letter spelling of the summary keys most entries have (no summary key
is one letter long, so a key not named here is written as it is)."""
_KINDS: Final = {
    "model.response": "m",
    "tool.intent": "i",
    "tool.result": "r",
    "transition": "t",
    "decision": "d",
    "run.started": "s",
    "approval": "a",
}
"""A compact anchor's one-letter spelling of the usual entry kinds (no kind is one letter)."""
_UNKEYS: Final = {v: k for k, v in _KEYS.items()}
_UNKINDS: Final = {v: k for k, v in _KINDS.items()}
_DIGESTS: Final = ("arguments_sha256", "output_sha256")


_UNSORTED: Final = compact_json(sort_keys=False)
"""A compact anchor's summary encoder: no key sorting, because the summary's dicts are built in
one fixed order here (``_summary``), so the text is as deterministic as canonical JSON and a
third cheaper. A summary that carries a value from outside (a ``full`` audit level's arguments
or output, an operator's act) is written canonically (``canonical_json``) instead."""


def _sha(value: Any) -> str:
    """The sha256 of ``value``'s canonical JSON, as a compact anchor writes it: base64 of its 32
    bytes, no padding (``anchor_summary`` reads it back as hex)."""
    digest = hashlib.sha256(canonical_json(value).encode()).digest()
    return binascii.b2a_base64(digest, newline=False).decode()[:-1]


def _tool_summary(
    kind: str, seq: int, p: Mapping[str, Any], levels: Mapping[str, str], run_id: str
) -> tuple[dict[str, Any], bool]:
    """A ``tool.intent`` or ``tool.result`` as a compact anchor keeps it, and whether it holds a
    value kept whole (``full``), which ``anchor_body`` then writes canonically."""
    tool = str(p.get("tool", ""))
    level = levels.get(tool, "basic") if levels else "basic"
    if kind == "tool.intent":
        out: dict[str, Any] = {"k": "i", "t": tool}
        if level != "basic":
            out["audit"] = level
        out["v"] = p.get("version")
        key = p.get("key")
        if key != f"{run_id}:{seq}":
            out["key"] = key
        if level == "basic":
            out["a"] = _sha(p.get("arguments"))
        elif level == "full":
            out["arguments"] = p.get("arguments")
            return out, True
        return out, False
    out = {"k": "r", "t": tool}
    if level != "basic":
        out["audit"] = level
    ok = p.get("ok")
    if not ok:
        out["ok"] = False
    if p.get("refused"):
        out["refused"] = True
    error = p.get("error")
    if isinstance(error, Mapping):
        out["error"] = error.get("code")
    whole = False
    if ok:
        if level == "basic":
            out["o"] = _sha(p.get("output"))
        elif level == "full":
            out["output"] = p.get("output")
            whole = True
    if p.get("settled"):
        out["settled_by"] = (p.get("settled") or {}).get("by")
    return out, whole


_KEPT: Final[Mapping[str, tuple[str, ...]]] = {
    "decision": ("tool", "verdict", "gate", "risk", "approval_id"),
    "approval": ("approval_id", "tool", "event", "status", "by", "reason"),
    "transition": ("from", "to", "reason", "by", "worker", "budget"),
    "settlement": ("tool", "key", "executed", "by", "reason"),
    # an undo is an effect: which, for what, how it went
    "compensation": ("phase", "step", "tool", "of", "key", "ok", "by", "reason"),
    # a coordinator's graph, hand-offs and their ends
    "subtask": ("phase", "node", "attempt", "agent", "capability", "key", "ok", "source"),
    "run.started": ("agent", "agent_version", "model", "tenant", "requester"),
}
"""What a compact anchor keeps of the entry kinds it keeps fields of as they are (the tool calls
and model responses have their own rules in ``_summary``)."""


def _summary(
    kind: str, seq: int, p: Mapping[str, Any], levels: Mapping[str, str], run_id: str
) -> tuple[dict[str, Any], bool]:
    """One entry as a compact anchor keeps it: its kind and what it did, the usual keys and
    kinds in a letter (``_KEYS``, ``_KINDS``), digests in base64, a result's ``ok: true``
    implied (its seq is the anchor's first line's; an intent's key only when it is not the
    usual ``run_id:seq``: ``anchor_summary`` puts all of it back); and whether it keeps a value
    whole (a ``full`` audit level). The usual kinds first: this runs for every entry written."""
    if kind == "model.response":
        calls = p.get("tool_calls")
        if calls:
            return {"k": "m", "c": [c.get("name") for c in calls if isinstance(c, Mapping)]}, False
        return {"k": "m"}, False
    if kind == "tool.intent" or kind == "tool.result":
        return _tool_summary(kind, seq, p, levels, run_id)
    out: dict[str, Any] = {"k": _KINDS.get(kind, kind)}
    whole = False
    for key in _KEPT.get(kind, ()):
        value = p.get(key)
        if value is not None:
            out[_KEYS.get(key, key)] = value
            whole = whole or value.__class__ not in _SCALARS  # a dict: written canonically
    return out, whole


_SCALARS: Final = frozenset({str, int, float, bool})


def _spelled(entry: Mapping[str, Any]) -> dict[str, Any]:
    """A compact anchor's entry with its keys, kind and digests spelled out again."""
    out: dict[str, Any] = {}
    for key, value in entry.items():
        name = _UNKEYS.get(key, key)
        if name == "kind":
            value = _UNKINDS.get(value, value)
        elif name in _DIGESTS:
            value = hex_hashes(str(value))
        out[name] = value
    if out.get("kind") == "tool.result":
        out.setdefault("ok", True)
    return out


def anchor_body(
    run_id: str,
    entries: Sequence[tuple[int, str, str, Mapping[str, Any]]],
    note: AuditNote = NO_NOTE,
) -> str:
    """The body of the (compact) anchor of one commit of ``run_id``: a first line for machines,
    then JSON.

    ``entries``: ``(seq, kind, chain hash, payload)`` of each entry the commit writes, in order
    (consecutive seqs). The first line is ``FIRST_SEQ HASHES``: the first entry's seq and the
    entries' chain hashes, their bytes run together in base64; ``verify`` reads only that
    line (``parse_anchor``). The JSON after it says what each entry did, for people and exports
    (``anchor_summary`` spells it out). The run is the record's ``run_id`` column, covered by
    the record's hash through ``record_digest``, which covers the body too.
    """
    first = entries[0][0] if entries else 0
    consecutive = True
    expected = first
    levels = note.levels
    done: list[dict[str, Any]] = []
    hashes: list[str] = []
    whole = note.act is not None  # anything from outside is written canonically
    for seq, kind, chain, p in entries:
        if seq != expected:
            consecutive = False
        expected += 1
        hashes.append(chain)
        summary, kept = _summary(kind, seq, p, levels, run_id)
        done.append(summary)
        whole = whole or kept
    # the entries alone, as a JSON array; with an operator's act, an object of both
    text = (
        canonical_json({"act": note.act.to_dict(), "e": done})
        if note.act is not None
        else canonical_json(done)
        if whole
        else _UNSORTED(done)
    )
    if consecutive:
        line = f"{first} {b64_hashes(hashes)}"
    else:  # never from the engine; a store's own callers may: each seq named (``-`` first)
        line = f"- {','.join(f'{s}:{b64_hashes([h])}' for s, _, h, _ in entries)}"
    return f"{line}\n{text}"


def parse_anchor(body: str, run_id: str | None = None) -> tuple[str, list[tuple[int, str]], str]:
    """``(run_id, [(seq, chain hash hex)], summary JSON)`` of an anchor's body, either form;
    ``ValueError`` when it is not one. ``run_id``: the record's column, which a compact anchor
    leaves the run to (a spelled-out one names it in its first line)."""
    line, _, summary = body.partition("\n")
    if '"' not in line:  # compact
        if run_id is None:
            raise ValueError("a compact anchor's run is its record's run_id, and it has none")
        first, joined = line.split(" ", 1)
        if first == "-":
            pairs = []
            for part in joined.split(","):
                seq, _, text = part.partition(":")
                pairs.append((int(seq), hex_hashes(text)))
            return run_id, pairs, summary
        hexes = hex_hashes(joined)
        start = int(first)
        return (
            run_id,
            [(start + i // 64, hexes[i : i + 64]) for i in range(0, len(hexes), 64)],
            summary,
        )
    first, joined, run = line.split(" ", 2)
    if first == "-":
        pairs = [(int(a), b) for a, _, b in (p.partition(":") for p in joined.split(",") if p)]
    elif len(joined) % 64:
        raise ValueError("an anchor's hashes are not 64 hex digits each")
    else:
        pairs = [(int(first) + i // 64, joined[i : i + 64]) for i in range(0, len(joined), 64)]
    named = run[1:-1] if "\\" not in run else json.loads(run)
    if not (run.startswith('"') and run.endswith('"')):
        raise ValueError("an anchor's run is not a JSON string")
    return str(named), pairs, summary


def anchor_summary(body: str, run_id: str | None = None) -> dict[str, Any]:
    """What an anchor says each entry did (its JSON part), spelled out, with each entry's seq and
    chain hash (hex) and the run; ``run_id`` is the record's column (a compact anchor's run).

    Every form reads the same here: the compact one (``anchor_body``), the one written between
    issue 17's first cut and the compaction (the run in the first line, no seq, no usual intent
    key in the JSON), and the first release's (all of it in the JSON)."""
    rid, pairs, summary = parse_anchor(body, run_id)
    read = json.loads(summary)
    data: dict[str, Any]
    if isinstance(read, list):  # compact, no act
        data = {"entries": [_spelled(e) for e in read]}
    elif "e" in read:  # compact, with an act
        data = read
        data["entries"] = [_spelled(e) for e in data.pop("e")]
    else:
        data = read
    data.setdefault("run", rid)
    for entry, (seq, chain) in zip(data["entries"], pairs, strict=True):
        entry.setdefault("seq", seq)
        entry["hash"] = chain
        if entry.get("kind") == "tool.intent" and "key" not in entry:
            entry["key"] = f"{rid}:{seq}"
    return data


def act_body(act: AuditAct, run_id: str | None = None) -> str:
    """The body of a record for an act that wrote no journal entry."""
    body: dict[str, Any] = {"act": act.to_dict()}
    if run_id is not None:
        body["run"] = run_id
    return canonical_json(body)
