"""A folded ``RunState`` as bytes and back: what the hot state cache keeps so that a worker
resuming a long run need not read and fold its whole journal again (``engine/hot_state.py``).

A snapshot holds exactly what the journal holds (the fold adds nothing that was not journaled),
so it needs no more protection than the journal: no credentials ever reach either. It is JSON,
never pickle: whoever can write the cache must not be able to run code in a worker, only to make
it fold the journal (a value that does not decode is a miss).

Bodies are written with their journal codec (``to_payload``/``from_payload``), so a decoded
snapshot holds the same values a fold of the stored journal would. Each ``RunState`` field has
its codec in ``_FIELDS``; ``encode`` refuses a state with a field it does not know, so a field
added to ``RunState`` without a codec fails the tests instead of vanishing from snapshots.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable
from typing import Any

from autonomic.core.bulk import bulk_allocation
from autonomic.core.entries import (
    ApprovalEvent,
    CompensationStep,
    DecisionRecord,
    PlanCandidate,
    PlanOutcome,
    PlanScore,
    Settlement,
    SubtaskStep,
    ToolIntent,
    ToolResult,
)
from autonomic.core.messages import Message, ToolCall, Usage
from autonomic.core.run import RunStatus
from autonomic.core.state import Content, RunState

FORMAT = 1
"""Bumped when the layout of a snapshot changes; a snapshot of another format is a miss."""

_Codec = tuple[Callable[[Any], Any], Callable[[Any], Any]]


def _same(value: Any) -> Any:
    return value


def _optional(codec: _Codec) -> _Codec:
    put, get = codec
    return (
        lambda v: None if v is None else put(v),
        lambda v: None if v is None else get(v),
    )


def _body(kind: Any) -> _Codec:
    return (lambda b: b.to_payload(), kind.from_payload)


def _by_position(kind: Any) -> _Codec:
    """``dict[Position, Body]`` as ``[[turn, index, payload], ...]`` (JSON keys are text)."""
    return (
        lambda d: [[t, i, b.to_payload()] for (t, i), b in d.items()],
        lambda rows: {(int(t), int(i)): kind.from_payload(p) for t, i, p in rows},
    )


def _by_number(kind: Any) -> _Codec:
    return (
        lambda d: [[n, b.to_payload()] for n, b in d.items()],
        lambda rows: {int(n): kind.from_payload(p) for n, p in rows},
    )


def _by_name(kind: Any) -> _Codec:
    return (
        lambda d: {k: b.to_payload() for k, b in d.items()},
        lambda d: {str(k): kind.from_payload(p) for k, p in d.items()},
    )


_CALLS: _Codec = (
    lambda calls: [c.to_dict() for c in calls],
    lambda rows: tuple(ToolCall.from_dict(c) for c in rows),
)

_FIELDS: dict[str, _Codec] = {
    "run_id": (_same, str),
    "status": (lambda s: s.value, RunStatus),
    "messages": (
        lambda ms: [m.to_dict() for m in ms],
        lambda rows: [Message.from_dict(m) for m in rows],
    ),
    "turns": (_same, int),
    "usage": (lambda u: u.to_dict(), lambda d: Usage(**d)),
    "last_seq": (_same, int),
    "last_hash": (_same, str),
    "output": (_same, _same),
    "tools": (list, tuple),
    "max_turns": (_same, int),
    "last_calls": _CALLS,
    "intents": _by_position(ToolIntent),
    "results": _by_position(ToolResult),
    "finished_turn": (_same, bool),
    "requester": (_same, _same),
    "decisions": _by_position(DecisionRecord),
    "approvals": _by_name(ApprovalEvent),
    "workflow": (_same, _same),
    "calls": (_same, dict),
    "outputs": (_same, dict),
    "started_at": (_same, float),
    "budget": (_same, _same),
    "guard_steps": (_same, list),
    "intent_counts": (_same, dict),
    "tool_cost": (_same, float),
    "loop_ack_seq": (_same, int),
    "taint": (_same, list),
    "_unread_taint": (_same, list),
    "_loop_suspended": (_same, bool),
    "model_cost": (_same, float),
    "model_calls": (_same, int),
    "compressions": (_same, int),
    "planning": (_same, _same),
    "plan": _optional(_body(PlanOutcome)),
    "candidates": _by_number(PlanCandidate),
    "scores": _by_number(PlanScore),
    "abort": _optional(_body(CompensationStep)),
    "compensations": _by_name(CompensationStep),
    "graph": _optional(_body(SubtaskStep)),
    "subtasks": (
        lambda d: {k: [b.to_payload() for b in steps] for k, steps in d.items()},
        lambda d: {str(k): [SubtaskStep.from_payload(p) for p in rows] for k, rows in d.items()},
    ),
    "subtasks_done": (list, list),
    "settlements": _by_position(Settlement),
    "contents": (
        lambda cs: [list(c) for c in cs],
        lambda rows: [Content(int(s), str(o), str(n), v) for s, o, n, v in rows],
    ),
    "trace": (_same, _same),
    "reopened": (_same, bool),
}

_STATE_FIELDS = tuple(f.name for f in dataclasses.fields(RunState))
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, check_circular=False)


class SnapshotError(ValueError):
    """The bytes are not a snapshot this code can use (corrupt, another format, another fold,
    another run): the caller folds the journal instead."""


def layout() -> str:
    """What a snapshot's meaning depends on besides ``FORMAT``: the fields of ``RunState``, in
    order. A worker whose ``RunState`` differs never uses another's snapshot."""
    material = f"{FORMAT}:{','.join(_STATE_FIELDS)}".encode()
    return hashlib.sha256(material).hexdigest()[:16]


def encode(state: RunState, *, tenant: str, fold: str) -> bytes:
    """``state`` as bytes, naming the run, its tenant, the journal head it was folded to and
    ``fold`` (the fold code's fingerprint: see ``engine/hot_state.py``)."""
    unknown = [name for name in _STATE_FIELDS if name not in _FIELDS]
    if unknown:
        raise TypeError(f"RunState fields without a snapshot codec: {', '.join(unknown)}")
    with bulk_allocation():
        return _encode(state, tenant=tenant, fold=fold)


def _encode(state: RunState, *, tenant: str, fold: str) -> bytes:
    body = {name: _FIELDS[name][0](getattr(state, name)) for name in _STATE_FIELDS}
    head = {
        "format": FORMAT,
        "layout": layout(),
        "fold": fold,
        "tenant": tenant,
        "run_id": state.run_id,
        "seq": state.last_seq,
        "hash": state.last_hash,
        "state": body,
    }
    return _ENCODER.encode(head).encode()


def decode(data: bytes, *, run_id: str, tenant: str, fold: str) -> RunState:
    """The state in ``data``; ``SnapshotError`` unless it is a whole snapshot of ``run_id`` of
    ``tenant``, written by a worker with this format, layout and ``fold``."""
    with bulk_allocation():
        return _decode(data, run_id=run_id, tenant=tenant, fold=fold)


def _decode(data: bytes, *, run_id: str, tenant: str, fold: str) -> RunState:
    try:
        head = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise SnapshotError(f"not JSON ({exc})") from None
    if not isinstance(head, dict):
        raise SnapshotError("not a snapshot object")
    expected = {
        "format": FORMAT,
        "layout": layout(),
        "fold": fold,
        "tenant": tenant,
        "run_id": run_id,
    }
    for key, value in expected.items():
        if head.get(key) != value:
            raise SnapshotError(f"{key} is {head.get(key)!r}, expected {value!r}")
    body = head.get("state")
    if not isinstance(body, dict) or set(body) != set(_STATE_FIELDS):
        raise SnapshotError("the state's fields differ from RunState's")
    try:
        values = {name: _FIELDS[name][1](body[name]) for name in _STATE_FIELDS}
        state = RunState(**values)
    except (TypeError, ValueError, KeyError, AttributeError, IndexError) as exc:
        raise SnapshotError(f"a field does not decode ({type(exc).__name__}: {exc})") from None
    if (state.last_seq, state.last_hash) != (head.get("seq"), head.get("hash")):
        raise SnapshotError("the head it names is not the state's")
    return state
