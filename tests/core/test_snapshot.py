"""A snapshot of a folded state decodes to the state a fold of the stored journal gives, and a
snapshot of a prefix, with the rest of the journal folded on top, to the state of the whole:
over random journals (hypothesis) and over every run of the 0.1 fixture (every entry kind 0.1
wrote, every prefix). Anything that is not a whole snapshot of the run it is asked for is
refused with ``SnapshotError``, never half-used."""

import asyncio
import dataclasses
import gzip
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from autonomic.bootstrap import build_store
from autonomic.core import snapshot
from autonomic.core.canonical import canonical_json
from autonomic.core.entries import (
    ApprovalEvent,
    Body,
    CompensationStep,
    DecisionRecord,
    ModelCall,
    ModelTurn,
    PlanOutcome,
    RunStarted,
    Settlement,
    Summary,
    ToolIntent,
    ToolResult,
    Transition,
    WorkflowMove,
)
from autonomic.core.journal import GENESIS_HASH, Entry, record
from autonomic.core.messages import Message, Role, ToolCall, Usage
from autonomic.core.run import RunStatus
from autonomic.core.state import RunState, fold

FIXTURES = Path(__file__).parent / "fixtures"
RUN = "run_snap"
FOLD = "test-fold"


def make(cls: Any, *args: Any, **kwargs: Any) -> st.SearchStrategy[Any]:
    """``cls(*args, **kwargs)`` from strategies (``st.builds`` would infer the other fields)."""
    return st.tuples(st.tuples(*args), st.fixed_dictionaries(kwargs)).map(
        lambda ak: cls(*ak[0], **ak[1])
    )


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**40), 2**40)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)
names = st.sampled_from(["lookup", "send", "charge", "read"])
statuses = st.sampled_from([s.value for s in RunStatus])
positions = st.tuples(st.integers(0, 4), st.integers(0, 2)) | st.none()
usages = make(Usage, st.integers(0, 999), st.integers(0, 999))
calls = make(
    ModelCall, usages, st.sampled_from([None, "p1"]), st.sampled_from([None, 0.25]), st.just(None)
)
tool_calls = st.lists(
    make(ToolCall, st.sampled_from(["c0", "c1", "c2"]), names, st.sampled_from(["{}", '{"n": 1}'])),
    max_size=3,
).map(tuple)
decisions = make(
    DecisionRecord,
    st.sampled_from(["c0", "c1"]),
    names,
    st.just("1"),
    st.integers(0, 9),
    st.text(max_size=5),
    st.sampled_from(["allow", "needs_approval", "blocked", "suspend"]),
    st.just("risk"),
    st.text(max_size=8),
    evidence=st.sampled_from([{}, {"code": "loop.repeat"}, {"code": "budget"}]),
    position=positions,
)
bodies: st.SearchStrategy[Body] = st.one_of(
    make(
        ModelTurn,
        st.integers(1, 5),
        st.text(max_size=10) | st.none(),
        tool_calls,
        st.just("m"),
        calls,
    ),
    make(
        ToolIntent,
        st.sampled_from(["c0", "c1", "c2"]),
        names,
        st.just("1"),
        st.dictionaries(st.text(max_size=4), json_values, max_size=2),
        st.text(max_size=6),
        st.booleans(),
        read_only=st.booleans(),
        cost=st.sampled_from([0.0, 0.5]),
        position=positions,
    ),
    make(
        ToolResult,
        st.sampled_from(["c0", "c1", "c2"]),
        names,
        st.booleans(),
        json_values,
        error=st.sampled_from([None, {"code": "x", "message": "boom"}]),
        refused=st.booleans(),
        screen=st.sampled_from(
            [None, {"tainted": True, "provenance": {"source": "web"}}, {"text": "[data] hi"}]
        ),
        position=positions,
    ),
    decisions,
    make(
        ApprovalEvent,
        st.sampled_from(["a1", "a2"]),
        st.sampled_from(["c0", "c1"]),
        st.sampled_from(["requested", "vote", "decided"]),
        st.sampled_from(["pending", "approved", "rejected", "timeout"]),
        st.text(max_size=4),
        names,
        by=st.lists(st.sampled_from(["ann", "bob"]), max_size=2).map(tuple),
        reason=st.text(max_size=8) | st.none(),
    ),
    make(
        Transition,
        statuses,
        statuses,
        st.text(max_size=8),
        output=json_values,
        decision=decisions | st.none(),
        budget=st.sampled_from([None, {"max_cost": 2.0}]),
    ),
    make(
        WorkflowMove,
        st.none() | st.just("draft"),
        st.sampled_from(["draft", "review"]),
        st.just("r"),
    ),
    make(
        Summary,
        st.lists(make(Message, st.sampled_from(list(Role)), st.text(max_size=8)), max_size=3).map(
            tuple
        ),
        st.lists(calls, max_size=2).map(tuple),
        replaced=st.integers(0, 9),
    ),
    make(
        PlanOutcome,
        st.just("k"),
        st.just("p"),
        st.sampled_from(["model", "cache", "none"]),
        st.none() | st.lists(st.text(min_size=1, max_size=8), max_size=3).map(tuple),
        call=calls | st.none(),
    ),
    make(
        CompensationStep,
        st.sampled_from(["requested", "intent", "result", "skipped"]),
        step=st.none() | st.sampled_from(["1:0", "2:1"]),
        tool=st.none() | names,
        output=json_values,
    ),
    make(
        Settlement,
        st.sampled_from(["c0", "c1"]),
        names,
        st.text(max_size=4),
        st.booleans(),
        st.just("ann"),
        st.text(max_size=6),
        output=json_values,
        position=positions,
    ),
)
starts = make(
    RunStarted,
    st.just("agent"),
    st.just("1"),
    st.just("m"),
    st.text(max_size=10),
    json_values,
    st.lists(names, max_size=3).map(tuple),
    st.integers(1, 50),
    tenant=st.sampled_from(["default", "acme"]),
    budget=st.sampled_from([None, {"max_steps": 10}]),
    workflow=st.sampled_from([None, {"start": "draft"}]),
    planning=st.sampled_from([None, {"model": "m"}]),
)


def stored(items: list[Body]) -> list[Entry]:
    """The journal as a store gives it back: payloads through canonical JSON, bodies decoded."""
    out: list[Entry] = []
    prev = GENESIS_HASH
    for seq, body in enumerate(items, start=1):
        packed = record(RUN, seq, body, prev_hash=prev, created_at=1000.0 + seq)
        e = packed.entry
        payload = json.loads(canonical_json(e.payload))
        out.append(Entry(e.run_id, e.seq, e.kind, payload, e.created_at, e.hash))
        prev = e.hash
    return out


def through_snapshot(state: RunState, tenant: str = "default") -> RunState:
    data = snapshot.encode(state, tenant=tenant, fold=FOLD)
    return snapshot.decode(data, run_id=state.run_id, tenant=tenant, fold=FOLD)


def assert_prefixes_resume(run_id: str, entries: list[Entry]) -> None:
    whole = fold(run_id, entries)
    for k in range(1, len(entries) + 1):
        prefix = fold(run_id, entries[:k])
        cached = through_snapshot(prefix)
        assert cached == prefix, (run_id, k)
        for entry in entries[k:]:
            cached.apply(entry)
        assert cached == whole, (run_id, k)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(starts, st.lists(bodies, max_size=20))
def test_a_snapshot_of_any_prefix_resumes_to_the_fold_of_the_whole_journal(start, rest):
    assert_prefixes_resume(RUN, stored([start, *rest]))


@pytest.fixture(scope="module")
def old_journals(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Entry]]:
    path = tmp_path_factory.mktemp("old") / "journal-0.1.db"
    with gzip.open(FIXTURES / "journal-0.1.db.gz") as src, path.open("wb") as dst:
        shutil.copyfileobj(src, dst)

    async def load() -> dict[str, list[Entry]]:
        store = build_store(f"sqlite:///{path}")
        try:
            await store.migrate()
            runs = await store.list_runs(limit=100)
            return {run.id: await store.load_journal(run.id) for run in runs}
        finally:
            await store.close()

    return asyncio.run(load())


def test_every_prefix_of_every_old_run_resumes_from_its_snapshot(old_journals):
    assert len(old_journals) == 11
    for run_id, entries in old_journals.items():
        assert_prefixes_resume(run_id, entries)


def test_every_field_of_run_state_has_a_codec():
    fields = [f.name for f in dataclasses.fields(RunState)]
    assert fields == list(snapshot._STATE_FIELDS)
    assert set(fields) == set(snapshot._FIELDS)


def _sample() -> RunState:
    return fold(
        RUN,
        stored(
            [
                RunStarted("agent", "1", "m", "be brief", "task", ("lookup",), 5),
                ModelTurn(1, None, (ToolCall("c0", "lookup", "{}"),), "m", ModelCall(Usage(3, 4))),
            ]
        ),
    )


def _mangled(change: Any) -> bytes:
    head = json.loads(snapshot.encode(_sample(), tenant="default", fold=FOLD))
    change(head)
    return json.dumps(head).encode()


def _set(key: str, value: Any) -> Any:
    return lambda head: head.__setitem__(key, value)


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"", "not JSON"),
        (b"\xff\xfe garbage", "not JSON"),
        (b"[1, 2]", "not a snapshot"),
        (snapshot.encode(_sample(), tenant="default", fold=FOLD)[:-40], "not JSON"),
        (_mangled(_set("run_id", "run_other")), "run_id"),
        (_mangled(_set("tenant", "acme")), "tenant"),
        (_mangled(_set("fold", "another-fold")), "fold"),
        (_mangled(_set("format", 99)), "format"),
        (_mangled(_set("layout", "0000")), "layout"),
        (_mangled(_set("hash", "f" * 64)), "head"),
        (_mangled(lambda h: h["state"].pop("messages")), "fields"),
        (_mangled(lambda h: h["state"].__setitem__("intents", [[1, 2]])), "does not decode"),
        (_mangled(lambda h: h["state"].__setitem__("status", "DANCING")), "does not decode"),
        (_mangled(lambda h: h["state"].__setitem__("usage", {"bogus": 1})), "does not decode"),
    ],
)
def test_what_is_not_a_whole_snapshot_of_this_run_is_refused(data, why):
    with pytest.raises(snapshot.SnapshotError, match=why):
        snapshot.decode(data, run_id=RUN, tenant="default", fold=FOLD)


def test_a_snapshot_names_the_head_it_was_folded_to():
    state = _sample()
    head = json.loads(snapshot.encode(state, tenant="acme", fold=FOLD))
    assert (head["run_id"], head["tenant"], head["seq"], head["hash"]) == (
        RUN,
        "acme",
        state.last_seq,
        state.last_hash,
    )
