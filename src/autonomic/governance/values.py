"""The argument values that matter, and the one canonical form they are compared in.

An injected instruction succeeds when the agent acts *with the attacker's values*: their address as
the recipient, their account as the payee, their link in the message, their path to delete. Which
arguments carry such values is decided by the argument's name and the value's shape (both
configurable, ``ValueRules``), never by what any text said. Each kind is compared in one
normal form, so ``Attacker@Evil.com `` is ``attacker@evil.com``, ``DE89 3704 0044`` is
``DE8937040044``, ``$1,250.00`` is ``1250``, ``HTTPS://www.Evil.com/x/`` is ``https://evil.com/x``,
and full-width, zero-width and homoglyph tricks do not make a value look new.

Pure functions, no I/O: ``autonomic.governance.ledger`` indexes content with them and
``autonomic.governance.provenance_gate`` traces a call's arguments.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, NamedTuple

from autonomic.errors import InvalidInput
from autonomic.governance.unmask import fold


class ValueKind(enum.StrEnum):
    """What an argument value is, for tracing."""

    RECIPIENT = "recipient"
    """Who receives something: an e-mail address, a phone number, a user or channel name."""
    ACCOUNT = "account"
    """Where money goes: an IBAN, an account or card number, a payee."""
    URL = "url"
    """Where something is sent or fetched: a link, an endpoint, a webhook."""
    PATH = "path"
    """What is written, moved or deleted: a file or directory."""
    IDENTIFIER = "identifier"
    """Which record is acted on: an id, a key, a reference."""
    AMOUNT = "amount"
    """How much: a sum, a price, a quantity."""
    TEXT = "text"
    """Free text to be sent: its embedded addresses, links and accounts are traced."""


_DEFAULT_NAMES: dict[ValueKind, str] = {
    ValueKind.RECIPIENT: r"(?:^|_)(?:to|cc|bcc|recipients?|emails?|e_?mail_address|address|phone"
    r"|channel|user(?:name)?|assignee|owner|share_with|invitees?|attendees?|participants?)$",
    ValueKind.ACCOUNT: r"account|iban|payee|beneficiary|card|routing|wallet|swift|bic|sort_code",
    ValueKind.URL: r"url|uri|link|endpoint|webhook|href|domain|host",
    ValueKind.PATH: r"path|file|filename|dir|directory|folder|dest|destination|target",
    ValueKind.IDENTIFIER: r"(?:^|_)(?:ids?|key|ref|reference|handle|number|code)$",
    ValueKind.AMOUNT: r"amount|price|total|sum$|^value$|quantity|qty|fee|cost",
    ValueKind.TEXT: r"body|text|message|content|subject|note|comment|description|memo|title"
    r"|summary",
}

EMAIL = re.compile(r"[a-z0-9._%+\-]+@[a-z0-9\-]+(?:\.[a-z0-9\-]+)+", re.IGNORECASE)
URL = re.compile(r"\b(?:https?|ftp)://[^\s<>\"'`)\]]+|\bwww\.[^\s<>\"'`)\]]+", re.IGNORECASE)
IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?:[ \-]?[A-Z0-9]{2,4}){3,8}\b", re.IGNORECASE)
DIGITS = re.compile(r"(?<![\w.,])\+?\d[\d \-]{5,}\d(?![\w])")
"""Long digit runs (account and phone numbers), with the spaces and dashes people write."""
NUMBER = re.compile(r"(?<![\w.])-?\d+(?:[.,\u00a0 ']\d{3})*(?:[.,]\d+)?(?![\w])")
ABS_PATH = re.compile(r"^(?:/|~/|[A-Za-z]:\\)[^\s]*$")


def canonical_text(text: str) -> str:
    """Text as values are compared in it: NFKC, no invisible characters, homoglyphs folded,
    case folded, runs of whitespace as one space."""
    return " ".join(fold(text).casefold().split())


def amount(value: Any) -> str | None:
    """A number in one form (``1,250.00``, ``1.250,00``, ``1250`` and ``1250.0`` are ``1250``),
    ``None`` when ``value`` is not a number."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int) or (isinstance(value, str) and value.isascii() and value.isdigit()):
        return str(int(value))  # the common case, without a Decimal
    if isinstance(value, float):
        text = repr(value)
    elif isinstance(value, str):
        text = value.strip().lstrip("$€£¥").rstrip("$€£¥ ").replace("\u00a0", "").replace(" ", "")
        text = text.replace("'", "")
        if "," in text and "." in text:  # the later one is the decimal separator
            if text.rfind(",") > text.rfind("."):
                text = text.replace(".", "").replace(",", ".")
            else:
                text = text.replace(",", "")
        elif "," in text:  # 1,250 (thousands) or 12,50 (decimals)
            head, _, tail = text.rpartition(",")
            text = f"{head.replace(',', '')}.{tail}" if len(tail) != 3 else text.replace(",", "")
        elif text.count(".") > 1:
            text = text.replace(".", "")
    else:
        return None
    try:
        number = Decimal(text)
    except (InvalidOperation, ValueError):
        return None
    if not number.is_finite():
        return None
    normal = number.normalize()
    return format(normal, "f") if normal == normal.to_integral() else str(normal)


def url(text: str) -> str:
    """A URL in one form: no scheme case, no ``www.``, no default port, fragment or trailing
    slash."""
    value = canonical_text(text).rstrip(".,;")
    value = re.sub(r"^(https?|ftp)://", "", value)
    value = value.removeprefix("www.")
    value = value.split("#", 1)[0]
    host, slash, rest = value.partition("/")
    host = host.removesuffix(":443").removesuffix(":80")
    return (host + slash + rest).rstrip("/")


def account(text: str) -> str:
    """An account number without spaces, dashes or case."""
    return re.sub(r"[\s\-]", "", canonical_text(text))


def canonical(kind: ValueKind, value: Any) -> str | None:
    """``value`` in the normal form of ``kind`` (``None``: nothing to trace)."""
    if kind is ValueKind.AMOUNT:
        return amount(value)
    if not isinstance(value, str):
        return amount(value) if isinstance(value, int | float) else None
    if kind is ValueKind.URL:
        return url(value)
    if kind is ValueKind.ACCOUNT:
        return account(value)
    if kind is ValueKind.RECIPIENT:
        found = EMAIL.search(canonical_text(value))
        if found:
            return found.group(0)
        digits = re.sub(r"[\s\-()]", "", value)
        if re.fullmatch(r"\+?\d{6,}", digits):
            return digits
    if kind is ValueKind.PATH:
        path = canonical_text(value)
        path = re.sub(r"/+", "/", path).removeprefix("./")
        return path.rstrip("/") or path
    return canonical_text(value)


def embedded(text: str) -> Iterator[tuple[ValueKind, str, str]]:
    """The addresses, links and account numbers inside free text: (kind, as written, canonical)."""
    for match in EMAIL.finditer(text):
        yield ValueKind.RECIPIENT, match.group(0), match.group(0).casefold()
    for match in URL.finditer(text):
        yield ValueKind.URL, match.group(0), url(match.group(0))
    for match in IBAN.finditer(text):
        joined = ""
        for chunk in re.split(r"[ \-]", match.group(0)):
            joined += chunk
            if len(joined) >= 12:
                yield ValueKind.ACCOUNT, match.group(0), account(joined)
    for match in DIGITS.finditer(text):
        yield ValueKind.ACCOUNT, match.group(0), account(match.group(0))


class Argument(NamedTuple):
    """One argument value that matters: where in the arguments, what kind, the value."""

    path: str
    kind: ValueKind
    value: Any


@dataclass(frozen=True)
class ValueRules:
    """Which arguments carry values that matter, by name (a regular expression on the argument's
    key, case-insensitive) and, for keys no rule names, by shape (an e-mail address, a URL, an
    IBAN, an absolute path).

    Args:
        names: per kind, the key pattern; replaces the default for that kind.
        ignore: argument keys never traced (``dry_run``, ``format`` ...).
        by_shape: also classify unnamed string values by their shape.
    """

    names: Mapping[ValueKind, str] = field(default_factory=dict)
    ignore: frozenset[str] = frozenset()
    by_shape: bool = True
    _compiled: tuple[tuple[ValueKind, re.Pattern[str]], ...] = field(
        default=(), init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        merged = {**_DEFAULT_NAMES, **{ValueKind(k): v for k, v in self.names.items()}}
        compiled: list[tuple[ValueKind, re.Pattern[str]]] = []
        for kind in (  # the order decides ties: `account_url` is a URL, `to_account` an account
            ValueKind.URL,
            ValueKind.ACCOUNT,
            ValueKind.RECIPIENT,
            ValueKind.PATH,
            ValueKind.AMOUNT,
            ValueKind.IDENTIFIER,
            ValueKind.TEXT,
        ):
            try:
                compiled.append((kind, re.compile(merged[kind], re.IGNORECASE)))
            except re.error as exc:
                raise InvalidInput(
                    f"value rule for {kind.value}: {merged[kind]!r} is not a regular "
                    f"expression: {exc}"
                ) from None
        object.__setattr__(self, "_compiled", tuple(compiled))
        object.__setattr__(self, "ignore", frozenset(self.ignore))

    def kind_of(self, key: str, value: Any) -> ValueKind | None:
        """The kind of the value at ``key``, ``None`` when it is not traced."""
        if key in self.ignore or isinstance(value, bool) or value is None:
            return None
        for kind, pattern in self._compiled:
            if pattern.search(key):
                if kind is ValueKind.AMOUNT and amount(value) is None:
                    continue
                return kind
        if not self.by_shape or not isinstance(value, str):
            return None
        text = value.strip()
        if EMAIL.fullmatch(text):
            return ValueKind.RECIPIENT
        if URL.fullmatch(text):
            return ValueKind.URL
        if IBAN.fullmatch(text):
            return ValueKind.ACCOUNT
        if ABS_PATH.match(text) and len(text) > 1:
            return ValueKind.PATH
        return None

    def arguments(self, arguments: Mapping[str, Any]) -> list[Argument]:
        """The values of ``arguments`` that matter, nested lists and objects walked (a list
        item is named by its list's key)."""
        found: list[Argument] = []
        self._walk(arguments, "", "", found, 0)
        return found

    def _walk(self, value: Any, key: str, path: str, out: list[Argument], depth: int) -> None:
        if depth > 8 or len(out) > 200:  # a hostile argument tree costs bounded time
            return
        if isinstance(value, Mapping):
            for k, v in value.items():
                self._walk(v, str(k), f"{path}.{k}" if path else str(k), out, depth + 1)
        elif isinstance(value, list | tuple):
            for i, v in enumerate(value[:100]):
                self._walk(v, key, f"{path}[{i}]", out, depth + 1)
        else:
            kind = self.kind_of(key, value)
            if kind is not None:
                out.append(Argument(path, kind, value))
