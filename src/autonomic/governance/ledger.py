"""Where each value of a run appeared: the index the provenance gate traces arguments to.

Everything that entered the run (``RunState.contents``, folded from the journal: the task and
instructions, tool outputs, humans' comments; plus the run's metadata, which its operator set) is
split into leaves - strings and numbers, with their path in a structured output - and each leaf is
*trusted* or not:

* the task, the agent's instructions, run metadata and humans' comments are trusted;
* a tool's output is untrusted, unless its contract says ``trusted_output`` (the operator's own
  database), or names ``trusted_fields`` (``messages[].from``: the mail server authenticated the
  sender; ``contacts[].email``: the user's own address book);
* with ``ids_as_handles``, an untrusted leaf under an id-like key (``id``, ``message_id``) counts
  as a handle the tool issued: trusted *as an identifier only*.

``Ledger.trace(kind, canonical)`` answers where a value was seen: trusted somewhere (fine), only in
untrusted content (with the tool, the step and an excerpt to quote), or nowhere (the model made
it up). Values are compared in canonical form (``autonomic.governance.values``): addresses, links,
accounts and numbers are extracted and normalised once per leaf; other strings are found as
whole words in the canonical text. The ledger is extended as the run goes on (``extend``), so a
check costs the same at step 5 and step 500.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from autonomic.core.state import Content
from autonomic.governance.unmask import decodings
from autonomic.governance.values import (
    DIGITS,
    EMAIL,
    IBAN,
    NUMBER,
    URL,
    ValueKind,
    account,
    amount,
    canonical_text,
    url,
)

EXCERPT = 70
"""Characters of context quoted on each side of a sighting."""
MAX_LEAF = 200_000
"""A leaf longer than this is indexed by its first characters (bounded time on huge outputs)."""
_ID_KEY = re.compile(r"(?:^|_)(?:ids?|key|ref|handle|uuid)$", re.IGNORECASE)


class Sighting(NamedTuple):
    """Where a value appeared: which content (``origin``/``name``, the journal ``seq``), at which
    field, and a short excerpt around it (what an approver reads)."""

    origin: str
    name: str
    seq: int
    field: str
    excerpt: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.origin,
            "name": self.name,
            "seq": self.seq,
            "field": self.field,
            "excerpt": self.excerpt,
        }

    def describe(self) -> str:
        where = {"tool_output": f"{self.name} output", "event": "the event's task"}.get(
            self.origin, self.name
        )
        at = f" field {self.field}" if self.field else ""
        return f'{where} (step {self.seq}{at}): "{self.excerpt}"'


class Trace(NamedTuple):
    """Where a value was seen: ``trusted`` somewhere, else the untrusted ``sightings`` (empty:
    nowhere)."""

    trusted: bool
    sightings: tuple[Sighting, ...] = ()

    @property
    def verdict(self) -> str:
        if self.trusted:
            return "trusted"
        return "untrusted" if self.sightings else "unseen"


@dataclass(frozen=True)
class OutputTrust:
    """What a tool's contract says about its output: all of it, some fields, or none trusted."""

    whole: bool = False
    fields: tuple[str, ...] = ()

    def covers(self, path: str) -> bool:
        """Whether the leaf at ``path`` (``messages[3].from``) is trusted."""
        if self.whole:
            return True
        if not self.fields:
            return False
        general = re.sub(r"\[\d+\]", "[]", path)
        return any(general == f or general.startswith(f + ".") for f in self.fields)


class _Leaf(NamedTuple):
    content: int
    field: str
    text: str
    """Canonical text (what is searched)."""
    raw: str
    """As written (what is quoted)."""


@dataclass
class _Side:
    """The trusted or the untrusted half of the index."""

    blob: list[str] = field(default_factory=list)
    starts: list[int] = field(default_factory=list)
    leaves: list[_Leaf] = field(default_factory=list)
    values: dict[tuple[ValueKind, str], int] = field(default_factory=dict)
    """(kind, canonical) -> the first leaf it was extracted from."""
    length: int = 0
    _joined: str | None = None

    def add(self, leaf: _Leaf, kinds: Iterable[tuple[ValueKind, str]]) -> None:
        index = len(self.leaves)
        self.leaves.append(leaf)
        self.starts.append(self.length)
        self.blob.append(leaf.text)
        self.length += len(leaf.text) + 1
        if self._joined is not None:  # extended, not rebuilt: a check costs the same at step 500
            self._joined = f"{self._joined}\n{leaf.text}" if self._joined or index else leaf.text
        for key in kinds:
            self.values.setdefault(key, index)

    def text(self) -> str:
        if self._joined is None:
            self._joined = "\n".join(self.blob)
        return self._joined

    def find(self, needle: str) -> Iterator[int]:
        """Leaves holding ``needle`` as a whole word (not inside a longer word)."""
        haystack = self.text()
        start = 0
        while True:
            at = haystack.find(needle, start)
            if at < 0:
                return
            end = at + len(needle)
            before = haystack[at - 1] if at else " "
            after = haystack[end] if end < len(haystack) else " "
            if not _wordy(before, needle[0]) and not _wordy(after, needle[-1]):
                yield bisect.bisect_right(self.starts, at) - 1
            start = at + 1


def _wordy(neighbour: str, edge: str) -> bool:
    """A neighbour that glues onto the value: both word characters (``malice`` is not
    ``alice``), or an address character next to an address (``x.alice@a.io``)."""
    return (neighbour.isalnum() or neighbour in "_@") and (edge.isalnum() or edge in "_@.")


def _extract(text: str) -> Iterator[tuple[ValueKind, str]]:
    """The values in a leaf, canonical: addresses, links, accounts, numbers."""
    for match in EMAIL.finditer(text):
        yield ValueKind.RECIPIENT, match.group(0).casefold()
    if "://" in text or "www." in text:
        for match in URL.finditer(text):
            yield ValueKind.URL, url(match.group(0))
    for match in IBAN.finditer(text):  # every chunk boundary: the match may run into words
        joined = ""
        for chunk in re.split(r"[ \-]", match.group(0)):
            joined += chunk
            if len(joined) >= 12:
                yield ValueKind.ACCOUNT, joined
    for match in DIGITS.finditer(text):
        number = account(match.group(0))
        yield ValueKind.ACCOUNT, number
        yield ValueKind.RECIPIENT, number
    for match in NUMBER.finditer(text):
        value = amount(match.group(0))
        if value is not None:
            yield ValueKind.AMOUNT, value


def _leaves(value: Any, path: str = "", depth: int = 0) -> Iterator[tuple[str, Any, str]]:
    """(path, leaf, key) of every string or number in a value."""
    if depth > 12:
        return
    if isinstance(value, Mapping):
        for k, v in value.items():
            yield from _leaves(v, f"{path}.{k}" if path else str(k), depth + 1)
    elif isinstance(value, list | tuple):
        for i, v in enumerate(value):
            yield from _leaves(v, f"{path}[{i}]", depth + 1)
    elif isinstance(value, str | int | float) and not isinstance(value, bool):
        key = path.rsplit(".", 1)[-1].split("[", 1)[0]
        yield path, value, key


class Ledger:
    """The index of one run's contents (build with ``extend``; trace with ``trace``)."""

    def __init__(
        self,
        trust: Mapping[str, OutputTrust] | None = None,
        *,
        ids_as_handles: bool = True,
    ) -> None:
        self.trust = dict(trust or {})
        self.ids_as_handles = ids_as_handles
        self.contents: list[Content] = []
        self.trusted = _Side()
        self.untrusted = _Side()
        self.handles: set[str] = set()
        self.first_untrusted: int | None = None
        """The seq of the first content that was not wholly trusted (when untrusted text first
        entered the run)."""

    def extend(self, contents: Sequence[Content]) -> None:
        """Index the contents not yet seen (``contents`` is the run's whole list, in order)."""
        for item in contents[len(self.contents) :]:
            self._index(item)
            self.contents.append(item)

    def add_trusted(self, name: str, value: Any, seq: int = 0) -> None:
        """Index operator content that is not in the journal (the run's metadata)."""
        self._index(Content(seq, "operator", name, value))

    def _index(self, item: Content) -> None:
        number = len(self.contents)
        if item.origin == "operator":
            trust = OutputTrust(whole=True)
        elif item.origin == "tool_output":
            trust = self.trust.get(item.name, OutputTrust())
        else:  # an event's task: another agent wrote it, no contract vouches for it
            trust = OutputTrust()
        any_untrusted = False
        for path, value, key in _leaves(item.value):
            raw = value if isinstance(value, str) else repr(value)
            raw = raw[:MAX_LEAF]
            leaf = _Leaf(number, path, canonical_text(raw), raw)
            kinds = list(_extract(leaf.text)) if isinstance(value, str) else []
            if not isinstance(value, str):
                normal = amount(value)
                if normal is not None:
                    kinds.append((ValueKind.AMOUNT, normal))
                    kinds.append((ValueKind.ACCOUNT, normal))
            if trust.covers(path):
                self.trusted.add(leaf, kinds)
                continue
            any_untrusted = True
            self.untrusted.add(leaf, kinds)
            if isinstance(value, str):  # what the text hides by encoding is content too
                for hidden in decodings(raw):
                    decoded = _Leaf(number, f"{path} (decoded)", canonical_text(hidden), hidden)
                    self.untrusted.add(decoded, _extract(decoded.text))
            if self.ids_as_handles and _ID_KEY.search(key):
                self.handles.add(leaf.text)
        if any_untrusted and self.first_untrusted is None:
            self.first_untrusted = item.seq

    def trace(self, kind: ValueKind, value: str, *, limit: int = 3) -> Trace:
        """Where ``value`` (canonical, of ``kind``) appeared."""
        if not value:
            return Trace(True)
        if (kind, value) in self.trusted.values:
            return Trace(True)
        if kind is ValueKind.IDENTIFIER and value in self.handles:
            return Trace(True)
        if (
            kind is not ValueKind.AMOUNT
            and len(value) >= 3
            and next(self.trusted.find(value), -1) >= 0
        ):
            return Trace(True)
        leaves: list[int] = []
        first = self.untrusted.values.get((kind, value))
        if first is not None:
            leaves.append(first)
        if not leaves and kind is not ValueKind.AMOUNT and len(value) >= 3:
            for index in self.untrusted.find(value):
                if index not in leaves:
                    leaves.append(index)
                if len(leaves) >= limit:
                    break
        return Trace(False, tuple(self._sighting(i, value) for i in leaves[:limit]))

    def _sighting(self, index: int, value: str) -> Sighting:
        leaf = self.untrusted.leaves[index]
        item = self.contents[leaf.content] if leaf.content < len(self.contents) else None
        at = leaf.text.find(value)
        if at < 0:  # found by its extracted form: quote the leaf's start
            at = 0
        start = max(0, at - EXCERPT)
        excerpt = leaf.text[start : at + len(value) + EXCERPT]
        excerpt = (
            ("..." if start else "")
            + excerpt
            + ("..." if at + len(value) + EXCERPT < len(leaf.text) else "")
        )
        return Sighting(
            item.origin if item else "tool_output",
            item.name if item else "",
            item.seq if item else 0,
            leaf.field,
            excerpt,
        )
