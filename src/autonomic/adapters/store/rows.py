"""Mapping between database rows and domain values, shared by the SQL adapters."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from autonomic.core.bulk import bulk_allocation
from autonomic.core.canonical import canonical_json
from autonomic.core.journal import Entry, EntryKind, PackedEntry, blob_reference
from autonomic.core.run import Lease, Run, RunStatus

RUN_COLUMNS = (
    "id, tenant, agent, agent_version, model, status, status_reason, version, lease_owner, "
    "lease_expires_at, fence, input, output, max_turns, metadata, parent_run_id, correlation_id, "
    "created_at, updated_at, capability, queued"
)


def run_from_row(row: Sequence[Any]) -> Run:
    (
        run_id,
        tenant,
        agent,
        agent_version,
        model,
        status,
        status_reason,
        version,
        lease_owner,
        lease_expires_at,
        fence,
        input_text,
        output_text,
        max_turns,
        metadata,
        parent_run_id,
        correlation_id,
        created_at,
        updated_at,
        capability,
        queued,
    ) = row
    return Run(
        id=run_id,
        tenant=tenant,
        agent=agent,
        agent_version=agent_version,
        model=model,
        status=RunStatus(status),
        status_reason=status_reason,
        version=int(version),
        lease=Lease(owner=lease_owner, expires_at=float(lease_expires_at), fence=int(fence)),
        input=json.loads(input_text),
        output=json.loads(output_text) if output_text is not None else None,
        max_turns=int(max_turns),
        metadata=json.loads(metadata),
        parent_run_id=parent_run_id,
        correlation_id=correlation_id,
        created_at=float(created_at),
        updated_at=float(updated_at),
        capability=capability,
        queued=bool(queued),
    )


def run_to_row(run: Run) -> tuple[Any, ...]:
    return (
        run.id,
        run.tenant,
        run.agent,
        run.agent_version,
        run.model,
        run.status.value,
        run.status_reason,
        run.version,
        run.lease.owner,
        run.lease.expires_at,
        run.lease.fence,
        canonical_json(run.input),
        canonical_json(run.output) if run.output is not None else None,
        run.max_turns,
        canonical_json(run.metadata),
        run.parent_run_id,
        run.correlation_id,
        run.created_at,
        run.updated_at,
        run.capability,
        1 if run.queued else 0,
    )


def journal_rows(entries: Sequence[PackedEntry]) -> list[tuple[Any, ...]]:
    """The journal rows of ``entries``: run id, seq, kind, payload text, hash, created_at; each
    chain hash as its 32 raw bytes (issue 17). SQLite keeps them as a BLOB in the TEXT column
    (no migration: an entry written before keeps its hex text), PostgreSQL's column is
    ``bytea`` since migration 0010. Every reader gets hex (``entries_from_rows``,
    ``SqlStore.scan_journal``)."""
    fromhex = bytes.fromhex
    return [
        (e.run_id, e.seq, e.kind.value, p.text, fromhex(e.hash), e.created_at)
        for p in entries
        for e in (p.entry,)
    ]


def blob_rows(entries: Sequence[PackedEntry], now: float) -> list[tuple[str, bytes, int, float]]:
    return [
        (p.blob.address, p.blob.data, len(p.blob.data), now) for p in entries if p.blob is not None
    ]


def entries_from_rows(
    run_id: str, rows: Sequence[Sequence[Any]], blobs: Mapping[str, bytes]
) -> list[Entry]:
    """Rows of (seq, kind, payload, hash, created_at) to entries, blob references resolved (a
    long run's with the collector held: see ``core/bulk.py``). A hash kept as its raw bytes
    (``journal_rows``) is given back as hex, like every other."""
    out: list[Entry] = []
    raw = bytes
    with bulk_allocation(len(rows)):
        for seq, kind, text, hash_, created_at in rows:
            address = blob_reference(text)
            if address is not None:
                text = bytes(blobs[address]).decode()
            out.append(
                Entry(
                    run_id=run_id,
                    seq=int(seq),
                    kind=EntryKind(kind),
                    payload=json.loads(text),
                    created_at=float(created_at),
                    hash=hash_.hex() if hash_.__class__ is raw else hash_,
                )
            )
    return out


def blob_addresses(rows: Sequence[Sequence[Any]]) -> list[str]:
    found = (blob_reference(row[2]) for row in rows)
    return [a for a in found if a is not None]


def redact_url(url: str) -> str:
    """A database URL safe to print: any password replaced by ``***``."""
    scheme, sep, rest = url.partition("://")
    first_at = rest.find("@")
    if not sep or first_at < 0:
        return url
    # The authority ends at the first '/' after the first '@' (a sloppy password may hold '/'
    # before it); within it the credentials end at the last '@' (a password may hold '@', a host
    # may not). A query string may hold '@' too, so the rest is kept as it is.
    slash = rest.find("/", first_at)
    authority, tail = (rest, "") if slash < 0 else (rest[:slash], rest[slash:])
    creds, _, host = authority.rpartition("@")
    user = creds.partition(":")[0]
    return f"{scheme}://{user}{':***' if ':' in creds else ''}@{host}{tail}"
