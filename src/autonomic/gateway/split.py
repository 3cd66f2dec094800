"""Model split: a small, cheap model for planning and a large one for refinement.

An agent names a model spec per phase: ``Agent(model=..., planning=Planning(model=...))``. With a
gateway, a spec may pick providers of the configuration file: ``gateway:PATH.yaml#small`` (or
``#small,vllm`` for an ordered fallback list) is a *view* of the one gateway built for
``gateway:PATH.yaml`` that routes only to those providers - with their own rate limits, breakers
and prices, so a planning burst never eats the refinement model's limits, and sharing the
gateway's buckets with every other view.

``ModelSplit.for_phase`` answers which ``Model`` a step of that phase uses;
``ModelSplit.from_config`` builds one from ``{"planning": NAME, "refinement": [NAME, ...]}``.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from autonomic.errors import ConfigError
from autonomic.gateway.gateway import Gateway
from autonomic.ports.model import Model


def view_spec(spec: str) -> tuple[str, list[str] | None]:
    """``("gateway:PATH", ["small", "vllm"])`` for ``gateway:PATH#small,vllm``; ``(spec, None)``
    for any spec without a provider list."""
    base, sep, names = spec.rpartition("#")
    if not sep or not spec.startswith("gateway"):
        return spec, None
    providers = [n.strip() for n in names.split(",")]
    if not all(providers):
        raise ConfigError(
            f"bad model spec {spec!r}: empty provider name after '#'",
            hint="write gateway:PATH.yaml#provider or gateway:PATH.yaml#first,second",
        )
    return base, providers


class Phase(enum.StrEnum):
    """What a model call is for."""

    PLANNING = "planning"
    REFINEMENT = "refinement"


@dataclass(frozen=True, slots=True)
class ModelSplit:
    """The model for each phase."""

    planning: Model
    refinement: Model

    def for_phase(self, phase: Phase | str) -> Model:
        return self.planning if Phase(phase) is Phase.PLANNING else self.refinement

    @classmethod
    def from_config(
        cls, data: Mapping[str, Any], gateway: Gateway, *, source: str = "agent"
    ) -> ModelSplit:
        """``{"planning": PROVIDER, "refinement": PROVIDER}`` (a name or a list of fallbacks)."""
        unknown = set(data) - {p.value for p in Phase}
        if unknown:
            raise ConfigError(
                f"{source}: models has unknown phase(s) {sorted(unknown)}",
                hint="use planning and refinement",
            )
        models: dict[Phase, Model] = {}
        for phase in Phase:
            value = data.get(phase.value)
            if value is None:
                raise ConfigError(
                    f"{source}: models.{phase.value} is missing",
                    hint=f"name the provider for {phase.value}, e.g. {phase.value}: small-local",
                )
            names = [value] if isinstance(value, str) else value
            if (
                not isinstance(names, list)
                or not all(isinstance(n, str) for n in names)
                or not names
            ):
                raise ConfigError(
                    f"{source}: models.{phase.value} must be a provider name or a list of them"
                )
            try:
                models[phase] = gateway.restricted(
                    names, name=f"gateway:{phase.value}:{'+'.join(names)}"
                )
            except ConfigError as exc:
                raise ConfigError(
                    f"{source}: models.{phase.value}: {exc.message}", hint=exc.hint
                ) from None
        return cls(models[Phase.PLANNING], models[Phase.REFINEMENT])
