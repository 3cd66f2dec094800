"""Reading a run's journal the way the crash harness compares runs: tool results, kinds, chain.

The harness reads payloads as stored, not through the typed entries (``core/entries.py``) the
engine folds: a decoding bug must not be able to hide a lost step or a duplicated effect."""

from __future__ import annotations

from collections.abc import Sequence

from autonomic.core.canonical import canonical_json, digest
from autonomic.core.journal import GENESIS_HASH, Entry, EntryKind, chain_hash

StepResult = tuple[str, str, bool, str]
"""A tool result as compared across runs: call id, tool, ok, canonical output (or error code)."""


def step_results(entries: Sequence[Entry]) -> list[StepResult]:
    """The journal's tool results in order, without timings and replay flags."""
    results: list[StepResult] = []
    for e in entries:
        if e.kind is EntryKind.TOOL_RESULT:
            p = e.payload
            detail = p.get("output") if p.get("ok") else (p.get("error") or {}).get("code")
            results.append(
                (str(p["call_id"]), str(p["tool"]), bool(p.get("ok")), canonical_json(detail))
            )
    return results


def kinds(entries: Sequence[Entry], *, without_recovery: bool = True) -> list[str]:
    """The kinds of ``entries`` in order (recovery entries left out by default)."""
    return [
        e.kind.value for e in entries if not (without_recovery and e.kind is EntryKind.RECOVERY)
    ]


def chain_problems(entries: Sequence[Entry]) -> list[str]:
    """What is wrong with the journal's sequence numbers and hash chain (``[]`` if nothing)."""
    problems: list[str] = []
    prev = GENESIS_HASH
    for i, e in enumerate(entries, start=1):
        if e.seq != i:
            problems.append(f"entry {i} has seq {e.seq}")
        expected = chain_hash(prev, e.seq, e.kind.value, digest(canonical_json(e.payload).encode()))
        if e.hash != expected:
            problems.append(f"entry {e.seq} breaks the hash chain")
        prev = e.hash
    return problems
