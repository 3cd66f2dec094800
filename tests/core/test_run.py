import pytest

from autonomic.core.run import TRANSITIONS, RunStatus, check_transition, validate_run_id
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
