"""The console's view of a run: every journal entry a step, drawn by kind, toned by outcome."""

from __future__ import annotations

from autonomic.core.approval import Approval
from autonomic.core.entries import (
    ApprovalEvent,
    Body,
    DecisionRecord,
    ModelCall,
    ModelTurn,
    Recovery,
    RunStarted,
    ToolCall,
    ToolIntent,
    ToolResult,
    Transition,
)
from autonomic.core.journal import Entry, record
from autonomic.core.messages import Usage
from autonomic.core.run import RunStatus
from autonomic.service.console.views import (
    approval_card,
    decision_for,
    detail,
    duration,
    run_page,
    status_tone,
    step_of,
    steps,
)
from autonomic.testing.store_conformance import make_run

RUN = "run_" + "b" * 32


def journal(*bodies: Body) -> list[Entry]:
    entries: list[Entry] = []
    prev = "0" * 64
    for seq, body in enumerate(bodies, start=1):
        packed = record(RUN, seq, body, prev_hash=prev, created_at=100.0 + seq)
        entries.append(packed.entry)
        prev = packed.entry.hash
    return entries


STARTED = RunStarted("recon", "1", "function:x", "do it", "task", ("post@1",), 5)
CALL = ToolCall("call_1", "post", {"amount": 27000})
TURN = ModelTurn(
    1, None, (CALL,), "m", ModelCall(Usage(300, 20), provider="p", cost_usd=0.0042), latency_ms=12.5
)
DECISION = DecisionRecord(
    call_id="call_1",
    tool="post",
    version="1",
    step=3,
    binding="f" * 64,
    verdict="needs_approval",
    gate="risk",
    explanation="large adjustments need a controller",
    risk="MEDIUM",
    evidence={"matched_rules": ["large"], "reversible": True, "policy": "/etc/secret/path.yaml"},
    approval_id="apr_" + "1" * 24,
)


def test_every_entry_is_a_step_of_its_kind_in_timeline_order() -> None:
    entries = journal(
        STARTED,
        TURN,
        DECISION,
        Transition("RUNNING", "WAITING_FOR_HUMAN", "approval needed"),
        ApprovalEvent(
            "apr_" + "1" * 24, "call_1", "approved", "approved", "f" * 64, "post", ("ann",)
        ),
        Recovery(worker="w2", fence=2, journal_seq=5),
        ToolIntent("call_1", "post", "1", {"amount": 27000}, "k", False, cost=0.01),
        ToolResult("call_1", "post", False, error={"code": "x", "message": "bank down"}),
        Transition("RUNNING", "COMPLETED", "done"),
    )
    rows = steps(entries)
    assert [r.seq for r in rows] == list(range(1, 10))
    assert [r.category for r in rows] == [
        "start", "turn", "decision", "transition", "approval", "recovery", "call", "result",
        "transition",
    ]  # fmt: skip
    turn, decision = rows[1], rows[2]
    assert (turn.cost_usd, turn.tokens, turn.latency_ms) == (0.0042, "300+20", 12.5)
    assert (decision.verdict, decision.tone, decision.nested) == ("needs_approval", "warn", True)
    assert (rows[4].tone, rows[4].verdict) == ("ok", "approved")
    assert rows[6].cost_usd == 0.01  # the contract's estimate, per call
    assert rows[7].tone == "bad"  # a failed tool result
    assert (rows[3].tone, rows[8].tone) == ("warn", "ok")
    assert rows[1].at == 1.0
    assert '"amount": 27000' in detail(entries[6].payload)


def test_a_live_step_is_the_same_row_the_page_draws() -> None:
    entries = journal(STARTED, TURN)
    live = step_of(entries[1], entries[0].created_at)
    drawn = steps(entries)[1]
    assert (live.seq, live.category, live.summary, live.cost_usd, live.at) == (
        drawn.seq,
        drawn.category,
        drawn.summary,
        drawn.cost_usd,
        drawn.at,
    )


def test_a_huge_payload_is_cut_in_the_details() -> None:
    entries = journal(STARTED, ToolResult("c", "t", True, "x" * 50_000))
    assert len(detail(entries[1].payload)) < 21_000
    assert "more characters" in detail(entries[1].payload)


def test_an_approval_card_shows_the_bound_arguments_the_risk_and_the_expiry() -> None:
    approval = Approval(
        id="apr_" + "1" * 24,
        run_id=RUN,
        call_id="call_1",
        step=3,
        tenant="t",
        tool="post@1",
        arguments={"reference": "INV-1", "amount": 27000},
        binding="f" * 64,
        explanation="large adjustments need a controller",
        created_at=0.0,
        expires_at=7200.0,
    )
    entries = journal(STARTED, TURN, DECISION)
    decision = decision_for(approval, entries)
    assert decision is not None
    card = approval_card(approval, decision, may_decide=False, why_not="members", now=3600.0)
    assert card.arguments == [("amount", "27000"), ("reference", "INV-1")]
    assert card.risk == "MEDIUM"
    assert ("reversible", "true") in card.evidence
    assert all(name != "policy" for name, _ in card.evidence)  # a server path is not shown
    assert card.expires_in == 3600.0
    assert (card.may_decide, card.why_not) == (False, "members")
    assert decision_for(approval, journal(STARTED, TURN)) is None


def test_durations_and_tones_read_at_a_glance() -> None:
    assert [duration(s) for s in (5, 125, 900, 7260, 90000, -30)] == [
        "5 s", "2 min 5 s", "15 min", "2 h 1 min", "1 d 1 h", "30 s",
    ]  # fmt: skip
    assert status_tone(RunStatus.COMPLETED) == "ok"
    assert status_tone(RunStatus.WAITING_FOR_HUMAN) == "warn"
    assert status_tone(RunStatus.FAILED) == "bad"
    assert status_tone(RunStatus.RUNNING) == "info"


def test_a_long_run_draws_its_latest_rows_and_times_them_from_the_runs_start() -> None:
    bodies: list[Body] = [STARTED]
    for n in range(1, 40):
        bodies.append(ModelTurn(n, "x", (), "m", ModelCall(Usage(1, 1), cost_usd=0.5)))
    entries = journal(*bodies)
    run = make_run(created_at=entries[0].created_at)
    page = run_page(run, entries, [], window=10)
    assert [s.seq for s in page.steps] == list(range(31, 41))
    assert page.earlier == 30
    assert page.steps[0].at == entries[30].created_at - entries[0].created_at
    assert page.spend["cost_usd"] == 19.5  # the whole run's, not the window's
    whole = run_page(run, entries, [], window=None)
    assert (len(whole.steps), whole.earlier) == (40, 0)
