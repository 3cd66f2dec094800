"""Unmasking text before it is matched: what an attacker does to text so that a pattern, or an
exact comparison, misses it - and how each trick is undone, in bounded time.

* invisible characters (zero-width, soft hyphen, bidi controls) are dropped, and text smuggled in
  Unicode tag characters is turned back into the ASCII it encodes;
* NFKC, then homoglyphs (Cyrillic and Greek letters that look Latin) folded to Latin;
* words glued to a previous word (``USAIgnore your previous instructions``) are split at the case
  change, so word-boundary patterns see them;
* encodings are decoded - base64, hex, URL percent-encoding and rot13 - up to ``DEPTH`` levels
  (base64 of hex of ...), each decoded variant checked like the text itself.

Everything is bounded: at most ``MAX_SEGMENTS`` encoded segments per text, each at most
``MAX_SEGMENT`` characters, only the first ``MAX_DECODE`` characters searched for segments; binary
results (not mostly printable) are dropped. Used by the injection screen and the value ledger.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import re
import unicodedata
from urllib.parse import unquote

DEPTH = 2
MAX_SEGMENTS = 32
MAX_SEGMENT = 8192
MAX_DECODE = 262_144

_INVISIBLE = dict.fromkeys(
    [
        *range(0x200B, 0x2010),
        *range(0x202A, 0x202F),
        *range(0x2060, 0x2065),
        *range(0x2066, 0x206A),
        *range(0xFE00, 0xFE10),
        0xFEFF,
        0x00AD,
        0x034F,
        0x180E,
        0x061C,
    ]
)
_TAGS = {cp: (cp - 0xE0000 if 0xE0020 <= cp <= 0xE007E else None) for cp in range(0xE0000, 0xE0080)}
_CONFUSABLES = str.maketrans(
    "\u0430\u0435\u043e\u0440\u0441\u0443\u0445\u0456\u0458\u0455\u0501\u0261\u04bb\u04cf"
    "\u0442\u043c\u0432\u043a\u043d\u0410\u0412\u0415\u041a\u041c\u041d\u041e\u0420\u0421"
    "\u0422\u0423\u0425\u0406\u0408\u0405\u03b1\u03b2\u03b5\u03b9\u03ba\u03bd\u03bf\u03c1"
    "\u03c4\u03c5\u03c7\u0391\u0392\u0395\u0397\u0399\u039a\u039c\u039d\u039f\u03a1\u03a4"
    "\u03a5\u03a7\u0396",
    "aeopcyxijsdghltmbkhABEKMHOPCTYXIJSabeiknoptuxABEHIKMNOPTYXZ",
)
_GLUED = re.compile(r"[A-Z](?:(?<=[a-z0-9][A-Z])(?=[a-z])|(?<=[A-Z][A-Z])(?=[a-z]{2}))")
"""Where a word is glued on: a capital after a lower-case letter or digit and before one
(``aIg``), or the last of two capitals before two lower-case letters (``USAIgnore``). Anchored
on the capital, so the regex engine skips to capitals instead of trying every position."""
_LOWER_OR_DIGIT = frozenset("abcdefghijklmnopqrstuvwxyz0123456789")
_BASE64 = re.compile(r"[A-Za-z0-9+/]{16,}={0,2}")
"""Greedy from the left, so each match is a whole run (no look-behind: the fast scan path)."""
_B64_CLASS = str.maketrans(
    {c: ("a" if c.isascii() and (c.isalnum() or c in "+/") else " ") for c in map(chr, range(256))}
)
_B64_RUN = "a" * 16
_NOT_B64_CLASS = re.compile("[^a]")
_HEX = re.compile(r"[0-9A-Fa-f]{16,}")
_PERCENT = re.compile(r"%[0-9A-Fa-f]{2}")


def fold(text: str) -> str:
    """``text`` with invisible characters dropped, tag-smuggled text revealed, NFKC applied and
    homoglyphs folded (the characters a human cannot tell apart made equal)."""
    if text.isascii():
        return text
    text = text.translate(_TAGS).translate(_INVISIBLE)
    return unicodedata.normalize("NFKC", text).translate(_CONFUSABLES)


def unglue(text: str) -> str:
    """Split words glued at a case change (``USAIgnore`` -> ``USA Ignore``, ``noteIgnore`` ->
    ``note Ignore``)."""
    cuts: list[int] = []
    end = 0  # matches do not overlap: a cut reads the characters around it, as one match
    for match in _GLUED.finditer(text):
        at = match.start()
        if at - 1 < end:
            continue
        cuts.append(at)
        end = at + (2 if text[at - 1] in _LOWER_OR_DIGIT else 3)
    if not cuts:
        return text
    parts = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]
    return " ".join(parts)


def _printable(data: bytes) -> str | None:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if not text or sum(ch.isprintable() or ch in "\n\t" for ch in text) < 0.9 * len(text):
        return None
    return text


def _runs(head: str) -> list[str]:
    """What ``_BASE64.finditer(head)`` matches (runs of 16 or more base64 characters, with their
    ``=`` padding), found without trying every position inside every word: the text is mapped
    to one class character per character and long runs are found with ``str.find``."""
    classes = head.translate(_B64_CLASS)
    runs: list[str] = []
    position = 0
    while True:
        start = classes.find(_B64_RUN, position)
        if start < 0:
            break
        stop = _NOT_B64_CLASS.search(classes, start + len(_B64_RUN))
        end = len(head) if stop is None else stop.start()
        padded = end
        while padded < len(head) and padded - end < 2 and head[padded] == "=":
            padded += 1
        runs.append(head[start:padded])
        position = padded
    return runs


def _decode_once(text: str) -> list[str]:
    found: list[str] = []
    head = text[:MAX_DECODE]
    runs = _runs(head)
    for run in runs:
        if len(found) >= MAX_SEGMENTS:
            break
        segment = run[:MAX_SEGMENT]
        if segment.isdigit() or (segment.isalpha() and segment.islower()):
            continue  # a number or a plain word is not base64 worth decoding
        try:
            decoded = base64.b64decode(segment + "=" * (-len(segment) % 4), validate=False)
        except (binascii.Error, ValueError):
            continue
        plain = _printable(decoded)
        if plain:
            found.append(plain)
    for run in runs:  # a hex run (16+ hex digits) lies inside a base64 run: look only there
        for match in _HEX.finditer(run):
            if len(found) >= MAX_SEGMENTS:
                break
            digits = match.group(0)[:MAX_SEGMENT]
            plain = _printable(bytes.fromhex(digits[: len(digits) // 2 * 2]))
            if plain:
                found.append(plain)
        if len(found) >= MAX_SEGMENTS:
            break
    if "%" in head and len(_PERCENT.findall(head, 0, 4096)) >= 3:
        found.append(unquote(head))
    lowered = head.lower()
    if "rot13" in lowered or "rot-13" in lowered:
        found.append(codecs.encode(head, "rot13"))
    return found


def decodings(text: str, depth: int = DEPTH) -> list[str]:
    """The texts hidden in ``text`` by encoding (nested up to ``depth``), folded; ``[]`` when
    there are none."""
    out: list[str] = []
    frontier = [text]
    for _ in range(depth):
        nxt: list[str] = []
        for item in frontier:
            for decoded in _decode_once(item):
                if len(out) >= MAX_SEGMENTS:
                    return out
                out.append(fold(decoded))
                nxt.append(decoded)
        if not nxt:
            break
        frontier = nxt
    return out
