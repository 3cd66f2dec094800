import pytest

from autonomic.core.entries import ToolIntent
from autonomic.core.journal import GENESIS_HASH, Entry, EntryKind, pack
from autonomic.core.messages import Role
from autonomic.core.run import RunStatus
from autonomic.core.state import fold


def _journal(*items):
    entries: list[Entry] = []
    prev = GENESIS_HASH
    for seq, (kind, payload) in enumerate(items, start=1):
        entry = pack("r", seq, kind, payload, prev_hash=prev, created_at=float(seq)).entry
        entries.append(entry)
        prev = entry.hash
    return entries


STARTED = (
    EntryKind.RUN_STARTED,
    {"instructions": "be brief", "task": "add", "tools": ["add@1"], "max_turns": 5},
)
RUNNING = (EntryKind.TRANSITION, {"from": "PENDING", "to": "RUNNING", "reason": "claimed"})
CALLS = (
    EntryKind.MODEL_RESPONSE,
    {
        "turn": 1,
        "content": None,
        "tool_calls": [
            {"id": "c1", "name": "add", "arguments": "{}"},
            {"id": "c2", "name": "add", "arguments": "{}"},
        ],
        "usage": {"input_tokens": 10, "output_tokens": 2},
    },
)


def test_fold_rebuilds_the_conversation_from_deltas():
    state = fold(
        "r",
        _journal(
            STARTED,
            RUNNING,
            CALLS,
            (
                EntryKind.TOOL_INTENT,
                {"call_id": "c1", "tool": "add", "arguments": {}, "key": "r:4"},
            ),
            (EntryKind.TOOL_RESULT, {"call_id": "c1", "tool": "add", "ok": True, "output": 3}),
        ),
    )
    assert [m.role for m in state.messages] == [Role.SYSTEM, Role.USER, Role.ASSISTANT, Role.TOOL]
    assert state.messages[-1].content == "3"
    assert state.status is RunStatus.RUNNING
    assert state.turns == 1
    assert state.usage.input_tokens == 10
    assert state.max_turns == 5
    pending = state.pending_calls()
    assert [p.call.id for p in pending] == ["c2"]
    assert pending[0].intent is None


def test_a_started_call_without_result_is_pending_with_its_intent():
    intent = {"call_id": "c1", "tool": "add", "arguments": {"a": 1}, "key": "r:4"}
    state = fold("r", _journal(STARTED, RUNNING, CALLS, (EntryKind.TOOL_INTENT, intent)))
    assert state.pending_calls()[0].intent == ToolIntent.from_payload(intent)


def test_errors_are_observations_for_the_model():
    error = {"code": "tool_arguments_invalid", "message": "bad"}
    state = fold(
        "r",
        _journal(
            STARTED,
            RUNNING,
            CALLS,
            (EntryKind.TOOL_RESULT, {"call_id": "c1", "ok": False, "error": error}),
        ),
    )
    assert state.messages[-1].content == "ERROR tool_arguments_invalid: bad"


def test_a_gap_in_the_journal_is_refused():
    entries = _journal(STARTED, RUNNING, CALLS)
    with pytest.raises(ValueError, match="skips from seq 1 to 3"):
        fold("r", [entries[0], entries[2]])


def test_completion_records_the_output():
    final = (EntryKind.MODEL_RESPONSE, {"turn": 1, "content": "done", "tool_calls": []})
    done = (
        EntryKind.TRANSITION,
        {"from": "RUNNING", "to": "COMPLETED", "reason": "r", "output": "done"},
    )
    state = fold("r", _journal(STARTED, RUNNING, final, done))
    assert state.status is RunStatus.COMPLETED
    assert state.output == "done"
    assert state.finished_turn
