"""The approval value: binding, votes, quorum, expiry and escalation as pure functions."""

import pytest

from autonomic.core.approval import Approval, ApprovalStatus, approval_id, binding_hash
from autonomic.errors import ApprovalRefused

ARGS = {"to": "bob", "amount": 500}


def _approval(**kw):
    fields = {
        "id": approval_id("run_1", "c1", 4),
        "run_id": "run_1",
        "call_id": "c1",
        "step": 4,
        "tenant": "default",
        "tool": "pay@1",
        "arguments": ARGS,
        "binding": binding_hash("pay@1", ARGS, "run_1", 4),
        "explanation": "big",
        "created_at": 0.0,
        "expires_at": 100.0,
        "requester": "rita",
    } | kw
    return Approval(**fields)


def test_the_binding_changes_with_any_part_of_the_action():
    base = binding_hash("pay@1", ARGS, "run_1", 4)
    assert base == binding_hash("pay@1", {"amount": 500, "to": "bob"}, "run_1", 4), "canonical"
    for other in (
        binding_hash("pay@2", ARGS, "run_1", 4),
        binding_hash("pay@1", {**ARGS, "amount": 501}, "run_1", 4),
        binding_hash("pay@1", ARGS, "run_2", 4),
        binding_hash("pay@1", ARGS, "run_1", 5),
    ):
        assert other != base


def test_votes_quorum_and_rejection():
    a = _approval(quorum=2)
    one = a.vote("carl", approve=True, reason="ok", now=1)
    assert (one.status, one.version) == (ApprovalStatus.PENDING, 2)
    two = one.vote("cleo", approve=True, reason="ok", now=2)
    assert two.status is ApprovalStatus.APPROVED
    assert two.decided_by == ("carl", "cleo")
    no = one.vote("cleo", approve=False, reason="no", now=2)
    assert (no.status, no.decided_by) == (ApprovalStatus.REJECTED, ("cleo",))
    with pytest.raises(ApprovalRefused, match="already approved"):
        two.vote("dan", approve=False, reason="late", now=3)


def test_expiry_and_escalation_are_due_at_their_times():
    a = _approval(escalate_at=50.0, escalation_group="managers")
    assert a.due(49) is None
    assert a.due(50) == "escalate"
    assert a.escalate().due(60) is None
    assert a.due(100) == "expire"
    expired = a.expire(100)
    assert expired.status is ApprovalStatus.TIMEOUT
    assert expired.due(200) is None
    assert Approval.from_dict(expired.to_dict()) == expired
