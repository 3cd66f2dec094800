"""Every journal entry kind prints as a live line: a kind without a style once printed ``[]``,
which rich refuses as markup, and the run failed in the CLI's live hook."""

from __future__ import annotations

from rich.console import Console

from autonomic.cli.render import KIND_STYLE, entry_line
from autonomic.core.entries import CompensationStep, EntryKind, PlanCandidate, PlanScore
from autonomic.core.journal import record


def test_every_entry_kind_has_a_style() -> None:
    assert set(KIND_STYLE) == {k.value for k in EntryKind}


def test_new_entries_print_as_live_lines() -> None:
    console = Console(record=True, width=200)
    bodies = [
        PlanCandidate(1, steps=("a",)),
        PlanScore(1, 2.5, "function:f", "because [tags] stay text"),
        CompensationStep("skipped", step="5:0", of="post", reason="declares none"),
    ]
    prev = "0" * 64
    for seq, body in enumerate(bodies, start=1):
        packed = record("run_x", seq, body, prev_hash=prev, created_at=0.0)
        prev = packed.entry.hash
        console.print(entry_line(packed.entry))
    text = console.export_text()
    assert "candidate plan 1 scored 2.5 by function:f: because [tags] stay text" in text
    assert "declares none" in text
