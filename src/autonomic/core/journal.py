"""Journal entries: the append-only record of everything a run did, keyed ``(run_id, seq)``.

The journal stores *deltas*: each model response adds the one new assistant message, each tool result
the one new observation; the prompt is never stored again. Payloads larger than a threshold move to a
content-addressed blob, so the bytes a step adds to the journal stay flat however long the
conversation grows. Each entry's hash chains to the one before it, so any edit shows.
"""

from __future__ import annotations

import enum
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from autonomic.core.canonical import canonical_json, digest

BLOB_THRESHOLD = 2048
"""Payloads whose canonical JSON is longer than this many bytes are stored as blobs."""

GENESIS_HASH = "0" * 64
"""The ``prev_hash`` of a run's first entry."""


class EntryKind(enum.StrEnum):
    """What an entry records. The fold in ``state.py`` gives each kind its meaning."""

    RUN_STARTED = "run.started"
    MODEL_RESPONSE = "model.response"
    TOOL_INTENT = "tool.intent"
    TOOL_RESULT = "tool.result"
    TRANSITION = "transition"
    RECOVERY = "recovery"
    DECISION = "decision"
    """The action gates' verdict on one proposed tool call, journaled before any effect."""
    APPROVAL = "approval"
    """A human (or the clock) acted on an approval: a vote, an escalation, the outcome."""
    WORKFLOW = "workflow.transition"
    """The run's state-machine workflow moved from one state to another."""
    SUMMARY = "summary"
    """Context compression replaced the conversation by a shorter one (journaled whole, so a
    replay folds the same prompt without a tokenizer or a second summarisation call)."""
    PLAN = "plan"
    """The planning phase's outcome: a plan from the cache or the planner (with the call's usage
    and cost), or why the run goes on without one."""


@dataclass(frozen=True, slots=True)
class Entry:
    """One journal entry as the engine sees it (payload always resolved, never a blob reference)."""

    run_id: str
    seq: int
    kind: EntryKind
    payload: dict[str, Any]
    created_at: float
    hash: str


@dataclass(frozen=True, slots=True)
class Blob:
    """Content-addressed bytes: ``address`` is the sha256 of ``data``."""

    address: str
    data: bytes


@dataclass(frozen=True, slots=True)
class PackedEntry:
    """An entry ready for storage: the text for the journal row and the blob it points to, if any."""

    entry: Entry
    text: str
    blob: Blob | None


def chain_hash(prev_hash: str, seq: int, kind: str, payload_address: str) -> str:
    """The hash that links an entry to its predecessor."""
    material = f"{prev_hash}\n{seq}\n{kind}\n{payload_address}".encode()
    return hashlib.sha256(material).hexdigest()


def pack(
    run_id: str,
    seq: int,
    kind: EntryKind,
    payload: dict[str, Any],
    *,
    prev_hash: str,
    created_at: float,
    threshold: int = BLOB_THRESHOLD,
) -> PackedEntry:
    """Build the entry for ``payload`` and decide whether its payload goes inline or to a blob."""
    text = canonical_json(payload)
    data = text.encode()
    address = digest(data)
    entry = Entry(
        run_id=run_id,
        seq=seq,
        kind=kind,
        payload=payload,
        created_at=created_at,
        hash=chain_hash(prev_hash, seq, kind.value, address),
    )
    if len(data) <= threshold:
        return PackedEntry(entry=entry, text=text, blob=None)
    ref = canonical_json({"$blob": address, "size": len(data)})
    return PackedEntry(entry=entry, text=ref, blob=Blob(address=address, data=data))


def blob_reference(text: str) -> str | None:
    """The blob address if a stored payload text is a blob reference, else ``None``."""
    if text.startswith('{"$blob":'):
        ref: dict[str, Any] = json.loads(text)
        return str(ref["$blob"])
    return None
