"""A call's position keys it; the id sent back is distinct within its answer and stable."""

from autonomic.core.calls import answer_ids
from autonomic.core.entries import ModelCall, ModelTurn, RunStarted, ToolIntent, ToolResult
from autonomic.core.journal import GENESIS_HASH, record
from autonomic.core.messages import Role, ToolCall
from autonomic.core.state import fold


def _calls(*ids):
    return tuple(ToolCall(i, "t", "{}") for i in ids)


def test_usable_ids_are_sent_back_unchanged():
    calls = _calls("a", "b")
    assert answer_ids(3, calls) == calls


def test_missing_ids_get_one_made_from_the_position():
    assert [c.id for c in answer_ids(3, _calls("", ""))] == ["call_3_0", "call_3_1"]


def test_an_id_repeated_within_an_answer_is_made_distinct():
    assert [c.id for c in answer_ids(1, _calls("x", "x", "x"))] == ["x", "x_1", "x_2"]
    # a made-up id never takes one the server used in the same answer
    assert [c.id for c in answer_ids(1, _calls("x", "x", "x_1"))] == ["x", "x_1_1", "x_1"]
    assert [c.id for c in answer_ids(2, _calls("", "call_2_0"))] == ["call_2_0_0", "call_2_0"]


def _journal(*bodies):
    entries, prev = [], GENESIS_HASH
    for seq, body in enumerate(bodies, start=1):
        packed = record("r", seq, body, prev_hash=prev, created_at=float(seq))
        entries.append(packed.entry)
        prev = packed.entry.hash
    return entries


def _turn(n, *calls):
    return ModelTurn(n, None, calls, "m", ModelCall())


START = RunStarted("a", "1", "m", "", "go", ("t@1",), 10)


def _intent(call_id, seq, position=None):
    return ToolIntent(call_id, "t", "1", {}, f"r:{seq}", True, position=position)


def _result(call_id, position=None):
    return ToolResult(call_id, "t", ok=True, output=call_id, position=position)


def test_an_id_reused_on_every_turn_keeps_each_turns_calls_apart():
    """The server sends "call_0" for every call: the second turn's calls are still pending
    (before 0.2 they read as done, and were never executed)."""
    same = ToolCall("call_0", "t", "{}")
    state = fold(
        "r",
        _journal(
            START,
            _turn(1, same, same),
            _intent("call_0", 3, (1, 0)),
            _result("call_0", (1, 0)),
            _intent("call_0_1", 5, (1, 1)),
            _result("call_0_1", (1, 1)),
            _turn(2, same, same),
        ),
    )
    pending = state.pending_calls()
    assert [(p.position, p.call.id, p.intent) for p in pending] == [
        ((2, 0), "call_0", None),
        ((2, 1), "call_0_1", None),
    ]
    # what the model reads back: each result answers one call of its own answer
    sent = [(m.role, [c.id for c in m.tool_calls], m.tool_call_id) for m in state.messages[1:]]
    assert sent == [
        (Role.ASSISTANT, ["call_0", "call_0_1"], None),
        (Role.TOOL, [], "call_0"),
        (Role.TOOL, [], "call_0_1"),
        (Role.ASSISTANT, ["call_0", "call_0_1"], None),
    ]


def test_entries_without_a_position_match_the_latest_answers_call_by_id():
    """0.1 wrote no position: its intents and results fold onto the call with their id."""
    state = fold(
        "r",
        _journal(
            START,
            _turn(1, *_calls("c1")),
            _intent("c1", 3),
            _result("c1"),
            _turn(2, *_calls("c2", "c3")),
            _intent("c3", 6),
            _result("c3"),
            _intent("c2", 8),
        ),
    )
    assert sorted(state.results) == [(1, 0), (2, 1)]
    (pending,) = state.pending_calls()
    assert (pending.position, pending.call.id, pending.intent) == ((2, 0), "c2", _intent("c2", 8))


def test_a_position_is_journaled_only_when_there_is_one():
    assert "position" not in _intent("c", 3).to_payload()
    payload = _intent("c", 3, (4, 1)).to_payload()
    assert payload["position"] == [4, 1]
    assert ToolIntent.from_payload(payload).position == (4, 1)
    assert ToolResult.from_payload(_result("c", (2, 0)).to_payload()).position == (2, 0)
