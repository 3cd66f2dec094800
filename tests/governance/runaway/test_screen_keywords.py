"""The screen's keyword pre-check finds exactly what one ``keyword in text`` per keyword finds.

``_present`` is the fast path every screened tool result takes (issue 17: a small output costs a
lookup a word); a keyword it missed would skip a pattern and let an injection through, one it
invented would only cost time. Both of its paths (few distinct words, remembered word by word;
many, joined) are compared here with the plain definition on texts built from the keywords
themselves, their fragments and noise, so near-misses are common.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from autonomic.governance import injection
from autonomic.governance.injection import _ALL_KEYWORDS, _lowered, _present

_PIECES = st.one_of(
    st.sampled_from(_ALL_KEYWORDS),
    st.sampled_from(_ALL_KEYWORDS).map(lambda k: k[: max(1, len(k) // 2)]),
    st.sampled_from(_ALL_KEYWORDS).map(lambda k: k[len(k) // 2 :]),
    st.text(alphabet='abcdefghijklmnopqrstuvwxyzIGNORE <|>![]{}":,0123456789-_\n', max_size=12),
)
_TEXTS = st.lists(_PIECES, max_size=40).map("".join)


def plain(lowered: str) -> frozenset[str]:
    return frozenset(k for k in _ALL_KEYWORDS if k in lowered)


@settings(max_examples=400, deadline=None)
@given(_TEXTS)
def test_few_words_path_matches_the_plain_definition(text: str) -> None:
    lowered = _lowered(text)
    assert _present(lowered) == plain(lowered)
    assert _present(lowered) == plain(lowered)  # again, from the remembered words


@settings(max_examples=100, deadline=None)
@given(st.lists(_TEXTS, min_size=2, max_size=4))
def test_many_words_path_matches_the_plain_definition(texts: list[str]) -> None:
    filler = " ".join(f"w{i}x{'q' * (i % 7)}z" for i in range(injection._FEW_WORDS + 1))
    filler = filler.translate(str.maketrans("0123456789", "abcdefghij"))
    lowered = _lowered(filler + " " + " ".join(texts))
    assert len(set(lowered.translate(injection._LETTERS_ONLY).split())) > injection._FEW_WORDS
    assert _present(lowered) == plain(lowered)


def test_the_word_memory_is_bounded(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(injection, "_IN_WORD", {})
    monkeypatch.setattr(injection, "_IN_WORD_MAX", 8)
    for i in range(30):
        _present(f"word{'abcdefghijklmnopqrstuvwxyz'[i % 26]}{i // 26} ignore")
        assert len(injection._IN_WORD) <= 8
