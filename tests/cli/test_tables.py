"""Tables a person reads piped or in a narrow terminal: no value is cut to something else."""

from __future__ import annotations

import re

from rich.console import Console
from rich.table import Table

from autonomic.cli.tables import print_table

VALUES = ["reconciliation", "default", "100.0%", "17.00", "$0.0123", "WAITING_FOR_HUMAN"]


def _printed(width: int, *, reason: str = "") -> str:
    console = Console(record=True, width=width, color_system=None)
    table = Table("agent", "task", "done", "steps", "$/task", "status", "reason")
    table.add_row(*VALUES, reason)
    print_table(console, table)
    return console.export_text()


def test_numbers_names_and_statuses_are_never_cut_at_any_width() -> None:
    """At 80 columns rich cut ``100.0%`` to ``100…`` (``autonomic kpis`` piped)."""
    for width in (30, 60, 80, 120, 200):
        text = _printed(width)
        assert "…" not in text, (width, text)
        for value in VALUES:
            assert re.search(rf"(^|[\s│:]){re.escape(value)}($|[\s│])", text, re.M), (width, text)


def test_a_wide_enough_terminal_still_gets_a_table_and_text_with_spaces_wraps_in_it() -> None:
    reason = "waiting for a person to approve the ledger cleanup of last quarter"
    text = _printed(110, reason=reason)
    assert text.startswith("┏")  # a table, not records
    assert "100.0%" in text
    assert reason not in text  # folded over lines inside its column
    assert "approve" in text
