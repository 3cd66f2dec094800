"""Structured reasoning: what a model said about *why*, journaled as fields, not only as text.

Models give their reasoning three ways: a separate field of the answer (``reasoning_content``, as
DeepSeek, vLLM and Ollama send it), tags in the content (``<think>...</think>``), or structured
output (a JSON object with ``reasoning``, ``alternatives``, ``confidence``, ``decision``). Whichever
it was, ``extract`` makes one ``Reasoning`` of it and the model turn journals it under
``reasoning`` (only when there is some: old journals and answers without any stay as they were).
``trace_rows`` reads a run's journal as one row per model turn - the reasoning beside the tools it
chose and the gates' verdicts on them - which ``autonomic trace search`` filters.

Model output is untrusted: wrong types are dropped, not trusted; sizes are capped.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

MAX_THOUGHTS = 20_000
MAX_ALTERNATIVES = 20
MAX_ALTERNATIVE = 500

_THINK = re.compile(r"<think>(.*?)</think>", re.DOTALL | re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Reasoning:
    """What a model gave of its reasoning on one turn.

    Attributes:
        thoughts: the reasoning text.
        alternatives: options it says it considered.
        confidence: how sure it says it is, 0 to 1.
        decision: what it says it decided, in its words.
        source: where it came from: ``field``, ``tags`` or ``structured``.
    """

    thoughts: str | None = None
    alternatives: tuple[str, ...] = ()
    confidence: float | None = None
    decision: str | None = None
    source: str = "field"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"source": self.source}
        if self.thoughts is not None:
            out["thoughts"] = self.thoughts
        if self.alternatives:
            out["alternatives"] = list(self.alternatives)
        if self.confidence is not None:
            out["confidence"] = self.confidence
        if self.decision is not None:
            out["decision"] = self.decision
        return out

    @staticmethod
    def from_dict(d: Mapping[str, Any]) -> Reasoning:
        return Reasoning(
            thoughts=_text(d.get("thoughts"), MAX_THOUGHTS),
            alternatives=_alternatives(d.get("alternatives")),
            confidence=_confidence(d.get("confidence")),
            decision=_text(d.get("decision"), MAX_ALTERNATIVE),
            source=str(d.get("source", "field")),
        )


def _text(value: Any, cap: int) -> str | None:
    if not isinstance(value, str) or not value.strip():
        return None
    return value.strip()[:cap]


def _alternatives(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list):
        return ()
    out = []
    for item in value[:MAX_ALTERNATIVES]:
        text = (
            item
            if isinstance(item, str)
            else json.dumps(item, sort_keys=True)
            if isinstance(item, dict)
            else None
        )
        if text:
            out.append(text[:MAX_ALTERNATIVE])
    return tuple(out)


def _confidence(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    if number != number:  # NaN
        return None
    if 1 < number <= 100:  # a percentage
        number /= 100
    return min(1.0, max(0.0, number))


def extract(content: str | None, reasoning_field: str | None = None) -> Reasoning | None:
    """The reasoning in an answer, or ``None`` when it gave none."""
    structured = _structured(content)
    if structured is not None:
        if structured.thoughts is None and reasoning_field:
            return Reasoning(
                _text(reasoning_field, MAX_THOUGHTS),
                structured.alternatives,
                structured.confidence,
                structured.decision,
                "structured",
            )
        return structured
    thoughts = _text(reasoning_field, MAX_THOUGHTS)
    if thoughts is not None:
        return Reasoning(thoughts=thoughts, source="field")
    if content:
        tagged = [t.strip() for t in _THINK.findall(content) if t.strip()]
        if tagged:
            return Reasoning(thoughts="\n".join(tagged)[:MAX_THOUGHTS], source="tags")
    return None


def _structured(content: str | None) -> Reasoning | None:
    if not content or not content.lstrip().startswith("{"):
        return None
    try:
        data = json.loads(content)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    thoughts = data.get("reasoning", data.get("thoughts", data.get("thought")))
    found = Reasoning(
        thoughts=_text(thoughts, MAX_THOUGHTS),
        alternatives=_alternatives(data.get("alternatives")),
        confidence=_confidence(data.get("confidence")),
        decision=_text(data.get("decision"), MAX_ALTERNATIVE),
        source="structured",
    )
    if found == Reasoning(source="structured"):
        return None
    return found


@dataclass(frozen=True, slots=True)
class TraceRow:
    """One model turn of a run as ``trace search`` shows it."""

    run_id: str
    agent: str
    seq: int
    turn: int
    tools: tuple[str, ...]
    verdicts: tuple[str, ...]
    reasoning: Reasoning | None
    content: str | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "agent": self.agent,
            "seq": self.seq,
            "turn": self.turn,
            "tools": list(self.tools),
            "verdicts": list(self.verdicts),
            "reasoning": self.reasoning.to_dict() if self.reasoning else None,
            "content": self.content,
        }

    def matches(
        self,
        *,
        agent: str | None = None,
        tool: str | None = None,
        decision: str | None = None,
        text: str | None = None,
    ) -> bool:
        """Every filter given holds: the agent, a tool it chose, a verdict on one of them (or
        the decision it stated), a text in its reasoning, alternatives or answer."""
        if agent is not None and self.agent != agent:
            return False
        if tool is not None and tool not in self.tools:
            return False
        if decision is not None:
            said = (self.reasoning.decision or "") if self.reasoning else ""
            if decision not in self.verdicts and decision.lower() not in said.lower():
                return False
        if text is not None:
            r = self.reasoning
            haystack = " ".join(
                [self.content or "", r.thoughts or "" if r else "", *(r.alternatives if r else ())]
            )
            if text.lower() not in haystack.lower():
                return False
        return True


def trace_rows(run_id: str, agent: str, entries: Sequence[Any]) -> list[TraceRow]:
    """A run's model turns with what followed each: its tool calls' verdicts (a call no gate
    journaled a decision about was allowed: an allow with nothing to say is not journaled).
    ``entries``: the run's journal (``core/journal.Entry``), read as stored payloads."""
    rows: list[TraceRow] = []
    verdicts: dict[int, list[str]] = {}
    for e in entries:
        kind = e.kind.value
        p = e.payload
        if kind == "model.response":
            raw = p.get("reasoning")
            rows.append(
                TraceRow(
                    run_id,
                    agent,
                    e.seq,
                    int(p.get("turn", 0)),
                    tuple(
                        str(c.get("name")) for c in p.get("tool_calls") or () if isinstance(c, dict)
                    ),
                    (),
                    Reasoning.from_dict(raw) if isinstance(raw, dict) else None,
                    p.get("content"),
                )
            )
        elif kind == "decision" and rows:
            verdicts.setdefault(len(rows) - 1, []).append(str(p.get("verdict")))
    return [
        TraceRow(
            r.run_id,
            r.agent,
            r.seq,
            r.turn,
            r.tools,
            tuple(verdicts.get(i, ("allow",) * len(r.tools))),
            r.reasoning,
            r.content,
        )
        for i, r in enumerate(rows)
    ]
