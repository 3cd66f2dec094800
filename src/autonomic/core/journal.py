"""Journal entries: the append-only record of everything a run did, keyed ``(run_id, seq)``.

The journal stores *deltas*: each model response adds the one new assistant message, each tool result
the one new observation; the prompt is never stored again. Payloads larger than a threshold move to a
content-addressed blob, so the bytes a step adds to the journal stay flat however long the
conversation grows. Each entry's hash chains to the one before it, so any edit shows. The hash
is hex here and to every reader; the stores keep its 32 bytes (``adapters/store/rows.py``).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from autonomic.core.canonical import canonical_json, digest
from autonomic.core.entries import KINDS, Body, EntryKind, decode

__all__ = [
    "BLOB_THRESHOLD",
    "GENESIS_HASH",
    "Blob",
    "Body",
    "Entry",
    "EntryKind",
    "PackedEntry",
    "blob_reference",
    "chain_hash",
    "pack",
    "record",
]

BLOB_THRESHOLD = 2048
"""Payloads whose canonical JSON is longer than this many bytes are stored as blobs."""

GENESIS_HASH = "0" * 64
"""The ``prev_hash`` of a run's first entry."""


@dataclass(frozen=True, slots=True)
class Entry:
    """One journal entry as the engine sees it (payload always resolved, never a blob reference)."""

    run_id: str
    seq: int
    kind: EntryKind
    payload: dict[str, Any]
    created_at: float
    hash: str
    _body: Body | None = field(default=None, compare=False, repr=False)

    @property
    def body(self) -> Body:
        """The entry as its typed value (``core/entries.py``)."""
        if self._body is not None:
            return self._body
        return decode(self.kind, self.payload)


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
    body: Body | None = None,
) -> PackedEntry:
    """Build the entry for ``payload`` and decide whether its payload goes inline or to a blob.

    ``body``: the typed value ``payload`` encodes, kept on the entry so the fold need not decode
    what was just encoded (``record`` passes it)."""
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
        _body=body,
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


def record(run_id: str, seq: int, body: Body, *, prev_hash: str, created_at: float) -> PackedEntry:
    """``pack`` for a typed entry: its kind and payload come from ``body``."""
    return pack(
        run_id,
        seq,
        KINDS[type(body)],
        body.to_payload(),
        prev_hash=prev_hash,
        created_at=created_at,
        body=body,
    )
