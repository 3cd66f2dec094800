"""A failure: what the engine journals when a step raises something the protocol did not expect.

An exception that escapes a step - from agent code (a ``FunctionModel``'s policy, an agent's input
check), a hook, a gate, a policy - must never leave a run RUNNING with no reason, and must never
reach a user as a traceback. The engine (``Engine._drive``) ends the run instead, in one commit, with
a one-line reason and this evidence in the ``transition`` entry's ``error``:

* ``type`` and ``message`` (the first line, cut to ``MESSAGE_LIMIT`` characters, with credentials in
  URLs and ``key=value`` secrets masked - an exception's text is not trusted to be secret-free);
* ``where``: the file and line of the innermost frame outside the standard library, and ``in``: the
  function that raised there;
* ``digest``: a hash of the exception type and the frames' files, functions and lines - the same
  code path gives the same digest in every run, so failures can be grouped - never the traceback's
  locals or text.

What the run becomes depends on who can fix it (``Failure.status``):

* an operator can (``RunInputError`` and the other ``InvalidInput``, ``ConfigError``, ``NotFound``;
  an error that says it is retryable): **SUSPENDED**, the reason saying what to give and that
  ``autonomic resume RUN --force`` continues it;
* nobody but a developer can (a bug: ``TypeError``, ``KeyError``...): **FAILED**.

Not a failure of the run (``store_failure``): the store itself failing (the database down or
damaged). Nothing is written and the run is left as the journal has it - still RUNNING under a lease
that expires - so recovery takes it over once the store is back, exactly as after a crash.
``LeaseLost``, ``RunInterrupted`` and cancellation are not failures either: they stop the worker,
not the run.
"""

from __future__ import annotations

import hashlib
import re
import sysconfig
import traceback
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from autonomic.core.entries import ToolIntent
from autonomic.core.run import RunStatus
from autonomic.errors import (
    AutonomicError,
    ConcurrencyError,
    ConfigError,
    InvalidInput,
    NotFound,
    StoreUnavailable,
)

MESSAGE_LIMIT = 300
"""The longest exception message journaled (the rest is cut, with an ellipsis)."""

_SECRETS = (
    (re.compile(r"(\w+://[^:/@\s]*):[^@\s]*@"), r"\1:***@"),
    (re.compile(r"(?i)\b(bearer)\s+[\w.~+/=-]+"), r"\1 ***"),
    (
        re.compile(
            r"(?i)\b([\w-]*(?:api[_-]?key|token|secret|password|passwd|authorization))"
            r"(['\"]?\s*[=:]\s*['\"]?)[^\s'\",;]+"
        ),
        r"\1\2***",
    ),
    (re.compile(r"\bsk-[A-Za-z0-9_-]{8,}"), "sk-***"),
)
_STDLIB = tuple(
    {
        form
        for key in ("stdlib", "platstdlib")
        for form in (sysconfig.get_paths()[key], str(Path(sysconfig.get_paths()[key]).resolve()))
    }
)
_STORE = f"{Path('autonomic', 'adapters', 'store')}"


def scrub(text: str) -> str:
    """``text`` as one line of at most ``MESSAGE_LIMIT`` characters, secrets masked."""
    line = " ".join(text.split())
    for pattern, replacement in _SECRETS:
        line = pattern.sub(replacement, line)
    return line if len(line) <= MESSAGE_LIMIT else line[: MESSAGE_LIMIT - 1] + "…"


def store_failure(exc: BaseException) -> bool:
    """The store failed, not the run: ``StoreUnavailable``, a conflict the session could not
    resolve, or any error raised from inside a store adapter (a driver's error)."""
    if isinstance(exc, StoreUnavailable | ConcurrencyError):
        return True
    return any(_STORE in frame.filename for frame in traceback.extract_tb(exc.__traceback__))


def operator_can_fix(exc: BaseException) -> bool:
    """Configuration or input an operator can correct, or a transient failure: suspend, not fail."""
    if isinstance(exc, InvalidInput | ConfigError | NotFound):
        return True
    return isinstance(exc, AutonomicError) and exc.retryable


@dataclass(frozen=True, slots=True)
class Failure:
    """One unexpected exception, as the journal records it."""

    status: RunStatus
    type: str
    message: str
    where: str
    function: str
    digest: str
    code: str
    hint: str | None = None

    @staticmethod
    def of(exc: BaseException) -> Failure:
        frames = _frames(exc.__traceback__)
        path, line, function = frames[-1] if frames else ("?", 0, "?")
        for candidate in reversed(frames):
            if not candidate[0].startswith(_STDLIB):
                path, line, function = candidate
                break
        digest = hashlib.sha256(
            "|".join(
                [type(exc).__qualname__, *(f"{_short(p)}:{f}:{n}" for p, n, f in frames)]
            ).encode()
        ).hexdigest()[:16]
        known = exc if isinstance(exc, AutonomicError) else None
        return Failure(
            status=RunStatus.SUSPENDED if operator_can_fix(exc) else RunStatus.FAILED,
            type=type(exc).__qualname__,
            message=scrub(known.message if known is not None else str(exc)),
            where=f"{_short(path)}:{line}",
            function=function,
            digest=digest,
            code=known.code if known is not None else "unexpected_error",
            hint=scrub(known.hint) if known is not None and known.hint else None,
        )

    def to_dict(self) -> dict[str, Any]:
        """The ``error`` of the ``transition`` entry that ends (or suspends) the run."""
        out: dict[str, Any] = {
            "code": self.code,
            "type": self.type,
            "message": self.message,
            "where": self.where,
            "in": self.function,
            "digest": self.digest,
        }
        if self.hint:
            out["hint"] = self.hint
        return out

    def reason(self, run_id: str, in_doubt: ToolIntent | None = None) -> str:
        """The one line a person reads (``status_reason``; the CLI prints it)."""
        if self.status is RunStatus.SUSPENDED:
            text = f"{self.message} ({self.hint})" if self.hint else self.message
            if "autonomic resume" not in text:
                text += f"; fix it, then `autonomic resume {run_id} --force`"
        else:
            text = (
                f"unexpected {self.type} in {self.function} ({self.where}): "
                f"{self.message or '(no message)'} [digest {self.digest}]"
            )
        if in_doubt is not None:
            text += (
                f"; {in_doubt.tool} call {in_doubt.call_id} had started and its result was not "
                "recorded: it may have taken effect"
            )
        return text


def _frames(tb: TracebackType | None) -> list[tuple[str, int, str]]:
    """(file, line, function) per frame, innermost last; qualified names where Python has them."""
    out: list[tuple[str, int, str]] = []
    while tb is not None:
        code = tb.tb_frame.f_code
        out.append((code.co_filename, tb.tb_lineno, code.co_qualname))
        tb = tb.tb_next
    return out


def _short(path: str) -> str:
    """The last two parts of a path: enough to find the file, without the machine's layout."""
    parts = Path(path).parts
    return "/".join(parts[-2:]) if parts else path
