"""The conformance suite of the ``Store`` port: what every adapter must do, checked the same way.

Both built-in adapters (SQLite and PostgreSQL) pass it; run it against your own adapter too. Each
check needs a fresh, empty, migrated database, and the suite needs two things from you:

* ``open_store()``: a coroutine returning a new store instance on that database, already migrated
  (the concurrency checks open several, as several workers would);
* ``raw_execute(sql)``: a coroutine running one SQL statement on a separate raw connection to the
  same database, committing it, and returning the rows it produced (``[]`` if none). It is used to
  prove that the database itself, not only the adapter, refuses edits to the journal.

With pytest, one test per check and a fixture that provides a fresh database::

    from autonomic.testing.store_conformance import CHECKS, run_check

    @pytest.mark.parametrize("check", CHECKS)
    def test_store_conformance(check, my_database_url):
        asyncio.run(run_check(check, open_store=..., raw_execute=...))

Time is never read from a clock: every timestamp, and the ``now`` of every ``Claim``, is chosen by
the check, so leases expire exactly when a check says so and nothing sleeps.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from autonomic.core.approval import Approval, ApprovalStatus, binding_hash
from autonomic.core.entries import Body, ModelCall, ModelTurn, PlanOutcome, Summary, ToolIntent
from autonomic.core.journal import (
    BLOB_THRESHOLD,
    GENESIS_HASH,
    EntryKind,
    PackedEntry,
    pack,
    record,
)
from autonomic.core.messages import Usage
from autonomic.core.run import Lease, Run, RunChanges, RunStatus
from autonomic.core.timeline import model_calls, spend, spend_of
from autonomic.errors import (
    ApprovalConflict,
    JournalConflict,
    LeaseLost,
    NotFound,
    RunExists,
    StaleVersion,
)
from autonomic.ports.store import Claim, Store

OpenStore = Callable[[], Awaitable[Store]]
"""Returns a new store instance on the database under test, already migrated."""

RawExecute = Callable[[str], Awaitable[list[tuple[Any, ...]]]]
"""Runs one SQL statement on a separate connection, commits, returns its rows."""

T0 = 1_700_000_000.0
"""The checks' epoch: every timestamp is ``T0`` plus an offset the check chooses."""

TTL = 30.0


def new_run_id() -> str:
    return f"run_{uuid.uuid4().hex}"


def make_run(
    *,
    created_at: float = T0,
    run_id: str | None = None,
    status: RunStatus = RunStatus.PENDING,
    tenant: str = "default",
    **fields: Any,
) -> Run:
    """A run as the engine creates it: version 1, no lease."""
    return Run(
        id=run_id or new_run_id(),
        agent="conformance",
        agent_version="1.0.0",
        model="scripted:conformance",
        status=status,
        version=1,
        lease=Lease(owner=None, expires_at=0.0, fence=0),
        created_at=created_at,
        updated_at=created_at,
        tenant=tenant,
        **fields,
    )


def make_entries(
    run_id: str,
    payloads: Sequence[dict[str, Any]],
    *,
    first_seq: int = 1,
    prev_hash: str = GENESIS_HASH,
    created_at: float = T0,
) -> list[PackedEntry]:
    """Chained, packed entries for ``payloads`` with consecutive seqs from ``first_seq``."""
    out: list[PackedEntry] = []
    for i, payload in enumerate(payloads):
        seq = first_seq + i
        kind = EntryKind.RUN_STARTED if seq == 1 else EntryKind.MODEL_RESPONSE
        packed = pack(run_id, seq, kind, payload, prev_hash=prev_hash, created_at=created_at + i)
        out.append(packed)
        prev_hash = packed.entry.hash
    return out


def make_approval(run_id: str, *, call_id: str = "call_1", step: int = 3) -> Approval:
    """A pending approval for one action of ``run_id`` (version 1: to be inserted)."""
    arguments = {"to": "bob", "amount": 500}
    return Approval(
        id=f"apr_{uuid.uuid4().hex[:24]}",
        run_id=run_id,
        call_id=call_id,
        step=step,
        tenant="default",
        tool="pay@1",
        arguments=arguments,
        binding=binding_hash("pay@1", arguments, run_id, step),
        explanation="payments above 100 need a controller",
        created_at=T0 + 1,
        expires_at=T0 + 3600,
        requester="rita",
        approvers=("carl", "cleo"),
    )


def big_payload(tag: str) -> dict[str, Any]:
    """A payload whose canonical JSON is well above the blob threshold (and not ASCII-only)."""
    return {
        "tag": tag,
        "text": "déjà vu ✓ " * (BLOB_THRESHOLD // 4),
        "nested": {"n": [1, 2.5, None]},
    }


E = TypeVar("E", bound=BaseException)


async def expect_error(kind: type[E], call: Awaitable[object], why: str) -> E:
    """Await ``call``; return the ``kind`` error it raises, or fail with ``why`` if it succeeds."""
    try:
        await call
    except kind as exc:
        return exc
    raise AssertionError(why)


async def _claim(store: Store, owner: str, now: float, **kwargs: Any) -> Run | None:
    return await store.claim(Claim(owner=owner, now=now, ttl=TTL, **kwargs))


async def _claimed(store: Store, owner: str, now: float, **kwargs: Any) -> Run:
    run = await _claim(store, owner, now, **kwargs)
    assert run is not None, f"{owner} expected to claim a run at now={now} ({kwargs})"
    return run


class StoreConformance:
    """The checks. Each ``check_*`` coroutine takes a fresh, migrated store and asserts behaviour."""

    def __init__(self, open_store: OpenStore, raw_execute: RawExecute) -> None:
        self._open_store = open_store
        self.raw_execute = raw_execute
        self._opened: list[Store] = []

    @classmethod
    def all_checks(cls) -> list[str]:
        return [name for name in dir(cls) if name.startswith("check_")]

    async def another_store(self) -> Store:
        """One more store on the same database (closed when the check ends)."""
        store = await self._open_store()
        self._opened.append(store)
        return store

    async def run(self, name: str) -> None:
        """Run the check ``name`` on a store from ``open_store``; close every store it opened."""
        if name not in self.all_checks():
            raise ValueError(f"unknown store conformance check {name!r}")
        try:
            store = await self.another_store()
            await getattr(self, name)(store)
        finally:
            opened, self._opened = self._opened, []
            for store in opened:
                await store.close()

    # -- schema -----------------------------------------------------------------------------------

    async def check_migrate_is_idempotent(self, store: Store) -> None:
        assert await store.migrate() == []
        assert await store.migrate() == []
        others = [await self.another_store() for _ in range(3)]
        assert await asyncio.gather(*(s.migrate() for s in others)) == [[], [], []]
        run = make_run()
        await store.create_run(run, make_entries(run.id, [{"step": 1}]))
        assert await store.migrate() == []
        assert await store.get_run(run.id) == run, "migrate must not touch existing data"

    # -- runs -------------------------------------------------------------------------------------

    async def check_create_and_get_round_trip_all_fields(self, store: Store) -> None:
        full = make_run(
            created_at=T0 + 0.123456,
            status=RunStatus.WAITING_FOR_HUMAN,
            tenant="acme",
            input={"task": "reconcile", "items": [1, 2.5, "ü", None, {"deep": True}]},
            output={"answer": "42", "list": []},
            status_reason="waiting for approval",
            max_turns=7,
            metadata={"n": 3, "labels": {"env": "test"}},
            parent_run_id=new_run_id(),
            correlation_id="corr-Ω-1",
        ).replace(
            version=5,
            updated_at=T0 + 9.875,
            lease=Lease(owner="host:1:abc", expires_at=T0 + 31.25, fence=4),
        )
        minimal = make_run(created_at=T0 + 1)
        assert await store.create_run(full, make_entries(full.id, [{"a": 1}])) == full
        assert await store.create_run(minimal, []) == minimal
        assert await store.get_run(full.id) == full
        assert await store.get_run(minimal.id) == minimal
        other = await self.another_store()
        assert await other.get_run(full.id) == full, "a second store must see committed runs"
        assert await store.load_journal(minimal.id) == []

    async def check_output_that_is_falsy_round_trips(self, store: Store) -> None:
        runs = [make_run(created_at=T0 + i, output=value) for i, value in enumerate([0, "", []])]
        for run in runs:
            await store.create_run(run, [])
        for run in runs:
            assert (await store.get_run(run.id)).output == run.output

    async def check_unknown_run_is_not_found(self, store: Store) -> None:
        missing = new_run_id()
        exc = await expect_error(
            NotFound,
            store.get_run(missing),
            "get_run of an unknown run must raise NotFound",
        )
        assert missing in str(exc)
        await expect_error(
            NotFound,
            store.commit(
                missing, expected_version=1, fence=None, entries=[], changes=RunChanges(), now=T0
            ),
            "commit to an unknown run must raise NotFound",
        )
        assert await store.load_journal(missing) == []
        assert await store.list_runs(tenant="nobody") == []

    async def check_list_runs_newest_first_with_filters_and_limit(self, store: Store) -> None:
        specs = [
            (3, RunStatus.PENDING, "a"),
            (1, RunStatus.COMPLETED, "a"),
            (5, RunStatus.PENDING, "b"),
            (2, RunStatus.FAILED, "b"),
            (4, RunStatus.COMPLETED, "b"),
        ]
        runs = {
            offset: make_run(created_at=T0 + offset, status=status, tenant=tenant)
            for offset, status, tenant in specs
        }
        for run in runs.values():
            await store.create_run(run, [])

        def ids(found: list[Run]) -> list[str]:
            return [r.id for r in found]

        def expected(*offsets: int) -> list[str]:
            return [runs[o].id for o in offsets]

        assert ids(await store.list_runs()) == expected(5, 4, 3, 2, 1)
        assert await store.list_runs() == [runs[o] for o in (5, 4, 3, 2, 1)]
        assert ids(await store.list_runs(limit=2)) == expected(5, 4)
        assert ids(await store.list_runs(status=RunStatus.PENDING)) == expected(5, 3)
        assert ids(await store.list_runs(tenant="b")) == expected(5, 4, 2)
        assert ids(await store.list_runs(status=RunStatus.COMPLETED, tenant="a")) == expected(1)
        assert ids(await store.list_runs(tenant="b", limit=1)) == expected(5)
        assert await store.list_runs(status=RunStatus.CANCELLED) == []
        assert await store.list_runs(tenant="c") == []

    async def check_page_runs_by_tenant_with_filters_and_a_cursor(self, store: Store) -> None:
        """What the service lists runs with: a tenant's runs only, filtered, a page at a time;
        runs created at the same instant are ordered by id, so no page skips or repeats one."""
        made = [
            make_run(created_at=T0 + (i // 2), tenant="a" if i % 3 else "b",
                     status=RunStatus.PENDING if i % 2 else RunStatus.COMPLETED)
            for i in range(12)
        ]  # fmt: skip
        for run in made:
            await store.create_run(run, [])
        mine = sorted(
            (r for r in made if r.tenant == "a"), key=lambda r: (r.created_at, r.id), reverse=True
        )
        pages: list[str] = []
        before: tuple[float, str] | None = None
        while True:
            page = await store.page_runs(tenant="a", before=before, limit=3)
            pages += [r.id for r in page]
            if len(page) < 3:
                break
            before = (page[-1].created_at, page[-1].id)
        assert pages == [r.id for r in mine], "every run of tenant a once, newest first"
        pending = await store.page_runs(tenant="a", status=RunStatus.PENDING, limit=50)
        assert {r.id for r in pending} == {r.id for r in mine if r.status is RunStatus.PENDING}
        recent = await store.page_runs(tenant="b", since=T0 + 3, limit=50)
        assert {r.id for r in recent} == {
            r.id for r in made if r.tenant == "b" and r.created_at >= T0 + 3
        }
        assert await store.page_runs(tenant="b", agent="someone-else", limit=50) == []
        assert len(await store.page_runs(tenant=None, limit=50)) == 12

    async def check_create_run_twice_is_refused(self, store: Store) -> None:
        run = make_run()
        await store.create_run(run, make_entries(run.id, [{"first": True}]))
        clash = make_run(run_id=run.id, created_at=T0 + 5, tenant="other")
        await expect_error(
            RunExists,
            store.create_run(clash, make_entries(run.id, [{"second": True}])),
            "creating a run whose id exists must fail",
        )
        assert await store.get_run(run.id) == run
        assert [e.payload for e in await store.load_journal(run.id)] == [{"first": True}]

    # -- journal ----------------------------------------------------------------------------------

    async def check_journal_append_and_load_in_seq_order(self, store: Store) -> None:
        run = make_run()
        first = make_entries(run.id, [{"step": i} for i in range(1, 4)])
        await store.create_run(run, first)
        more = make_entries(
            run.id, [{"step": i} for i in range(4, 7)], first_seq=4, prev_hash=first[-1].entry.hash
        )
        version = await store.commit(
            run.id,
            expected_version=1,
            fence=None,
            entries=list(reversed(more)),  # stored order must not depend on insertion order
            changes=RunChanges(),
            now=T0 + 10,
        )
        assert version == 2
        expected = [p.entry for p in first + more]
        assert await store.load_journal(run.id) == expected
        assert await store.load_journal(run.id, after_seq=3) == expected[3:]
        assert await store.load_journal(run.id, after_seq=5) == expected[5:]
        assert await store.load_journal(run.id, after_seq=6) == []
        other = make_run(created_at=T0 + 1)
        await store.create_run(other, make_entries(other.id, [{"other": True}]))
        assert await store.load_journal(run.id) == expected, "journals of runs must not mix"

    async def check_journal_pages_are_parts_of_the_whole_journal(self, store: Store) -> None:
        """``page_journal``: every shape of page is the matching part of ``load_journal``, blob
        payloads resolved, in seq order - the readers of one page of a long run rely on it."""
        run = make_run()
        kinds = [EntryKind.MODEL_RESPONSE, EntryKind.TOOL_INTENT, EntryKind.TOOL_RESULT]
        packed: list[PackedEntry] = []
        prev_hash = GENESIS_HASH
        for seq in range(1, 13):
            kind = EntryKind.RUN_STARTED if seq == 1 else kinds[seq % 3]
            payload = big_payload(f"s{seq}") if seq in (5, 10) else {"seq": seq}
            packed.append(
                pack(run.id, seq, kind, payload, prev_hash=prev_hash, created_at=T0 + seq)
            )
            prev_hash = packed[-1].entry.hash
        await store.create_run(run, packed[:6])
        await store.commit(
            run.id,
            expected_version=1,
            fence=None,
            entries=packed[6:],
            changes=RunChanges(),
            now=T0 + 20,
        )
        other = make_run(created_at=T0 + 1)
        await store.create_run(other, make_entries(other.id, [{"other": 1}, {"other": 2}]))
        whole = await store.load_journal(run.id)
        assert whole == [p.entry for p in packed]
        page = store.page_journal
        assert await page(run.id) == whole
        assert await page(run.id, after_seq=3, limit=4) == whole[3:7]
        assert await page(run.id, after_seq=9, limit=100) == whole[9:]
        assert await page(run.id, limit=3, newest=True) == whole[-3:], "the last 3, in seq order"
        assert await page(run.id, before_seq=8, limit=2, newest=True) == whole[5:7]
        assert await page(run.id, before_seq=6) == whole[:5]
        assert await page(run.id, after_seq=2, before_seq=6) == whole[2:5]
        assert await page(run.id, after_seq=4, limit=1) == [whole[4]], "one entry, a blob"
        assert (await page(run.id, after_seq=4, limit=1))[0].payload == big_payload("s5")
        assert await page(run.id, limit=0) == []
        assert await page(run.id, after_seq=12) == []
        assert await page(run.id, before_seq=1) == []
        huge = 10**30  # past any integer column: a bound that large still just means "all"
        assert await page(run.id, after_seq=huge) == []
        assert await page(run.id, before_seq=huge, limit=huge) == whole
        assert await page(run.id, limit=5, newest=True, after_seq=10) == whole[10:]
        spending = [e for e in whole if e.kind is EntryKind.MODEL_RESPONSE]
        assert [e.seq for e in spending] == [3, 6, 9, 12]
        assert await page(run.id, kinds={EntryKind.MODEL_RESPONSE}) == spending
        assert await page(run.id, kinds=[EntryKind.MODEL_RESPONSE], after_seq=6, limit=1) == [
            spending[2]
        ]
        both = {EntryKind.RUN_STARTED, EntryKind.TOOL_RESULT}
        assert await page(run.id, kinds=both) == [e for e in whole if e.kind in both]
        assert await page(run.id, kinds=[EntryKind.APPROVAL]) == []
        assert await page(new_run_id(), limit=5) == [], "a run that does not exist: no entries"
        assert (
            await page(other.id, newest=True, limit=1) == (await store.load_journal(other.id))[1:]
        ), "journals of runs must not mix"
        for bad in ({"limit": -1}, {"kinds": ()}):
            try:
                await page(run.id, **bad)
            except ValueError:
                continue
            raise AssertionError(f"page_journal({bad}) must be refused with a ValueError")

    async def check_model_calls_are_those_of_the_whole_journal(self, store: Store) -> None:
        """``model_calls``: the calls ``core.timeline.model_calls`` finds in the whole journal,
        in its order and to the last bit of every cost - a model turn's (with and without a
        provider, kept inline or as a blob), a summary's, a plan's - and nothing else."""
        run = make_run()
        priced = ModelCall(Usage(7, 3), provider="p1", cost_usd=0.1, attempts=2, waited_s=1e-07)
        bodies: list[Body] = [
            ModelTurn(1, "hello", (), "m", priced),
            ToolIntent("c1", "pay", "1", {"amount": 0.30000000000000004}, "k1", True),
            ModelTurn(2, None, (), "m", ModelCall(Usage(5, 1))),
            ModelTurn(3, "é" * BLOB_THRESHOLD, (), "m", priced._replace(cost_usd=0.2)),
            Summary((), (ModelCall(Usage(2, 2), "p2", 0.30000000000000004), ModelCall())),
            PlanOutcome("k", "react", source="model", call=ModelCall(Usage(1, 1), "p1", 1e-9)),
            PlanOutcome("k", "react", source="cache"),
            ModelTurn(4, "bye", (), "m", ModelCall(Usage(4, 4), "p2", 0.7)),
        ]
        packed = make_entries(run.id, [{"started": True}])
        for seq, body in enumerate(bodies, start=2):
            packed.append(record(run.id, seq, body, prev_hash=packed[-1].entry.hash, created_at=T0))
        assert packed[4].blob is not None, "the third turn is kept as a blob"
        await store.create_run(run, packed)
        quiet = make_run(created_at=T0 + 1)
        await store.create_run(quiet, make_entries(quiet.id, [{"started": True}]))
        expected = model_calls(await store.load_journal(run.id))
        assert len(expected) == 7
        found = await store.model_calls(run.id)
        assert found == expected
        assert [c.cost_usd for c in found] == [c.cost_usd for c in expected]
        assert spend_of(found) == spend(await store.load_journal(run.id))
        assert await store.model_calls(quiet.id) == []
        assert await store.model_calls(new_run_id()) == []

    async def check_large_payloads_go_to_shared_blobs(self, store: Store) -> None:
        payload = big_payload("same")
        one, two = make_run(), make_run(created_at=T0 + 1)
        [packed_one] = make_entries(one.id, [payload])
        [packed_two] = make_entries(two.id, [payload])
        assert packed_one.blob is not None
        assert len(packed_one.blob.data) > BLOB_THRESHOLD
        small = make_entries(
            one.id, [{"small": True}], first_seq=2, prev_hash=packed_one.entry.hash
        )
        await store.create_run(one, [packed_one, *small])
        assert await self._count("blobs") == 1
        rows = await self.raw_execute(
            f"SELECT payload FROM journal WHERE run_id = '{one.id}' AND seq = 1"
        )
        assert rows == [(packed_one.text,)], "the journal row must hold the blob reference"
        assert len(packed_one.text) < 200
        await store.create_run(two, [packed_two])
        assert await self._count("blobs") == 1, "identical payloads must share one blob"
        loaded_one = await store.load_journal(one.id)
        loaded_two = await store.load_journal(two.id)
        assert loaded_one[0].payload == payload
        assert loaded_two[0].payload == payload
        assert loaded_one == [packed_one.entry, *(p.entry for p in small)]
        assert loaded_two == [packed_two.entry]

        # Through commit too, two identical blobs in one batch, plus a new one.
        batch = make_entries(
            two.id,
            [big_payload("same"), big_payload("new"), big_payload("new")],
            first_seq=2,
            prev_hash=packed_two.entry.hash,
        )
        await store.commit(
            two.id, expected_version=1, fence=None, entries=batch, changes=RunChanges(), now=T0 + 5
        )
        assert await self._count("blobs") == 2
        assert await store.load_journal(two.id, after_seq=1) == [p.entry for p in batch]
        stored = await self.raw_execute("SELECT address, size FROM blobs")
        expected = {p.blob.address: len(p.blob.data) for p in (packed_one, *batch) if p.blob}
        assert {address: int(size) for address, size in stored} == expected

    async def check_duplicate_seq_is_refused_and_nothing_written(self, store: Store) -> None:
        run = make_run()
        entries = make_entries(run.id, [{"step": 1}, {"step": 2}])
        await store.create_run(run, entries)
        before = await store.load_journal(run.id)
        clash = make_entries(run.id, [{"again": 2}], first_seq=2)
        new_then_clash = make_entries(
            run.id, [{"step": 3}, {"step": 3.5}], first_seq=3, prev_hash=entries[-1].entry.hash
        )
        same_batch = [new_then_clash[0], new_then_clash[0]]
        for attempt in (clash, [new_then_clash[0], *clash], same_batch):
            await expect_error(
                JournalConflict,
                store.commit(
                    run.id,
                    expected_version=1,
                    fence=None,
                    entries=attempt,
                    changes=RunChanges(metadata={"written": True}),
                    now=T0 + 3,
                ),
                "an entry with an existing (run_id, seq) must be refused",
            )
            assert await store.load_journal(run.id) == before
            assert await store.get_run(run.id) == run, "a refused commit must change nothing"

    async def check_journal_is_append_only_in_the_database(self, store: Store) -> None:
        run = make_run()
        await store.create_run(run, make_entries(run.id, [{"step": 1}, {"step": 2}]))
        before = await store.load_journal(run.id)
        for sql in (
            f"UPDATE journal SET kind = 'transition' WHERE run_id = '{run.id}'",
            f"UPDATE journal SET payload = '{{}}' WHERE run_id = '{run.id}' AND seq = 2",
            f"DELETE FROM journal WHERE run_id = '{run.id}'",
        ):
            exc = await expect_error(
                Exception,
                self.raw_execute(sql),
                f"the database accepted {sql!r}",
            )
            assert "append-only" in str(exc), f"{sql!r} failed for another reason: {exc}"
            assert await store.load_journal(run.id) == before

    # -- commit -----------------------------------------------------------------------------------

    async def check_commit_applies_changes_and_bumps_version(self, store: Store) -> None:
        run = make_run(metadata={"k": "v"})
        await store.create_run(run, make_entries(run.id, [{"step": 1}]))
        held = await _claimed(store, "w1", T0 + 1)
        fence = held.lease.fence
        version = await store.commit(
            run.id,
            expected_version=1,
            fence=fence,
            entries=[],
            changes=RunChanges(
                status=RunStatus.RUNNING,
                status_reason="claimed by w1",
                output={"partial": [1]},
                set_output=True,
                metadata={"k": "v2", "n": 1},
                lease_expires_at=T0 + 99.5,
            ),
            now=T0 + 2,
        )
        assert version == 2
        expected = held.replace(
            status=RunStatus.RUNNING,
            status_reason="claimed by w1",
            output={"partial": [1]},
            metadata={"k": "v2", "n": 1},
            lease=Lease(owner="w1", expires_at=T0 + 99.5, fence=fence),
            version=2,
            updated_at=T0 + 2,
        )
        assert await store.get_run(run.id) == expected

        # Empty changes touch only version and updated_at.
        assert (
            await store.commit(
                run.id,
                expected_version=2,
                fence=fence,
                entries=[],
                changes=RunChanges(),
                now=T0 + 3,
            )
            == 3
        )
        expected = expected.replace(version=3, updated_at=T0 + 3)
        assert await store.get_run(run.id) == expected

        # An output given without set_output is ignored; a status without a reason clears it.
        await store.commit(
            run.id,
            expected_version=3,
            fence=fence,
            entries=[],
            changes=RunChanges(status=RunStatus.SUSPENDED, output="ignored"),
            now=T0 + 4,
        )
        expected = expected.replace(
            version=4, updated_at=T0 + 4, status=RunStatus.SUSPENDED, status_reason=None
        )
        assert await store.get_run(run.id) == expected

        # set_output with None clears the output; metadata may become empty.
        await store.commit(
            run.id,
            expected_version=4,
            fence=fence,
            entries=[],
            changes=RunChanges(
                status=RunStatus.COMPLETED,
                status_reason="done",
                output=None,
                set_output=True,
                metadata={},
            ),
            now=T0 + 5,
        )
        expected = expected.replace(
            version=5,
            updated_at=T0 + 5,
            status=RunStatus.COMPLETED,
            status_reason="done",
            output=None,
            metadata={},
        )
        assert await store.get_run(run.id) == expected

    async def check_stale_version_is_refused_and_nothing_written(self, store: Store) -> None:
        run = make_run()
        entries = make_entries(run.id, [{"step": 1}])
        await store.create_run(run, entries)
        next_entry = make_entries(
            run.id, [{"step": 2}], first_seq=2, prev_hash=entries[0].entry.hash
        )
        await store.commit(
            run.id,
            expected_version=1,
            fence=None,
            entries=next_entry,
            changes=RunChanges(metadata={"n": 1}),
            now=T0 + 1,
        )
        current = await store.get_run(run.id)
        journal = await store.load_journal(run.id)
        late = make_entries(
            run.id,
            [{"step": 3}, big_payload("late")],
            first_seq=3,
            prev_hash=next_entry[0].entry.hash,
        )
        for version in (1, 3, 0):
            await expect_error(
                StaleVersion,
                store.commit(
                    run.id,
                    expected_version=version,
                    fence=None,
                    entries=late,
                    changes=RunChanges(
                        status=RunStatus.CANCELLED, metadata={"n": 99}, lease_expires_at=T0 + 50
                    ),
                    now=T0 + 2,
                ),
                f"commit expecting version {version} (is 2) must be refused",
            )
            assert await store.get_run(run.id) == current
            assert await store.load_journal(run.id) == journal
            assert await self._count("blobs") == 0, "a refused commit must not store its blobs"

    async def check_old_fence_after_another_claim_is_lease_lost(self, store: Store) -> None:
        run = make_run()
        await store.create_run(run, make_entries(run.id, [{"step": 1}]))
        first = await _claimed(store, "w1", T0)
        other = await self.another_store()
        second = await _claimed(other, "w2", T0 + TTL + 1)  # w1's lease has expired
        assert second.lease.fence == first.lease.fence + 1
        journal = await store.load_journal(run.id)
        for version in (1, 0):  # LeaseLost wins over a stale version too
            await expect_error(
                LeaseLost,
                store.commit(
                    run.id,
                    expected_version=version,
                    fence=first.lease.fence,
                    entries=make_entries(
                        run.id, [{"late": True}, big_payload("late")], first_seq=2
                    ),
                    changes=RunChanges(status=RunStatus.RUNNING),
                    now=T0 + TTL + 2,
                ),
                "a commit with the fence of a taken-over lease must fail",
            )
            assert await store.get_run(run.id) == second
            assert await store.load_journal(run.id) == journal
            assert await self._count("blobs") == 0, "a refused commit must not store its blobs"
        # The new holder writes fine.
        assert (
            await other.commit(
                run.id,
                expected_version=1,
                fence=second.lease.fence,
                entries=make_entries(run.id, [{"w2": True}], first_seq=2),
                changes=RunChanges(status=RunStatus.RUNNING),
                now=T0 + TTL + 3,
            )
            == 2
        )

    async def check_commit_without_fence_ignores_lease_but_checks_version(
        self, store: Store
    ) -> None:
        run = make_run()
        await store.create_run(run, [])
        held = await _claimed(store, "w1", T0)
        operator = await self.another_store()
        version = await operator.commit(
            run.id,
            expected_version=1,
            fence=None,
            entries=[],
            changes=RunChanges(status=RunStatus.CANCELLED, status_reason="operator"),
            now=T0 + 1,
        )
        assert version == 2
        after = await store.get_run(run.id)
        assert after.status is RunStatus.CANCELLED
        assert after.lease == held.lease, "an unfenced commit must not touch the lease"
        await expect_error(
            StaleVersion,
            operator.commit(
                run.id,
                expected_version=1,
                fence=None,
                entries=[],
                changes=RunChanges(metadata={"x": 1}),
                now=T0 + 2,
            ),
            "an unfenced commit must still check the version",
        )
        assert await store.get_run(run.id) == after
        # The lease holder's next write now fails on the version it read.
        await expect_error(
            StaleVersion,
            store.commit(
                run.id,
                expected_version=1,
                fence=held.lease.fence,
                entries=[],
                changes=RunChanges(status=RunStatus.RUNNING),
                now=T0 + 3,
            ),
            "a fenced commit with an old version must be refused",
        )

    # -- claim ------------------------------------------------------------------------------------

    async def check_claim_pending_runs_oldest_first(self, store: Store) -> None:
        runs = [make_run(created_at=T0 + offset) for offset in (2.0, 0.5, 3.0, 1.0)]
        for run in runs:
            await store.create_run(run, [])
        oldest_first = sorted(runs, key=lambda r: r.created_at)
        now = T0 + 10
        for i, expected in enumerate(oldest_first):
            claimed = await _claimed(store, f"w{i}", now)
            assert claimed == expected.replace(
                lease=Lease(owner=f"w{i}", expires_at=now + TTL, fence=1)
            )
            assert await store.get_run(expected.id) == claimed
        assert await _claim(store, "late", now) is None

    async def check_leased_run_is_not_claimable_until_its_lease_expires(self, store: Store) -> None:
        run = make_run()
        await store.create_run(run, [])
        first = await _claimed(store, "w1", T0)
        assert first.lease.expires_at == T0 + TTL
        for now in (T0, T0 + 1, T0 + TTL - 0.001, T0 + TTL):
            assert await _claim(store, "w2", now) is None, f"claimed at now={now}, before expiry"
            assert await _claim(store, "w2", now, run_id=run.id) is None
        second = await _claimed(store, "w2", T0 + TTL + 0.001)
        assert second.lease == Lease(owner="w2", expires_at=T0 + TTL + 0.001 + TTL, fence=2)
        third = await _claimed(store, "w3", T0 + 1000)
        assert third.lease.fence == 3
        assert (await store.get_run(run.id)).lease == third.lease

    async def check_running_run_with_expired_lease_is_claimable(self, store: Store) -> None:
        run = make_run()
        await store.create_run(run, [])
        held = await _claimed(store, "w1", T0)
        await store.commit(
            run.id,
            expected_version=1,
            fence=held.lease.fence,
            entries=[],
            changes=RunChanges(status=RunStatus.RUNNING),
            now=T0 + 1,
        )
        assert await _claim(store, "w2", T0 + 2) is None
        taken = await _claimed(store, "w2", T0 + TTL + 1)
        assert taken.status is RunStatus.RUNNING
        assert taken.lease.fence == 2
        assert taken.version == 2, "claiming must not bump the version"

    async def check_steal_from_takes_a_lease_held_by_that_owner(self, store: Store) -> None:
        run = make_run()
        await store.create_run(run, [])
        held = await _claimed(store, "dead-worker", T0)
        assert await _claim(store, "w2", T0 + 1, steal_from="someone-else") is None
        stolen = await _claimed(store, "w2", T0 + 1, steal_from="dead-worker")
        assert stolen.lease == Lease(
            owner="w2", expires_at=T0 + 1 + TTL, fence=held.lease.fence + 1
        )
        assert await _claim(store, "w3", T0 + 2, steal_from="dead-worker") is None

    async def check_claim_filters_by_run_id_and_tenant(self, store: Store) -> None:
        oldest = make_run(created_at=T0, tenant="a")
        middle = make_run(created_at=T0 + 1, tenant="b")
        newest = make_run(created_at=T0 + 2, tenant="b")
        for run in (oldest, middle, newest):
            await store.create_run(run, [])
        now = T0 + 10
        assert (await _claimed(store, "w1", now, run_id=newest.id)).id == newest.id
        assert await _claim(store, "w1", now, run_id=newest.id) is None, "already leased"
        assert await _claim(store, "w1", now, run_id=new_run_id()) is None
        assert await _claim(store, "w1", now, run_id=oldest.id, tenant="b") is None
        assert (await _claimed(store, "w1", now, tenant="b")).id == middle.id
        assert await _claim(store, "w1", now, tenant="b") is None
        assert await _claim(store, "w1", now, tenant="c") is None
        assert (await _claimed(store, "w1", now, tenant="a")).id == oldest.id

    async def check_waiting_suspended_and_terminal_runs_are_never_claimed(
        self, store: Store
    ) -> None:
        never = [
            RunStatus.WAITING_FOR_HUMAN,
            RunStatus.SUSPENDED,
            RunStatus.COMPLETED,
            RunStatus.FAILED,
            RunStatus.CANCELLED,
        ]
        runs = [make_run(created_at=T0 + i, status=status) for i, status in enumerate(never)]
        for run in runs:
            await store.create_run(run, [])
        late = T0 + 10_000
        assert await _claim(store, "w", late) is None
        for run in runs:
            assert await _claim(store, "w", late, run_id=run.id) is None
            assert await _claim(store, "w", late, run_id=run.id, steal_from="w") is None
        # A run that finishes stops being claimable, even with an expired lease.
        live = make_run(created_at=T0 + 100)
        await store.create_run(live, [])
        held = await _claimed(store, "w", T0 + 101)
        await store.commit(
            live.id,
            expected_version=1,
            fence=held.lease.fence,
            entries=[],
            changes=RunChanges(status=RunStatus.COMPLETED),
            now=T0 + 102,
        )
        assert await _claim(store, "w2", late) is None
        assert await _claim(store, "w2", late, steal_from="w") is None

    # -- leases -----------------------------------------------------------------------------------

    async def check_renew_lease_only_by_holder_with_current_fence(self, store: Store) -> None:
        run = make_run()
        await store.create_run(run, [])
        held = await _claimed(store, "w1", T0)
        fence = held.lease.fence
        assert await store.renew_lease(run.id, owner="w1", fence=fence, expires_at=T0 + 60) is True
        assert (await store.get_run(run.id)).lease == Lease("w1", T0 + 60, fence)
        assert await _claim(store, "w2", T0 + TTL + 1) is None, "a renewed lease must hold"
        assert (
            await store.renew_lease(run.id, owner="w2", fence=fence, expires_at=T0 + 500) is False
        )
        assert (
            await store.renew_lease(run.id, owner="w1", fence=fence - 1, expires_at=T0 + 500)
            is False
        )
        assert (
            await store.renew_lease(run.id, owner="w1", fence=fence + 1, expires_at=T0 + 500)
            is False
        )
        assert (
            await store.renew_lease(new_run_id(), owner="w1", fence=fence, expires_at=T0 + 500)
            is False
        )
        assert (await store.get_run(run.id)).lease == Lease("w1", T0 + 60, fence)
        taken = await _claimed(store, "w2", T0 + 61)
        assert (
            await store.renew_lease(run.id, owner="w1", fence=fence, expires_at=T0 + 500) is False
        )
        assert (await store.get_run(run.id)).lease == taken.lease
        assert (await store.get_run(run.id)).version == 1, "leases do not bump the version"

    async def check_release_lease_makes_run_claimable_at_once(self, store: Store) -> None:
        run = make_run()
        await store.create_run(run, [])
        held = await _claimed(store, "w1", T0)
        fence = held.lease.fence
        await store.release_lease(run.id, owner="w2", fence=fence)  # not the holder: no effect
        await store.release_lease(run.id, owner="w1", fence=fence + 1)  # wrong fence: no effect
        assert (await store.get_run(run.id)).lease == held.lease
        assert await _claim(store, "w2", T0 + 1) is None
        await store.release_lease(run.id, owner="w1", fence=fence)
        released = await store.get_run(run.id)
        assert released.lease.owner is None
        assert released.lease.fence == fence, "releasing must not reset the fence"
        again = await _claimed(store, "w2", T0 + 1)
        assert again.lease == Lease("w2", T0 + 1 + TTL, fence + 1)
        # The old holder can neither write nor release the new lease.
        await store.release_lease(run.id, owner="w1", fence=fence)
        assert (await store.get_run(run.id)).lease == again.lease

    async def check_commit_can_release_the_lease_in_the_same_transaction(
        self, store: Store
    ) -> None:
        run = make_run()
        await store.create_run(run, [])
        held = await _claimed(store, "w1", T0)
        fence = held.lease.fence
        version = await store.commit(
            run.id,
            expected_version=held.version,
            fence=fence,
            entries=[],
            changes=RunChanges(
                status=RunStatus.WAITING_FOR_HUMAN,
                status_reason="needs a human",
                lease_expires_at=T0 + 999,
                release_lease=True,
            ),
            now=T0 + 1,
        )
        after = await store.get_run(run.id)
        assert after.version == version == held.version + 1
        assert after.lease == Lease(None, 0.0, fence), "released, fence kept"
        # Without the flag the lease stays with its holder (and is extended).
        other = make_run()
        await store.create_run(other, [])
        mine = await _claimed(store, "w1", T0, run_id=other.id)
        await store.commit(
            other.id,
            expected_version=mine.version,
            fence=mine.lease.fence,
            entries=[],
            changes=RunChanges(lease_expires_at=T0 + 90),
            now=T0 + 1,
        )
        assert (await store.get_run(other.id)).lease == Lease("w1", T0 + 90, mine.lease.fence)

    async def check_concurrent_commits_to_many_runs_are_independent(self, store: Store) -> None:
        """Adapters may group concurrent commits; a refused one must not take the others down."""
        runs = [make_run() for _ in range(12)]
        for run in runs:
            await store.create_run(run, make_entries(run.id, [{"first": True}]))
        stale = runs[3].id
        duplicate = runs[7].id

        async def one(run: Run) -> int:
            seq = 1 if run.id == duplicate else 2
            entries = make_entries(run.id, [{"second": run.id}], first_seq=seq)
            return await store.commit(
                run.id,
                expected_version=0 if run.id == stale else 1,
                fence=None,
                entries=entries,
                changes=RunChanges(metadata={"n": run.id}),
                now=T0 + 1,
            )

        outcomes = await asyncio.gather(*(one(r) for r in runs), return_exceptions=True)
        for run, outcome in zip(runs, outcomes, strict=True):
            journal = await store.load_journal(run.id)
            row = await store.get_run(run.id)
            if run.id == stale:
                assert isinstance(outcome, StaleVersion), outcome
            elif run.id == duplicate:
                assert isinstance(outcome, JournalConflict), outcome
            else:
                assert outcome == 2, outcome
                assert [e.payload for e in journal] == [{"first": True}, {"second": run.id}]
                assert row.metadata == {"n": run.id}
                continue
            assert [e.payload for e in journal] == [{"first": True}], "refused: nothing written"
            assert row == run

    async def check_concurrent_claims_never_hand_a_run_to_two_claimers(self, store: Store) -> None:
        n_runs, n_claimers = 40, 8
        runs = [make_run(created_at=T0 + i) for i in range(n_runs)]
        for run in runs:
            await store.create_run(run, [])
        claimers = [await self.another_store() for _ in range(n_claimers)]
        taken: list[tuple[str, Run]] = []
        distinct: set[str] = set()

        async def claimer(name: str, own: Store) -> None:
            # A claim may find nothing while others hold row locks; stop once every run is taken.
            for _ in range(n_runs * n_claimers * 4):
                if len(distinct) == n_runs:
                    return
                run = await own.claim(Claim(owner=name, now=T0 + 1000, ttl=3600))
                if run is not None:
                    taken.append((name, run))
                    distinct.add(run.id)

        await asyncio.gather(*(claimer(f"c{i}", s) for i, s in enumerate(claimers)))
        counts: dict[str, int] = {}
        for _, run in taken:
            counts[run.id] = counts.get(run.id, 0) + 1
        doubles = {run_id: n for run_id, n in counts.items() if n > 1}
        assert not doubles, f"runs handed out more than once: {doubles}"
        assert distinct == {r.id for r in runs}
        for name, run in taken:
            assert run.lease.owner == name
            assert run.lease.fence == 1
            assert (await store.get_run(run.id)).lease == run.lease
        assert await _claim(store, "late", T0 + 1000) is None

    # -- approvals --------------------------------------------------------------------------------

    async def check_approvals_are_written_with_the_commit_and_round_trip(
        self, store: Store
    ) -> None:
        run = make_run(status=RunStatus.RUNNING)
        await store.create_run(run, make_entries(run.id, [{"a": 1}]))
        approval = make_approval(run.id)
        version = await store.commit(
            run.id,
            expected_version=1,
            fence=None,
            entries=make_entries(run.id, [{"wait": True}], first_seq=2),
            changes=RunChanges(status=RunStatus.WAITING_FOR_HUMAN),
            now=T0 + 1,
            approvals=[approval],
        )
        assert version == 2
        assert await store.get_approval(approval.id) == approval
        other = await self.another_store()
        assert await other.list_approvals(status=ApprovalStatus.PENDING) == [approval]
        assert await other.list_approvals(run_id=new_run_id()) == []
        assert await other.list_approvals(tenant="nobody") == []
        await expect_error(NotFound, store.get_approval("apr_missing"), "unknown approval")

    async def check_a_refused_commit_writes_no_approval(self, store: Store) -> None:
        run = make_run(status=RunStatus.RUNNING)
        await store.create_run(run, make_entries(run.id, [{"a": 1}]))
        approval = make_approval(run.id)
        await expect_error(
            StaleVersion,
            store.commit(
                run.id,
                expected_version=7,
                fence=None,
                entries=make_entries(run.id, [{"wait": True}], first_seq=2),
                changes=RunChanges(),
                now=T0 + 1,
                approvals=[approval],
            ),
            "a stale run version refuses the approval with the entries",
        )
        assert await store.list_approvals() == []
        assert await self._count("approvals") == 0

    async def check_a_stale_approval_refuses_the_whole_commit(self, store: Store) -> None:
        run = make_run(status=RunStatus.RUNNING)
        await store.create_run(run, make_entries(run.id, [{"a": 1}]))
        approval = make_approval(run.id)
        await store.commit(
            run.id,
            expected_version=1,
            fence=None,
            entries=[],
            changes=RunChanges(),
            now=T0 + 1,
            approvals=[approval],
        )
        decided = approval.vote("carl", approve=True, reason="ok", now=T0 + 2)
        rival = approval.vote("cleo", approve=False, reason="no", now=T0 + 2)
        await store.commit(
            run.id,
            expected_version=2,
            fence=None,
            entries=make_entries(run.id, [{"decided": 1}], first_seq=2),
            changes=RunChanges(),
            now=T0 + 2,
            approvals=[decided],
        )
        await expect_error(
            ApprovalConflict,
            store.commit(
                run.id,
                expected_version=3,
                fence=None,
                entries=make_entries(run.id, [{"decided": 2}], first_seq=3),
                changes=RunChanges(status=RunStatus.FAILED),
                now=T0 + 3,
                approvals=[rival],
            ),
            "two decisions on one approval version: the second loses",
        )
        assert (await store.get_approval(approval.id)).status is ApprovalStatus.APPROVED
        after = await store.get_run(run.id)
        assert (after.version, after.status) == (3, RunStatus.RUNNING), "nothing of it written"
        assert len(await store.load_journal(run.id)) == 2
        await expect_error(
            ApprovalConflict,
            store.commit(
                run.id,
                expected_version=3,
                fence=None,
                entries=[],
                changes=RunChanges(),
                now=T0 + 4,
                approvals=[approval],
            ),
            "inserting an approval id twice",
        )

    # -- helpers ----------------------------------------------------------------------------------

    async def _count(self, table: str) -> int:
        [(count,)] = await self.raw_execute(f"SELECT count(*) FROM {table}")
        return int(count)


CHECKS: list[str] = StoreConformance.all_checks()
"""The names of all checks, for ``pytest.mark.parametrize``."""


async def run_check(name: str, *, open_store: OpenStore, raw_execute: RawExecute) -> None:
    """Run one check against a fresh database (see the module docstring)."""
    await StoreConformance(open_store, raw_execute).run(name)


async def run_all(
    fresh_database: Callable[[], Awaitable[tuple[OpenStore, RawExecute]]],
) -> None:
    """Run every check, each on the fresh database that ``fresh_database()`` sets up."""
    for name in CHECKS:
        open_store, raw_execute = await fresh_database()
        await run_check(name, open_store=open_store, raw_execute=raw_execute)
