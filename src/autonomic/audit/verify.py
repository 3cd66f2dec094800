"""``autonomic audit verify``: one streaming pass over the audit log, one over the journals.

The log is read by ``pos`` in pages and checked as it comes (``core/verification.LogChecker``),
collecting each run's anchored entry hashes; then the journal is read by ``(run_id, seq)`` in
pages, and each run, once its last row has come, is compared with its anchors
(``check_run``). Runs the log anchored and the journal no longer holds are ``run deleted``;
blobs are re-hashed against their addresses. Memory: the anchored hashes (about 120 bytes an
entry) and one run's rows at a time.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable
from dataclasses import dataclass, field
from itertools import groupby
from operator import itemgetter
from typing import Any

from autonomic.core.verification import (
    Break,
    BreakKind,
    LogChecker,
    Row,
    Verifier,
    chain_summary,
    check_legacy_run,
    check_run,
    hashes_digest,
    intact,
    payload_address,
)
from autonomic.errors import NotFound
from autonomic.ports.store import JournalRow, Store

PAGE = 20_000


@dataclass
class Report:
    """What ``verify`` found: the breaks (first one first) and what it read."""

    breaks: list[Break] = field(default_factory=list)
    records: int = 0
    runs: int = 0
    entries: int = 0
    legacy_runs: int = 0
    checkpoints: int = 0
    head: str = ""

    @property
    def ok(self) -> bool:
        return not self.breaks

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "first_break": self.breaks[0].to_dict() if self.breaks else None,
            "breaks": [b.to_dict() for b in self.breaks],
            "records": self.records,
            "runs": self.runs,
            "entries": self.entries,
            "legacy_runs": self.legacy_runs,
            "checkpoints": self.checkpoints,
            "head": self.head,
        }


_RUN_OF = itemgetter(0)
"""A journal row's run id (rows come ordered by run, then seq)."""


async def read_log(store: Store, log: LogChecker, *, page: int = PAGE) -> None:
    """Feed the whole audit log to ``log``, a page at a time."""
    after = -1
    while rows := await store.scan_audit_log(after=after, limit=page):
        log.feed(rows)
        after = rows[-1][0]


async def verify_store(
    store: Store,
    *,
    run_id: str | None = None,
    verify_signature: Verifier | None = None,
    blobs: bool = True,
    page: int = PAGE,
    chains: Awaitable[Chains] | None = None,
) -> Report:
    """Check the audit log and every journal (or ``run_id``'s) against it.

    ``chains``: the journals' own chains, checked elsewhere while the log is read here (what
    ``journal_chains`` returns; ``autonomic audit verify`` runs it in a process of its own for
    a big store, so the two halves of the work share the machine's cores). The report is the
    same either way: a run whose summary does not match its anchors is read again and judged
    here, as without it."""
    log = LogChecker(only_run=run_id, verify_signature=verify_signature)
    elsewhere = asyncio.ensure_future(chains) if chains is not None and run_id is None else None
    try:
        await read_log(store, log, page=page)
    except BaseException:
        if elsewhere is not None:
            elsewhere.cancel()
        raise
    report = Report(records=log.records, checkpoints=len(log.checkpoints), head=log.head)
    if log.first_break is not None:
        report.breaks.append(log.first_break)
    created = await _runs(store, run_id, page)
    anchored = log.anchored

    def judge(current: str, rows: list[JournalRow], hashes: list[str | None] | None) -> None:
        parsed = [Row(r[1], r[2], payload_address(r[3]), r[4]) for r in rows]
        if hashes is None:
            found = _unanchored(current, parsed, created.get(current), log.genesis_time, report)
        else:
            found = check_run(current, parsed, hashes, run_exists=current in created)
        if found is not None:
            report.breaks.append(found)

    if elsewhere is not None:
        for summed, (count, ok, digest) in (await elsewhere).items():
            report.runs += 1
            report.entries += count
            hashes = anchored.pop(summed, None)
            if (
                hashes is not None
                and summed in created
                and ok
                and count == len(hashes)
                and digest == hashes_digest(hashes)
            ):
                continue
            judge(summed, await _run_rows(store, summed, page), hashes)
    else:
        current: str | None = None
        rows: list[JournalRow] = []

        def finish() -> None:
            if current is None:
                return
            report.runs += 1
            report.entries += len(rows)
            hashes = anchored.pop(current, None)
            if hashes is not None and current in created and intact(rows, hashes):
                return
            judge(current, rows, hashes)

        after = ("", 0)
        while batch := await store.scan_journal(after=after, run_id=run_id, limit=page):
            for rid, run_rows in groupby(batch, key=_RUN_OF):  # runs in order: grouped in C
                if rid != current:
                    finish()
                    current, rows = rid, []
                rows.extend(run_rows)
            after = (batch[-1][0], batch[-1][1])
        finish()
    for rid, hashes in sorted(anchored.items()):
        report.runs += 1
        found = check_run(rid, [], hashes, run_exists=rid in created)
        if found is not None:
            report.breaks.append(found)
    if blobs and run_id is None:
        report.breaks.extend(await _blob_breaks(store))
    return report


Chains = dict[str, tuple[int, bool, bytes]]
"""Per run, in the journal's order, its ``chain_summary``."""


async def journal_chains(store: Store, *, page: int = PAGE) -> Chains:
    """Every run's journal checked against its own chain and summed up (``chain_summary``):
    the half of ``verify`` that needs no audit log, so another process can do it meanwhile.
    One run's rows in memory at a time."""
    out: Chains = {}
    current: str | None = None
    rows: list[JournalRow] = []
    after = ("", 0)
    while batch := await store.scan_journal(after=after, limit=page):
        for rid, run_rows in groupby(batch, key=_RUN_OF):
            if rid != current:
                if current is not None:
                    out[current] = chain_summary(rows)
                current, rows = rid, []
            rows.extend(run_rows)
        after = (batch[-1][0], batch[-1][1])
    if current is not None:
        out[current] = chain_summary(rows)
    return out


async def _run_rows(store: Store, run_id: str, page: int) -> list[JournalRow]:
    """One run's journal rows, read again (a run ``chains`` found not intact)."""
    rows: list[JournalRow] = []
    after = (run_id, 0)
    while batch := await store.scan_journal(after=after, run_id=run_id, limit=page):
        rows.extend(batch)
        after = (batch[-1][0], batch[-1][1])
    return rows


def _unanchored(
    run_id: str, rows: list[Row], created_at: float | None, genesis: float, report: Report
) -> Break | None:
    """A run with entries and no anchor: older than the log (checked by its own chain), or put
    in behind the log's back."""
    if created_at is not None and created_at < genesis:
        report.legacy_runs += 1
        return check_legacy_run(run_id, rows)
    return Break(BreakKind.INSERTED, run_id, 1, "a journal the audit log never anchored")


async def _runs(store: Store, run_id: str | None, page: int) -> dict[str, float]:
    if run_id is not None:
        try:
            return {run_id: (await store.get_run(run_id)).created_at}
        except NotFound:  # the run is gone; its anchors say whether it existed
            return {}
    out: dict[str, float] = {}
    after = ""
    while rows := await store.scan_runs(after=after, limit=page):
        out.update(rows)
        after = rows[-1][0]
    return out


async def _blob_breaks(store: Store) -> list[Break]:
    breaks: list[Break] = []
    after = ""
    while rows := await store.scan_blobs(after=after):
        for address, data in rows:
            if "sha256:" + hashlib.sha256(data).hexdigest() != address:
                breaks.append(Break(BreakKind.BLOB_EDITED, None, 0, f"blob {address} was changed"))
        after = rows[-1][0]
    return breaks
