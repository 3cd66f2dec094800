"""Where a piece of content came from, and whether it may steer the agent.

Content the operator wrote (the system prompt, the task) is trusted. Everything else that reaches a
model's context — tool outputs, retrieved documents, events from other agents — is data, never
instructions: it is screened, labelled with its provenance, and when it looks like it is trying to
give orders it *taints* the next action, which then needs a human.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


class Source(enum.StrEnum):
    """The kind of origin. Only ``OPERATOR`` content is trusted by default."""

    OPERATOR = "operator"
    """System prompt, task, approver comments: written by people who run the agent."""
    TOOL_OUTPUT = "tool_output"
    DOCUMENT = "document"
    """Retrieved text: a web page, a file, a search hit, a memory entry."""
    AGENT_EVENT = "agent_event"
    """A message or event from another agent (which may itself have read something hostile)."""
    MODEL = "model"
    """The model's own output: untrusted as arguments, but not a carrier of third-party orders."""


@dataclass(frozen=True, slots=True)
class Provenance:
    """A label carried with content: what kind of source, which one, and whether it was flagged.

    Args:
        source: the kind of origin.
        name: which one (a tool name, a URL, an agent id).
        tainted: the injection screen flagged this content.
    """

    source: Source
    name: str = ""
    tainted: bool = False

    @property
    def trusted(self) -> bool:
        return self.source is Source.OPERATOR

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source.value, "name": self.name, "tainted": self.tainted}

    @staticmethod
    def from_dict(data: dict[str, Any]) -> Provenance:
        return Provenance(Source(data["source"]), str(data.get("name", "")), bool(data["tainted"]))

    @staticmethod
    def from_label(data: Mapping[str, Any]) -> Provenance:
        """A label as the journal keeps it (a tool result's ``screen.provenance``), read
        leniently: an unknown source is a tool output, a missing flag means tainted (only tainted
        results are kept as labels)."""
        try:
            source = Source(data.get("source", Source.TOOL_OUTPUT.value))
        except ValueError:
            source = Source.TOOL_OUTPUT
        return Provenance(source, str(data.get("name", "")), bool(data.get("tainted", True)))
