"""Which steps an abort undoes, in which order, with which arguments (pure)."""

from __future__ import annotations

from autonomic.core.compensation import Compensator, Completed, undo_plan


def test_completed_steps_are_undone_newest_first_with_arguments_by_name() -> None:
    done = [
        Completed("1:0", "book", {"item": "a"}, {"booking": "b-a"}),
        Completed("2:0", "notify", {"text": "hi"}, "sent"),
        Completed("3:0", "book", {"item": "c"}, {"booking": "b-c"}),
        Completed("t7", "charge", {"amount": 5, "account": "x"}, "ok"),  # a subtask, by id
    ]
    undo = {
        "book": Compensator("unbook", ("booking", "item", "absent")),
        "charge": Compensator("refund", ("amount", "account")),
    }
    plan = undo_plan(done, undo)
    assert [(u.step, u.tool) for u in plan] == [
        ("t7", "refund"),
        ("3:0", "unbook"),
        ("2:0", None),  # declares no compensation: named, not undone
        ("1:0", "unbook"),
    ]
    assert plan[0].arguments == {"amount": 5, "account": "x"}
    # the output's field first, then the call's argument; a parameter found nowhere is left out
    assert plan[1].arguments == {"booking": "b-c", "item": "c"}
    assert undo_plan([], undo) == []
