"""Providers: the model servers a gateway may send a call to, and what each one costs and allows.

A provider is configuration, not a connection: its name, how to reach it (an OpenAI-compatible
``base_url`` and model, or a scripted/other model spec for tests and replays), its context window,
its prices and its rate limits, and which priority classes of calls it may serve. The API key is
never stored here, only the *name* of the environment variable holding it, so a configuration file
can be committed and logged.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from autonomic.ports.model import Priority

__all__ = ["Limits", "Pricing", "Priority", "Provider", "ProviderKind"]


class ProviderKind(enum.StrEnum):
    """How a provider is reached."""

    OPENAI = "openai"
    """Any OpenAI-compatible chat-completions server (OpenAI, vLLM, Ollama, ...)."""
    SCRIPTED = "scripted"
    """A JSON script of turns (``ScriptedModel``): tests and the offline demo."""
    MODEL = "model"
    """Any model spec ``build_model`` understands (``function:NAME``, replays, ...)."""


@dataclass(frozen=True, slots=True)
class Limits:
    """Rate limits of one provider. ``None`` means unlimited.

    ``burst_seconds`` sizes the token buckets: they hold that many seconds' worth of the limit, so
    an idle provider absorbs a short burst and the rate over any window never exceeds the limit by
    more than one bucket.
    """

    requests_per_minute: float | None = None
    tokens_per_minute: float | None = None
    burst_seconds: float = 1.0
    max_concurrency: int = 64
    """Connections (and calls in flight) to this provider, shared by every caller in the process."""


@dataclass(frozen=True, slots=True)
class Pricing:
    """US dollars per million tokens."""

    input_per_million: float = 0.0
    output_per_million: float = 0.0

    def cost(self, input_tokens: int, output_tokens: int) -> float:
        """Cost of a call that used these tokens."""
        return (
            input_tokens * self.input_per_million + output_tokens * self.output_per_million
        ) / 1_000_000


ALL_PRIORITIES: frozenset[Priority] = frozenset(Priority)


@dataclass(frozen=True, slots=True)
class Provider:
    """One model server the gateway can route to."""

    name: str
    model: str
    kind: ProviderKind = ProviderKind.OPENAI
    base_url: str | None = None
    api_key_env: str | None = None
    """Name of the environment variable that holds the API key (never the key itself)."""
    context_window: int = 8192
    max_output_tokens: int | None = None
    """Sent as ``max_tokens``; also the output bound of the pre-call cost estimate."""
    pricing: Pricing = field(default_factory=Pricing)
    limits: Limits = field(default_factory=Limits)
    serves: frozenset[Priority] = ALL_PRIORITIES
    """Priority classes this provider may answer (a weaker fallback usually not ``critical``)."""
    encoding: str | None = None
    """tiktoken encoding for exact counts (``cl100k_base``, ``o200k_base``); guessed from
    ``model`` when None; unknown models are counted conservatively."""
    timeout: float = 120.0
    script: str | None = None
    """For ``scripted``: the script file. For ``model``: the model spec."""

    @property
    def output_estimate(self) -> int:
        """Output tokens assumed before a call: the cap if one is set, else 1024."""
        return self.max_output_tokens if self.max_output_tokens is not None else 1024
