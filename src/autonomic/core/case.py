"""A recorded run as a file: what ``autonomic export`` writes and a replay reads.

A *case* is a run's row and its whole journal, in a stable JSON format (``FORMAT``, version
``CASE_VERSION``; docs/release-safety.md), with secrets masked, so that a production run can be
checked in beside the code as a regression test and replayed against every later version of it
(``autonomic.testing.replay``)::

    {"format": "autonomic.case", "version": 1,
     "run": {"id", "agent", "agent_version", "model", "tenant", "status", "status_reason",
             "input", "metadata", "output", "max_turns"},
     "journal": [{"seq": 1, "kind": "run.started", "payload": {...}}, ...]}

Masked: the value of any key that names a secret (``password``, ``token``, ``api_key``,
``secret``, ``authorization``, ``credential``, ``cookie``, with any prefix: ``access_token``)
anywhere in the run or its journal,
credentials inside URLs, and ``sk-`` keys in text. The journal's hashes are not kept: a masked
payload no longer matches its hash, and a case is evidence of *behaviour*, not of integrity
(``autonomic audit verify`` proves that, on the database).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autonomic.core.entries import Body, EntryKind, decode
from autonomic.core.journal import Entry
from autonomic.core.run import Run
from autonomic.errors import InvalidInput

FORMAT = "autonomic.case"
CASE_VERSION = 1
MASK = "***"

_SECRET_KEY = re.compile(
    r"^(.*[_-])?(pass(word|wd)?|secret|token|api[_-]?key|apikey|authorization|credentials?"
    r"|cookie|private[_-]?key|access[_-]?key)$",
    re.IGNORECASE,
)
"""A key whose value is a secret: ``password``, ``api_key``, ``access_token``, ``X-Api-Key``;
not ``input_tokens`` (a count) nor ``secretary``."""
_SECRET_TEXT = (
    (re.compile(r"(\b[a-z][a-z0-9+.-]*://[^/\s:@]+:)[^@\s/]+@"), rf"\1{MASK}@"),
    (re.compile(r"\bsk-[A-Za-z0-9_-]{8,}"), f"sk-{MASK}"),
    (re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9._~+/=-]{8,}"), rf"\1 {MASK}"),
)


def mask(value: Any) -> Any:
    """``value`` with every secret masked: values under secret-sounding keys, credentials in
    URLs, API keys and bearer tokens in text. Structure and every other value are kept."""
    if isinstance(value, dict):
        return {
            k: (MASK if _SECRET_KEY.match(str(k)) and value[k] not in (None, "") else mask(v))
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [mask(v) for v in value]
    if isinstance(value, str):
        for pattern, replacement in _SECRET_TEXT:
            value = pattern.sub(replacement, value)
        return value
    return value


@dataclass(frozen=True, slots=True)
class CaseEntry:
    """One journal entry of a case: its position, kind and typed body."""

    seq: int
    kind: EntryKind
    body: Body


@dataclass(frozen=True, slots=True)
class Case:
    """A recorded run: its row (as plain data) and its journal (typed)."""

    run: dict[str, Any]
    entries: tuple[CaseEntry, ...]

    @property
    def run_id(self) -> str:
        return str(self.run["id"])

    @staticmethod
    def of(run: Run, journal: list[Entry]) -> Case:
        """The case of a stored run, secrets masked."""
        data = mask(
            {
                "id": run.id,
                "agent": run.agent,
                "agent_version": run.agent_version,
                "model": run.model,
                "tenant": run.tenant,
                "status": run.status.value,
                "status_reason": run.status_reason,
                "input": run.input,
                "metadata": run.metadata,
                "output": run.output,
                "max_turns": run.max_turns,
            }
        )
        entries = tuple(CaseEntry(e.seq, e.kind, decode(e.kind, mask(e.payload))) for e in journal)
        return Case(data, entries)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": CASE_VERSION,
            "run": self.run,
            "journal": [
                {"seq": e.seq, "kind": e.kind.value, "payload": e.body.to_payload()}
                for e in self.entries
            ],
        }

    def to_json(self) -> str:
        """The case as stable, readable JSON (sorted keys, two-space indent, one final newline)."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"

    @staticmethod
    def from_dict(data: Any, where: str = "the case") -> Case:
        """Read a case; a malformed one is refused with one line saying what is wrong."""

        def bad(what: str) -> InvalidInput:
            return InvalidInput(
                f"{where} is not an autonomic case: {what}",
                hint="write one with `autonomic export RUN > case.json`",
            )

        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise bad(f'"format" is not "{FORMAT}"')
        if data.get("version") != CASE_VERSION:
            raise bad(f"version {data.get('version')!r} is not {CASE_VERSION}")
        run, journal = data.get("run"), data.get("journal")
        if not isinstance(run, dict) or not isinstance(run.get("id"), str):
            raise bad('"run" is not an object with an "id"')
        for key in ("agent", "model"):
            if not isinstance(run.get(key), str):
                raise bad(f'"run.{key}" is missing')
        if not isinstance(journal, list) or not journal:
            raise bad('"journal" is not a non-empty list')
        entries: list[CaseEntry] = []
        for i, item in enumerate(journal):
            try:
                kind = EntryKind(item["kind"])
                entries.append(CaseEntry(int(item["seq"]), kind, decode(kind, item["payload"])))
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                problem = f"journal entry {i + 1} is malformed ({type(exc).__name__}: {exc})"
                raise bad(problem) from None
        if entries[0].kind is not EntryKind.RUN_STARTED:
            raise bad("the journal does not begin with run.started")
        return Case(run, tuple(entries))

    @staticmethod
    def load(path: str | Path) -> Case:
        """Read a case file; a missing or malformed one is refused with one clear line."""
        file = Path(path)
        try:
            text = file.read_text(encoding="utf-8")
        except OSError as exc:
            raise InvalidInput(
                f"cannot read case file {file}: {exc.strerror or exc}",
                hint="give the path of a file written by `autonomic export RUN > case.json`",
            ) from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InvalidInput(
                f"case file {file} is not JSON (line {exc.lineno}: {exc.msg})",
                hint="write one with `autonomic export RUN > case.json`",
            ) from None
        return Case.from_dict(data, f"case file {file}")
