"""A tool call's place in its run: the position that keys it, and the id that answers it.

A model server names each tool call it proposes, and the chat protocol wants that id back on the
tool's result. But servers are not careful with it: some repeat one id on every turn, some send
none, some repeat an id inside one answer. So the run never keys a call by the server's id: a call
is its **position** - the turn of the model answer that proposed it (counted by the fold, from 1)
and its index in that answer (from 0). Intents, decisions and results are matched by position.

The id is only what the protocol needs: the server's own id is sent back unchanged when it is
usable; a missing one gets a stable id made from the position (``call_{turn}_{index}``); a repeat
inside one answer gets the position's index appended (``{id}_{index}``), so every call of an
answer has an id of its own and each result answers exactly one call. An id reused across turns
is sent back as it came: within a turn it is unambiguous, and positions keep the turns apart.
"""

from __future__ import annotations

from collections.abc import Sequence

from autonomic.core.messages import ToolCall

Position = tuple[int, int]
"""(turn, index): the model answer that proposed a call, and where in that answer it stands."""


def answer_ids(turn: int, calls: Sequence[ToolCall]) -> tuple[ToolCall, ...]:
    """The calls of the ``turn``-th answer, each with an id distinct within the answer.

    Deterministic from the answer alone, so every process folding the journal sends back the same
    ids. The common case - every id present and distinct - returns the calls unchanged."""
    ids = [c.id for c in calls]
    if all(ids) and len(set(ids)) == len(ids):
        return tuple(calls)
    taken = set(filter(None, ids))
    out: list[ToolCall] = []
    used: set[str] = set()
    for index, call in enumerate(calls):
        wanted = call.id or f"call_{turn}_{index}"
        if wanted in used or (not call.id and wanted in taken):
            base, n = f"{wanted}_{index}", 1
            wanted = base
            while wanted in used or wanted in taken:
                wanted = f"{base}_{n}"
                n += 1
        used.add(wanted)
        out.append(call if wanted == call.id else ToolCall(wanted, call.name, call.arguments))
    return tuple(out)
