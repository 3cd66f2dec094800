"""The store port: runs, their journals and blobs, with optimistic locking and leases.

One interface, two adapters (SQLite and PostgreSQL) that pass the same conformance suite in
``autonomic.testing.store_conformance``.

Every write that changes a run names the ``version`` it read; a write against a newer version
changes nothing and raises ``StaleVersion``. Writes made under a lease also name the lease's fencing
``fence``; a worker whose lease was taken over gets ``LeaseLost`` and must stop.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from autonomic.core.approval import Approval, ApprovalStatus
from autonomic.core.audit import AuditAct, AuditNote
from autonomic.core.entries import ModelCall
from autonomic.core.events import Event
from autonomic.core.journal import Entry, EntryKind, PackedEntry
from autonomic.core.run import Run, RunChanges, RunStatus
from autonomic.core.timeline import SPENDING, model_calls


@dataclass(frozen=True, slots=True)
class Claim:
    """How a worker asks for a run.

    Args:
        owner: the worker's id (``host:pid:nonce:PIDNS-START``: ``engine.executor.worker_id``).
        now: the worker's clock, seconds since the epoch.
        ttl: how long the lease lasts unless renewed.
        run_id: claim exactly this run (``autonomic resume``) instead of any runnable one.
        steal_from: also take the run if its current lease owner is this id (a dead process).
        tenant: only claim runs of this tenant.
        agents: only claim runs pinned to one of these ``(agent, version)`` pairs (what the
            worker registered: it drives no run of a version it does not have); ``None``: any.
    """

    owner: str
    now: float
    ttl: float
    run_id: str | None = None
    steal_from: str | None = None
    tenant: str | None = None
    agents: tuple[tuple[str, str], ...] | None = None


@dataclass(frozen=True, slots=True)
class Processed:
    """An event a consumer group has processed (the inbox row), written in the same transaction
    as the effect it caused, so a redelivered event is seen as done."""

    group: str
    event_id: str


@dataclass(frozen=True, slots=True)
class OutboxItem:
    """A committed event waiting for the relay: its position in the outbox and the event."""

    seq: int
    event: Event


AuditRow = tuple[int, str, str | None, str, str, float]
"""An audit record as stored: pos, kind, run id, body (an anchor's text or canonical JSON, see
``core/audit.py``), hash (hex, however the store keeps it), created_at."""
JournalRow = tuple[str, int, str, str, str]
"""A journal row as stored: run id, seq, kind, payload text (or blob reference), hash."""


class Waiting(NamedTuple):
    """A parent run waiting for children, some of which have an outcome: its ``version`` and
    how many children have one (``ended``). While both stay the same, it needs no new look."""

    run_id: str
    version: int
    ended: int


def check_journal_page(limit: int | None, kinds: Collection[EntryKind] | None) -> None:
    """Refuse a page that cannot be meant: a negative ``limit``, ``kinds`` that is empty."""
    if limit is not None and limit < 0:
        raise ValueError(f"a journal page holds 0 or more entries, not limit={limit}")
    if kinds is not None and not kinds:
        raise ValueError("kinds=() asks for no entry at all: pass None for every kind")


class Store(abc.ABC):
    """Durable home of runs. The relational database is the single source of truth."""

    url: str

    @abc.abstractmethod
    async def migrate(self, *, beside_other_tables: bool = False) -> list[str]:
        """Bring the schema up to date; return the names of the migrations applied now.

        Refuses a damaged database, one written by a newer version, and (unless
        ``beside_other_tables``) one that holds other tables and not this store's.
        """

    async def verify(self) -> None:
        """Refuse, without writing, a database this store cannot use as it is (not its own,
        older or newer than this code, damaged). A store that cannot tell accepts it."""
        return None

    @abc.abstractmethod
    async def create_run(
        self,
        run: Run,
        entries: Sequence[PackedEntry],
        *,
        outbox: Sequence[Event] = (),
        processed: Processed | None = None,
        audit: AuditNote | None = None,
    ) -> Run:
        """Insert a new run with its first journal entries in one transaction.

        ``outbox``: events the creation causes (``run.started``), written in the same
        transaction for the relay to publish. ``processed``: the event that started the run,
        recorded in the inbox in the same transaction (the run id is derived from the event id,
        so a redelivered event raises ``RunExists`` instead of starting a second run).
        ``audit``: as for ``commit``; the entries are anchored in the audit log either way.
        """

    @abc.abstractmethod
    async def get_run(self, run_id: str) -> Run:
        """The run, or ``NotFound``."""

    @abc.abstractmethod
    async def list_runs(
        self, *, status: RunStatus | None = None, tenant: str | None = None, limit: int = 50
    ) -> list[Run]:
        """Newest first."""

    async def page_runs(
        self,
        *,
        tenant: str | None,
        status: RunStatus | None = None,
        agent: str | None = None,
        since: float | None = None,
        before: tuple[float, str] | None = None,
        limit: int = 50,
    ) -> list[Run]:
        """One page of runs, newest first: of ``tenant`` (``None``: every tenant), with
        ``status`` and ``agent``, created at or after ``since``, strictly older than the cursor
        ``before`` = ``(created_at, id)`` of the last run of the previous page.

        What the service lists runs with; a store that cannot page says so."""
        raise NotImplementedError(f"{type(self).__name__} cannot page runs")

    @abc.abstractmethod
    async def load_journal(self, run_id: str, *, after_seq: int = 0) -> list[Entry]:
        """Entries with ``seq > after_seq`` in order, blob payloads resolved."""

    async def page_journal(
        self,
        run_id: str,
        *,
        after_seq: int = 0,
        before_seq: int | None = None,
        limit: int | None = None,
        newest: bool = False,
        kinds: Collection[EntryKind] | None = None,
    ) -> list[Entry]:
        """A part of the journal, in seq order, blob payloads resolved: entries with
        ``after_seq < seq < before_seq`` (``None``: no upper bound), of ``kinds`` only (``None``:
        every kind), at most ``limit`` of them (``None``: all) - the first ones, or with
        ``newest`` the last ones.

        What a reader that shows one page of a long run uses (the service's timeline, the
        console's run page, the approvals inbox), so that it reads that page and not the whole
        journal. This default reads the whole journal and cuts it: right for any adapter, cheap
        for none; the SQL stores read only the rows asked for."""
        check_journal_page(limit, kinds)
        entries = await self.load_journal(run_id, after_seq=after_seq)
        wanted = frozenset(kinds) if kinds is not None else None
        found = [
            e
            for e in entries
            if (before_seq is None or e.seq < before_seq) and (wanted is None or e.kind in wanted)
        ]
        if limit is None:
            return found
        return found[-limit:] if newest and limit else found[:limit]

    async def model_calls(self, run_id: str) -> list[ModelCall]:
        """Every model call ``run_id``'s journal records, in journal order - what
        ``core.timeline.model_calls`` finds in the whole journal, and so what the run's cost is
        summed from (``spend_of``) by a reader that shows one page of a long run.

        This default reads and decodes the entries of the kinds that carry calls (``SPENDING``);
        the SQL stores decode only a model turn's call, not its message."""
        return model_calls(await self.page_journal(run_id, kinds=SPENDING))

    @abc.abstractmethod
    async def commit(
        self,
        run_id: str,
        *,
        expected_version: int,
        fence: int | None,
        entries: Sequence[PackedEntry],
        changes: RunChanges,
        now: float,
        approvals: Sequence[Approval] = (),
        outbox: Sequence[Event] = (),
        audit: AuditNote | None = None,
    ) -> int:
        """Append ``entries`` and apply ``changes`` atomically; return the new version.

        ``fence=None`` is for writers that act without a lease (an operator cancelling a run);
        the version check still applies. Raises ``StaleVersion`` or ``LeaseLost`` and writes nothing
        when the checks fail.

        ``approvals`` are written in the same transaction: one with ``version == 1`` is inserted,
        any other replaces the stored row only if that row is still at ``version - 1``. A duplicate
        insert or a stale update raises ``ApprovalConflict`` and nothing at all is written.

        ``outbox``: the events these entries cause, written in the same transaction (the
        transactional outbox): a committed step always has its events, a refused one none.

        The audit log gets one anchor of the entries in the same transaction
        (``core/audit.py``): always when there are entries, and for an operator's act
        (``audit.act``) even without; ``audit.levels`` says what it keeps of tool arguments and
        results.
        """

    async def append_audit(self, act: AuditAct, *, run_id: str | None = None) -> int:
        """Append an act that changes no run (a policy change, say) to the audit log; its pos."""
        raise NotImplementedError(f"{type(self).__name__} keeps no audit log")

    async def append_checkpoint(self, sign: Callable[[int, str], str]) -> int:
        """Append a checkpoint record: ``sign(pos, head)`` of the log as it is, under the log's
        lock, returns the record's body. Its pos."""
        raise NotImplementedError(f"{type(self).__name__} keeps no audit log")

    async def scan_audit_log(self, *, after: int = -1, limit: int = 20_000) -> list[AuditRow]:
        """Audit records with ``pos > after`` in order, at most ``limit``."""
        raise NotImplementedError(f"{type(self).__name__} keeps no audit log")

    async def scan_journal(
        self, *, after: tuple[str, int] = ("", 0), run_id: str | None = None, limit: int = 20_000
    ) -> list[JournalRow]:
        """Journal rows as stored, ordered by ``(run_id, seq)``, after ``after``; one run's only
        with ``run_id``. What ``audit verify`` reads: payload text as stored, never decoded."""
        raise NotImplementedError(f"{type(self).__name__} cannot scan its journal")

    async def scan_runs(self, *, after: str = "", limit: int = 20_000) -> list[tuple[str, float]]:
        """Every run's ``(id, created_at)`` ordered by id, after ``after``, at most ``limit``."""
        raise NotImplementedError(f"{type(self).__name__} cannot scan its runs")

    async def scan_blobs(self, *, after: str = "", limit: int = 2_000) -> list[tuple[str, bytes]]:
        """Blobs ``(address, data)`` ordered by address, after ``after``."""
        raise NotImplementedError(f"{type(self).__name__} cannot scan its blobs")

    @abc.abstractmethod
    async def get_approval(self, approval_id: str) -> Approval:
        """The approval, or ``NotFound``."""

    @abc.abstractmethod
    async def list_approvals(
        self,
        *,
        status: ApprovalStatus | None = None,
        tenant: str | None = None,
        run_id: str | None = None,
        limit: int = 100,
    ) -> list[Approval]:
        """Oldest first (the queue's order)."""

    @abc.abstractmethod
    async def claim(self, claim: Claim) -> Run | None:
        """Lease one runnable run (PENDING, or RUNNING with an expired lease) or return ``None``.

        Claiming bumps the fencing token, so the previous holder can no longer write.
        """

    @abc.abstractmethod
    async def renew_lease(self, run_id: str, *, owner: str, fence: int, expires_at: float) -> bool:
        """Extend a held lease; ``False`` if the lease is no longer ours."""

    @abc.abstractmethod
    async def release_lease(self, run_id: str, *, owner: str, fence: int) -> None:
        """Give up a lease so another worker can claim the run at once."""

    # -- delegation (optional abilities: the SQL stores have them) ---------------------------------

    async def children(self, run_id: str) -> list[Run]:
        """The runs ``run_id`` delegated to (``parent_run_id``), oldest first."""
        raise NotImplementedError(f"{type(self).__name__} cannot list child runs")

    async def parents_to_resume(self, *, limit: int = 200) -> list[Waiting]:
        """Runs WAITING_FOR_CHILD with children that have ended or are suspended, oldest wait
        first: the candidates a worker's sweep reopens (each is checked exactly before it
        is)."""
        raise NotImplementedError(f"{type(self).__name__} cannot list child runs")

    async def admit(self, capability: str, capacity: int) -> int:
        """Let queued child runs of ``capability`` be claimed while fewer than ``capacity`` of
        its children are in flight (admitted, not ended, not suspended) - checked atomically
        for the whole fleet of workers; how many it admitted."""
        raise NotImplementedError(f"{type(self).__name__} cannot limit capabilities")

    # -- agent versions (optional abilities: the SQL stores have them) ---------------------------

    async def announce_agents(
        self,
        owner: str,
        agents: Sequence[tuple[str, str]],
        *,
        now: float,
        forget_before: float,
    ) -> None:
        """Say that worker ``owner`` has these ``(agent, version)`` pairs, as of ``now``; forget
        what any worker said before ``forget_before`` (workers that are gone)."""
        raise NotImplementedError(f"{type(self).__name__} keeps no worker registry")

    async def unserved_runs(self, *, now: float, grace: float, limit: int = 100) -> list[Run]:
        """Runnable runs (PENDING, or RUNNING with an expired lease) that have waited longer
        than ``grace`` seconds and whose ``(agent, version)`` no worker has announced in the
        last ``grace`` seconds: nobody will ever drive them as they are."""
        raise NotImplementedError(f"{type(self).__name__} keeps no worker registry")

    # -- the outbox and the inbox (optional abilities: the SQL stores have them) ------------------

    async def outbox_pending(self, *, limit: int = 100) -> list[OutboxItem]:
        """Committed events not yet marked sent, oldest first."""
        raise NotImplementedError(f"{type(self).__name__} keeps no outbox")

    async def outbox_sent(self, seqs: Sequence[int], *, now: float) -> None:
        """Mark outbox events published (the relay, after the bus accepted them)."""
        raise NotImplementedError(f"{type(self).__name__} keeps no outbox")

    async def outbox_backlog(self) -> int:
        """How many committed events wait for the relay (the ``autonomic_outbox_pending``
        gauge)."""
        raise NotImplementedError(f"{type(self).__name__} keeps no outbox")

    async def was_processed(self, processed: Processed) -> bool:
        """Whether the inbox holds this event for this group."""
        raise NotImplementedError(f"{type(self).__name__} keeps no inbox")

    @abc.abstractmethod
    async def close(self) -> None:
        """Release connections."""
