"""Token counting: exact for OpenAI-family encodings, offline; conservative for everything else.

Counts decide rate-limit reservations, pre-call budget checks and when to compress a context, so
an under-count is the dangerous error: a prompt believed to fit that does not. Hence:

* models tiktoken knows (``gpt-4o`` -> ``o200k_base``, ``gpt-4``/``gpt-3.5`` -> ``cl100k_base``,
  or a provider's explicit ``encoding``) are counted exactly, with OpenAI's per-message framing;
* any other model is counted with ``cl100k_base`` and a 25 % margin plus framing (open-weight
  tokenizers such as Llama's and Mistral's land well inside that on prose and code), or, if no
  encoding file is available at all, as one token per two bytes of UTF-8.

The encoding files never come from the network at run time: ``scripts/lib/env.sh`` extracts
them once (from the ``litellm`` wheel, which ships them) into ``TIKTOKEN_CACHE_DIR``, named as
tiktoken's cache expects (the SHA-1 of their download URL); tiktoken checks their SHA-256. When a
file is missing, counting falls back to the conservative path rather than downloading.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from autonomic.core.messages import Message, ModelResponse, ToolSpec

log = logging.getLogger("autonomic.gateway")

ENCODING_FILES: dict[str, str] = {
    "cl100k_base": "9b5ad71b2ce5302211f9c61530b329a4922fc6a4",
    "o200k_base": "fb374d419588a4632f3f557e76b4b70aebbca790",
    "p50k_base": "ec7223a39ce59f226a68acc30dc1af2788490e15",
}
"""Encodings we can count offline, by the cache file name tiktoken looks for (SHA-1 of the URL)."""

UNKNOWN_MODEL_MARGIN = 1.25
PER_MESSAGE = 3
"""OpenAI's framing: each message costs 3 tokens, a name 1 more, the reply is primed with 3."""


def encoding_cache_dir() -> Path:
    """``TIKTOKEN_CACHE_DIR``, else ``~/.cache/autonomic/tiktoken`` (where env.sh extracts)."""
    explicit = os.environ.get("TIKTOKEN_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "autonomic" / "tiktoken"


@functools.cache
def _load(name: str, cache_dir: str) -> Any:
    """The tiktoken ``Encoding`` ``name`` from ``cache_dir``, or None if its file is missing."""
    file_name = ENCODING_FILES.get(name)
    if file_name is None or not (Path(cache_dir) / file_name).is_file():
        log.warning(
            "tiktoken encoding %s is not in %s; counting conservatively "
            "(run scripts/lib/env.sh's ensure_tiktoken_cache to install it)",
            name,
            cache_dir,
        )
        return None
    import tiktoken

    previous = os.environ.get("TIKTOKEN_CACHE_DIR")
    os.environ["TIKTOKEN_CACHE_DIR"] = cache_dir  # tiktoken reads its cache location from here
    try:
        return tiktoken.get_encoding(name)
    finally:
        if previous is None:
            del os.environ["TIKTOKEN_CACHE_DIR"]
        else:
            os.environ["TIKTOKEN_CACHE_DIR"] = previous


def encoding_for(model: str, explicit: str | None = None) -> tuple[str | None, bool]:
    """(encoding name, exact?) for ``model``: exact when tiktoken maps it (or it is explicit)."""
    if explicit:
        return explicit, True
    import tiktoken

    try:
        return tiktoken.encoding_name_for_model(model.rsplit("/", 1)[-1]), True
    except KeyError:
        return "cl100k_base", False


class TokenCounter:
    """Counts tokens for one model. ``exact`` says whether counts are exact or upper estimates."""

    def __init__(self, model: str, *, encoding: str | None = None) -> None:
        name, exact = encoding_for(model, encoding)
        self._encoding = _load(name, str(encoding_cache_dir())) if name else None
        self.exact = exact and self._encoding is not None
        self.model = model

    def text(self, text: str) -> int:
        """Tokens in ``text``."""
        if not text:
            return 0
        if self._encoding is None:
            return math.ceil(len(text.encode("utf-8")) / 2)
        n = len(self._encoding.encode(text, disallowed_special=()))
        return n if self.exact else math.ceil(n * UNKNOWN_MODEL_MARGIN)

    def messages(self, messages: Sequence[Message], tools: Sequence[ToolSpec] = ()) -> int:
        """Prompt tokens of a chat request: messages with OpenAI's framing, plus tool schemas."""
        total = PER_MESSAGE  # the reply's priming
        for m in messages:
            total += PER_MESSAGE + self.text(m.content or "")
            if m.name:
                total += 1 + self.text(m.name)
            for call in m.tool_calls:
                total += PER_MESSAGE + self.text(call.name) + self.text(call.arguments)
            if m.tool_call_id:
                total += self.text(m.tool_call_id)
        if tools:
            schema = json.dumps(
                [
                    {"name": t.name, "description": t.description, "parameters": t.parameters}
                    for t in tools
                ],
                sort_keys=True,
                separators=(",", ":"),
            )
            total += self.text(schema) + 10 * len(tools)
        return total

    def response(self, response: ModelResponse) -> int:
        """Output tokens of an answer (for servers that report no usage)."""
        total = self.text(response.content or "")
        for call in response.tool_calls:
            total += PER_MESSAGE + self.text(call.name) + self.text(call.arguments)
        return max(1, total)
