"""Checking the audit log and the journals it anchors: where the first break is, and what kind.

Two checkers, fed rows in order, one pass each (``autonomic.audit.verify`` streams them from the
store, or from an export):

* ``LogChecker`` walks the audit log by ``pos``: every record must chain to the one before it
  (``core/audit.py``). On the way it collects what each anchor says a run's journal holds: each
  entry's seq and chain hash.
* ``RunChecker`` compares one run's journal, as stored, with what was anchored. Whoever can drop
  the triggers can rewrite a run's entries and recompute its whole chain so that it checks by
  itself; they cannot make it match the anchors without rewriting the log after it too, which
  breaks the log's chain (and a signed checkpoint, which nobody without the key can remake).

The kind of a break is read from what is where: an entry whose content belongs to another
position was moved (``reordered``, or ``deleted`` when everything after it moved up one); a
position whose entry is missing was ``deleted`` (``truncated`` if nothing follows); content that
was never anchored is ``inserted`` when the anchored entry follows it, ``edited`` when not. A run
the log anchored whose journal is gone is ``run deleted``. Pure: no I/O.
"""

from __future__ import annotations

import binascii
import enum
import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from autonomic.core.audit import GENESIS_HASH as LOG_GENESIS
from autonomic.core.audit import parse_anchor, record_digest, record_hash
from autonomic.core.journal import GENESIS_HASH, chain_hash


class BreakKind(enum.StrEnum):
    """What was done to the record, as far as the data shows."""

    EDITED = "edited"
    INSERTED = "inserted"
    DELETED = "deleted"
    TRUNCATED = "truncated"
    REORDERED = "reordered"
    RUN_DELETED = "run deleted"
    LOG_EDITED = "log edited"
    LOG_DELETED = "log deleted"
    LOG_TRUNCATED = "log truncated"
    BLOB_EDITED = "blob edited"
    BAD_SIGNATURE = "bad signature"


@dataclass(frozen=True, slots=True)
class Break:
    """The first place a record stops being what was written.

    Attributes:
        kind: what was done.
        run_id: the run, for a journal break; ``None`` for the log itself.
        position: the entry's seq (journal), the record's pos (log).
        detail: one line for a person.
    """

    kind: BreakKind
    run_id: str | None
    position: int
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind.value,
            "run_id": self.run_id,
            "position": self.position,
            "detail": self.detail,
        }

    def __str__(self) -> str:
        where = (
            f"run {self.run_id} entry {self.position}"
            if self.run_id
            else f"log record {self.position}"
        )
        return f"{self.kind.value} at {where}: {self.detail}"


def payload_address(text: str) -> str:
    """The content address a journal row's payload text was chained with (its blob's, when the
    row holds a blob reference)."""
    if text.startswith('{"$blob":'):
        return str(json.loads(text)["$blob"])
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


Verifier = Callable[[Mapping[str, Any]], bool]
"""Checks a checkpoint record's signature (``autonomic.audit.checkpoint``)."""


@dataclass
class LogChecker:
    """Walk the audit log in ``pos`` order; collect the anchored journal heads on the way.

    Args:
        only_run: collect anchors of this run only (``verify --run``).
        verify_signature: checks each checkpoint's signature; ``None`` skips that (the key is
            not at hand).
    """

    only_run: str | None = None
    verify_signature: Verifier | None = None
    anchored: dict[str, list[str | None]] = field(default_factory=dict)
    """Per run, the chain hash anchored at each seq (index ``seq - 1``)."""
    first_break: Break | None = None
    records: int = 0
    head: str = LOG_GENESIS
    pos: int = -1
    genesis_time: float = 0.0
    checkpoints: list[dict[str, Any]] = field(default_factory=list)
    acts: int = 0
    watch: frozenset[int] = frozenset()
    """Positions whose hashes to remember (those of checkpoints kept elsewhere)."""
    seen: dict[int, str] = field(default_factory=dict)

    def feed(self, rows: Sequence[tuple[int, str, str | None, str, str, float]]) -> None:
        """Check ``rows`` (the next records, in ``pos`` order). The usual record - the next
        anchor, chained as it should be, compact or spelled out (``core/audit.py``) - takes the
        short path; anything else the full one."""
        sha256, anchored, only = hashlib.sha256, self.anchored, self.only_run
        a2b_base64 = binascii.a2b_base64
        watch = self.watch
        # the checker's place in the log, kept in locals on the short path (a million records
        # read them per record) and handed back to ``self`` around every slow path
        expect, head, records = self.pos + 1, self.head, self.records
        clean = self.first_break is None
        for pos, kind, run_id, body, stored, created_at in rows:
            end = body.find("\n")
            if (
                kind != "anchor"
                or run_id is None
                or end < 0
                or pos != expect
                or not clean
                or pos in watch
            ):
                self.pos, self.head, self.records = expect - 1, head, records
                self._one(pos, kind, run_id, body, stored, created_at)
                expect, head, records = self.pos + 1, self.head, self.records
                clean = self.first_break is None
                continue
            line = body[:end]
            compact = '"' not in line
            if compact:  # the record covers the run_id column (``record_digest``)
                digest = sha256(f"{len(run_id)} {run_id}\n{body}".encode()).hexdigest()
            else:
                digest = sha256(body.encode()).hexdigest()
            if sha256(f"{head}\n{pos}\n{kind}\n{digest}".encode()).hexdigest() != stored:
                self.pos, self.head, self.records = expect - 1, head, records
                self._one(pos, kind, run_id, body, stored, created_at)
                expect, head, records = self.pos + 1, self.head, self.records
                clean = self.first_break is None
                continue
            records += 1
            expect, head = pos + 1, stored
            if only is not None and run_id != only:
                continue
            try:
                if compact:  # ``hex_hashes``, inline: once per record
                    rid = run_id
                    first, joined = line.split(" ", 1)
                    raw = a2b_base64(joined + "=" * (-len(joined) % 4), strict_mode=True)
                    if len(raw) % 32:
                        raise ValueError("not whole hashes")
                    joined = raw.hex()
                else:
                    first, joined, run = line.split(" ", 2)
                    rid = run[1:-1]
                    if "\\" in rid or run[0] != '"' or len(joined) % 64:
                        raise ValueError("escaped")
                hashes = anchored.get(rid)
                if hashes is None:
                    hashes = anchored[rid] = []
                if int(first) != len(hashes) + 1:
                    raise ValueError("out of order")
                if len(joined) == 64:
                    hashes.append(joined)
                else:
                    hashes.extend([joined[i : i + 64] for i in range(0, len(joined), 64)])
            except (ValueError, IndexError, binascii.Error):
                # the slow path says what is wrong, or mends it
                self.pos, self.head, self.records = expect - 1, head, records
                self._anchor(run_id, body, pos)
                expect, head, records = self.pos + 1, self.head, self.records
                clean = self.first_break is None
        self.pos, self.head, self.records = expect - 1, head, records

    def _break(self, kind: BreakKind, pos: int, detail: str) -> None:
        if self.first_break is None:
            self.first_break = Break(kind, None, pos, detail)

    def _one(
        self, pos: int, kind: str, run_id: str | None, body: str, stored: str, created_at: float
    ) -> None:
        expected = self.pos + 1
        self.records += 1
        if pos == 0 and kind == "genesis":
            self.genesis_time = created_at
            if stored != LOG_GENESIS or body != "{}":
                self._break(BreakKind.LOG_EDITED, 0, "the genesis record was changed")
            self.pos, self.head = 0, stored
            return
        if pos != expected:
            self._break(
                BreakKind.LOG_DELETED,
                expected,
                f"records {expected}..{pos - 1} are missing" if pos > expected else "out of order",
            )
        computed = record_hash(self.head, pos, kind, record_digest(kind, run_id, body))
        if computed != stored:
            self._break(BreakKind.LOG_EDITED, pos, f"{kind} record does not match its hash")
        before, self.pos, self.head = self.head, pos, stored
        if pos in self.watch:
            self.seen[pos] = stored
        if kind == "anchor":
            self._anchor(run_id, body, pos)
        elif kind == "checkpoint":
            self._checkpoint(body, pos, before)
        else:
            self.acts += 1

    def _anchor(self, run_id: str | None, body: str, pos: int) -> None:
        try:
            rid, pairs, _ = parse_anchor(body, run_id)
        except ValueError:
            self._break(BreakKind.LOG_EDITED, pos, "an anchor record is not readable")
            return
        if self.only_run is not None and rid != self.only_run:
            return
        hashes = self.anchored.setdefault(rid, [])
        for seq, h in pairs:
            if seq == len(hashes) + 1:
                hashes.append(h)
            elif seq > len(hashes):
                hashes.extend([None] * (seq - len(hashes) - 1))
                hashes.append(h)
            else:
                hashes[seq - 1] = h

    def _checkpoint(self, body: str, pos: int, before: str) -> None:
        try:
            data = json.loads(body)
        except ValueError:
            self._break(BreakKind.LOG_EDITED, pos, "a checkpoint record is not readable")
            return
        self.checkpoints.append(data)
        if data.get("pos") != pos - 1 or data.get("head") != before:
            self._break(
                BreakKind.LOG_EDITED, pos, "a checkpoint does not sign the record before it"
            )
        if self.verify_signature is not None and not self.verify_signature(data):
            self._break(BreakKind.BAD_SIGNATURE, pos, "a checkpoint's signature does not verify")

    def expect_checkpoint(self, checkpoint: Mapping[str, Any]) -> None:
        """A checkpoint kept elsewhere must still be in the log: the log reaches its pos with
        its head (its pos must have been in ``watch``)."""
        pos = int(checkpoint["pos"])
        if pos > self.pos:
            self._break(
                BreakKind.LOG_TRUNCATED,
                self.pos + 1,
                f"a signed checkpoint says the log reached record {pos}; it ends at {self.pos}",
            )
        elif self.seen.get(pos) != checkpoint.get("head"):
            self._break(BreakKind.LOG_EDITED, pos, "the record a signed checkpoint names differs")


@dataclass(frozen=True, slots=True)
class Row:
    """A journal row as ``RunChecker`` needs it."""

    seq: int
    kind: str
    address: str
    hash: str


def _matches(row: Row, j: int, anchored: Sequence[str | None]) -> bool:
    """Whether ``row``'s content is what was anchored at seq ``j``."""
    if not 1 <= j <= len(anchored) or anchored[j - 1] is None:
        return False
    prev = anchored[j - 2] if j > 1 else GENESIS_HASH
    return prev is not None and chain_hash(prev, j, row.kind, row.address) == anchored[j - 1]


def check_run(
    run_id: str,
    rows: Sequence[Row],
    anchored: Sequence[str | None],
    *,
    run_exists: bool = True,
) -> Break | None:
    """The first break in one run's journal against its anchors, or ``None``.

    ``rows`` in seq order, as stored. ``anchored`` from ``LogChecker.anchored``."""
    n = len(anchored)
    if not rows and n:
        return Break(
            BreakKind.RUN_DELETED, run_id, 1, f"the log anchored {n} entries; none is left"
        )
    if n and not run_exists:
        return Break(BreakKind.RUN_DELETED, run_id, 0, "the run's row is gone")
    by_seq = {r.seq: r for r in rows}
    last = rows[-1].seq if rows else 0
    for i in range(1, n + 1):
        row = by_seq.get(i)
        if row is None:
            if last < i:
                return Break(
                    BreakKind.TRUNCATED, run_id, i, f"the journal ends at {last}; {n} were anchored"
                )
            return Break(BreakKind.DELETED, run_id, i, "the entry is missing")
        if row.hash == anchored[i - 1] and _matches(row, i, anchored):
            continue
        return _classify(run_id, i, row, by_seq, anchored)
    if last > n:
        return Break(
            BreakKind.INSERTED, run_id, n + 1, f"entries {n + 1}..{last} were never anchored"
        )
    return None


def _classify(
    run_id: str, i: int, row: Row, by_seq: Mapping[int, Row], anchored: Sequence[str | None]
) -> Break:
    if _matches(row, i, anchored):
        return Break(BreakKind.EDITED, run_id, i, "the entry's stored hash was changed")
    n = len(anchored)
    j = next((k for k in range(1, n + 1) if k != i and _matches(row, k, anchored)), None)
    if j is not None and j > i:
        other = by_seq.get(j)
        if other is not None and _matches(other, i, anchored):
            return Break(BreakKind.REORDERED, run_id, i, f"entries {i} and {j} changed places")
        return Break(
            BreakKind.DELETED, run_id, i, f"the entry is gone; entry {j} moved up to its place"
        )
    following = by_seq.get(i + 1)
    if following is not None and _matches(following, i, anchored):
        return Break(BreakKind.INSERTED, run_id, i, "an entry was put in before the anchored one")
    if j is not None:
        return Break(BreakKind.INSERTED, run_id, i, f"a copy of entry {j} was put here")
    return Break(BreakKind.EDITED, run_id, i, "the entry's content differs from what was anchored")


def intact(rows: Sequence[tuple[str, int, str, str, str]], anchored: Sequence[str | None]) -> bool:
    """The short path of ``check_run``: whether a run's journal rows, as stored, are exactly
    what was anchored (no objects made). ``False`` sends the run to ``check_run``."""
    return (
        len(rows) == len(anchored) and [row[4] for row in rows] == list(anchored) and chained(rows)
    )


def chained(rows: Sequence[tuple[str, int, str, str, str]]) -> bool:
    """Whether a run's journal rows hold their own chain: seqs 1, 2, ... and each stored hash
    its entry's chain hash (``chain_hash`` over the payload's address, spelled out: once per
    entry of a million)."""
    sha256 = hashlib.sha256
    prev = GENESIS_HASH
    for i, (_, seq, kind, text, stored) in enumerate(rows, start=1):
        if seq != i:
            return False
        if text.startswith('{"$blob":'):
            line = f"{prev}\n{i}\n{kind}\n{json.loads(text)['$blob']}"
        else:
            line = f"{prev}\n{i}\n{kind}\nsha256:{sha256(text.encode()).hexdigest()}"
        if sha256(line.encode()).hexdigest() != stored:
            return False
        prev = stored
    return True


def chain_summary(rows: Sequence[tuple[str, int, str, str, str]]) -> tuple[int, bool, bytes]:
    """A run's journal rows checked against their own chain, summed up for ``intact`` to be
    decided elsewhere (``verify`` checks the journals in a process of its own while it reads
    the log): ``(entries, chained(rows), sha256 of the stored hashes run together)``. With the
    anchored hashes of the run, ``intact(rows, anchored)`` is ``count == len(anchored) and ok
    and digest == hashes_digest(anchored)``: a stored hash that is its entry's chain hash is 64
    hex digits, so equal digests of equally many mean the same hashes in the same order."""
    digest = hashlib.sha256("".join([str(r[4]) for r in rows]).encode()).digest()
    return len(rows), chained(rows), digest


def hashes_digest(anchored: Sequence[str | None]) -> bytes | None:
    """The digest ``chain_summary`` gives the same hashes; ``None`` when one was never
    anchored (such a run is never intact)."""
    if any(h is None for h in anchored):
        return None
    return hashlib.sha256("".join([str(h) for h in anchored]).encode()).digest()


def check_legacy_run(run_id: str, rows: Sequence[Row]) -> Break | None:
    """A run written before the audit log existed: only its own chain can be checked."""
    prev = GENESIS_HASH
    for expected, row in enumerate(rows, start=1):
        if row.seq != expected:
            return Break(BreakKind.DELETED, run_id, expected, "the entry is missing")
        if chain_hash(prev, row.seq, row.kind, row.address) != row.hash:
            return Break(BreakKind.EDITED, run_id, row.seq, "the entry breaks the run's own chain")
        prev = row.hash
    return None
