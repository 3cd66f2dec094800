"""The timeline shows a recovery where the takeover happened, not where its note was journaled."""

from __future__ import annotations

from autonomic.core.entries import Body, ModelCall, ModelTurn, Recovery, RunStarted, ToolResult
from autonomic.core.journal import Entry, record
from autonomic.core.messages import Usage
from autonomic.core.timeline import summarise, timeline

RUN = "run_" + "a" * 32


def journal(*bodies: Body) -> list[Entry]:
    entries: list[Entry] = []
    prev = "0" * 64
    for seq, body in enumerate(bodies, start=1):
        packed = record(RUN, seq, body, prev_hash=prev, created_at=100.0 + seq)
        entries.append(packed.entry)
        prev = packed.entry.hash
    return entries


STARTED = RunStarted("a", "1", "function:x", "do it", "task", (), 5)


def turn(n: int) -> ModelTurn:
    return ModelTurn(n, None, (), None, ModelCall(Usage(1, 1)))


def test_a_recovery_note_is_shown_right_after_the_last_entry_before_the_takeover() -> None:
    # a worker died after seq 3; its successor's first commit holds turn 2 (seq 4, 5) and then
    # the note, which must not shift the seq of the step it precedes
    entries = journal(
        STARTED,
        turn(1),
        ToolResult("c1", "t", True, "x"),
        turn(2),
        ToolResult("c2", "t", True, "y"),
        Recovery(worker="w2", fence=2, journal_seq=3),
        turn(3),
    )
    rows = timeline(entries)
    assert [r.seq for r in rows] == [1, 2, 3, 6, 4, 5, 7]
    recovery = rows[3]
    assert recovery.kind == "recovery"
    assert recovery.summary.startswith(summarise(entries[5]))  # the entry's own summary, then
    assert "took over after seq 3" in recovery.summary
    assert recovery.at == entries[5].created_at - entries[0].created_at  # its own time


def test_a_recovery_already_in_place_or_naming_no_entry_stays_in_journal_order() -> None:
    in_place = journal(STARTED, turn(1), Recovery(worker="w2", fence=2, journal_seq=2), turn(2))
    assert [r.seq for r in timeline(in_place)] == [1, 2, 3, 4]
    assert "took over" not in timeline(in_place)[2].summary
    # a slice of a journal (seq 3 on) whose recovery names an entry before the slice
    whole = journal(
        STARTED, turn(1), turn(2), turn(3), Recovery(worker="w2", fence=2, journal_seq=2)
    )
    assert [r.seq for r in timeline(whole[2:])] == [3, 4, 5]
