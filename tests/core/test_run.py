import dataclasses

import pytest

from autonomic.core.run import (
    TRANSITIONS,
    Lease,
    Run,
    RunStatus,
    check_transition,
    validate_run_id,
)
from autonomic.errors import IllegalTransition, InvalidInput


def test_every_status_has_a_row_in_the_transition_table():
    assert set(TRANSITIONS) == set(RunStatus)


@pytest.mark.parametrize("status", [RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED])
def test_terminal_statuses_go_nowhere(status):
    assert status.terminal
    for target in RunStatus:
        with pytest.raises(IllegalTransition):
            check_transition("run_x", status, target)


def test_illegal_transition_names_both_ends():
    with pytest.raises(IllegalTransition) as info:
        check_transition("run_abc", RunStatus.PENDING, RunStatus.COMPLETED)
    assert "PENDING -> COMPLETED" in str(info.value)
    assert "run_abc" in str(info.value)
    assert info.value.to_dict()["code"] == "illegal_transition"


@pytest.mark.parametrize(
    ("source", "target"),
    [
        (RunStatus.PENDING, RunStatus.RUNNING),
        (RunStatus.RUNNING, RunStatus.WAITING_FOR_HUMAN),
        (RunStatus.WAITING_FOR_HUMAN, RunStatus.RUNNING),
        (RunStatus.SUSPENDED, RunStatus.RUNNING),
        (RunStatus.RUNNING, RunStatus.COMPLETED),
        (RunStatus.RUNNING, RunStatus.CANCELLED),
    ],
)
def test_legal_transitions_pass(source, target):
    check_transition("run_x", source, target)


def test_run_ids_are_validated_with_a_hint():
    assert validate_run_id("run_" + "a" * 32)
    with pytest.raises(InvalidInput) as info:
        validate_run_id("run_123; DROP TABLE runs")
    assert "autonomic runs" in (info.value.hint or "")


def _run() -> Run:
    return Run(
        "run_" + "0" * 32, "agent", "1", "m", RunStatus.RUNNING, 3, Lease("w", 9.0, 2), 1.0, 2.0,
        metadata={"k": "v"}, parent_run_id="run_" + "1" * 32,
    )  # fmt: skip


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"version": 4, "updated_at": 5.0},
        {"status": RunStatus.COMPLETED, "output": {"a": 1}, "lease": Lease(None, 0.0, 2)},
        {"queued": True, "capability": "c", "metadata": {}},
    ],
)
def test_replace_is_dataclasses_replace(changes):
    run = _run()
    copy = run.replace(**changes)
    assert copy == dataclasses.replace(run, **changes)
    assert copy is not run
    assert run == _run(), "the original is unchanged"


def test_replace_refuses_a_field_runs_do_not_have():
    with pytest.raises(TypeError):
        _run().replace(colour="blue")
