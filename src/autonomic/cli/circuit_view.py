"""Circuit breakers as the CLI shows them: a run's refused calls with the circuit's state
(``autonomic show``) and the circuits recent runs met (``autonomic breakers``).

Live breaker state is per worker process (``Circuits.snapshot()``); what the CLI can show from any
process is what the journal recorded when a circuit refused something, which is what an operator
needs to find out why a call or a run was refused and since when.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich.markup import escape

from autonomic.core.entries import DecisionRecord, Transition
from autonomic.core.journal import Entry


def circuit_events(entries: Sequence[Entry]) -> list[dict[str, Any]]:
    """Every refusal by a circuit in a journal: seq, what was refused, the circuit's state then."""
    found: list[dict[str, Any]] = []
    for e in entries:
        body = e.body
        if isinstance(body, DecisionRecord) and body.gate == "breaker":
            found.append(
                {
                    "seq": e.seq,
                    "at": e.created_at,
                    "refused": f"call {body.call_id} ({body.tool})",
                    "verdict": body.verdict,
                    "circuit": dict(body.evidence.get("circuit") or {}),
                }
            )
        elif isinstance(body, Transition) and body.circuit is not None:
            found.append(
                {
                    "seq": e.seq,
                    "at": e.created_at,
                    "refused": "the run",
                    "verdict": "suspend",
                    "circuit": dict(body.circuit),
                }
            )
    return found


def circuit_lines(entries: Sequence[Entry]) -> list[str]:
    """``show``'s lines: each refusal with the circuit's key, state and failure count."""
    lines = []
    for ev in circuit_events(entries):
        c = ev["circuit"]
        lines.append(
            f"[bold red]circuit {escape(str(c.get('key')))}[/] {c.get('state')} "
            f"({c.get('failures')} consecutive failures, probe in {c.get('retry_in')}s): "
            f"refused {escape(ev['refused'])} at seq {ev['seq']} ({ev['verdict']})"
        )
    return lines
