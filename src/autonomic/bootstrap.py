"""The composition root: the one place that turns URLs and specs into adapters.

Optional backends are imported lazily, so ``autonomic --help`` stays fast and a missing extra fails
with a message that names it.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from autonomic.adapters.store.rows import redact_url
from autonomic.engine.agent import Agent, AgentRegistry
from autonomic.errors import ConfigError
from autonomic.ports.model import Model
from autonomic.ports.store import Store

DEFAULT_DB = "sqlite:///autonomic.db"
"""A SQLite file in the working directory: the embedded default."""

_FUNCTION_MODELS: dict[str, Callable[[], Model]] = {}


def database_url(explicit: str | None = None) -> str:
    """``explicit`` (``--db``), else ``AUTONOMIC_DB``, else the embedded default."""
    return explicit or os.environ.get("AUTONOMIC_DB") or DEFAULT_DB


def build_store(url: str) -> Store:
    """A store for ``url``: ``sqlite:///path.db`` or ``postgresql://user@host:port/db``."""
    scheme = url.partition("://")[0].lower()
    if scheme == "sqlite":
        from autonomic.adapters.store.sqlite import SQLiteStore

        return SQLiteStore(url)
    if scheme in ("postgresql", "postgres"):
        try:
            from autonomic.adapters.store.postgres import PostgresStore
        except ImportError as exc:
            raise ConfigError(
                f"PostgreSQL support is not installed ({exc.name} is missing)",
                hint="install the extra: pip install 'autonomic[postgres]'",
            ) from None
        return PostgresStore(url)
    raise ConfigError(
        f"unsupported database URL {redact_url(url)!r}",
        hint="use sqlite:///path/to/file.db or postgresql://user@host:5432/dbname",
    )


def register_function_model(name: str, factory: Callable[[], Model]) -> None:
    """Make ``function:NAME`` resolve to a model built by ``factory``."""
    _FUNCTION_MODELS[name] = factory


def build_model(spec: str) -> Model:
    """A model from its spec.

    * ``scripted:PATH`` - a JSON script of turns (see ``ScriptedModel``);
    * ``function:NAME`` - a registered deterministic policy (the demo's agent brain);
    * ``openai:MODEL`` - an OpenAI-compatible server at ``AUTONOMIC_MODEL_BASE_URL`` (or
      ``OPENAI_BASE_URL``), key from ``OPENAI_API_KEY``;
    * ``gateway:PATH`` - the model gateway over the providers in a YAML/TOML file (``gateway:``
      alone reads the path from ``AUTONOMIC_GATEWAY``).
    """
    if spec in ("gateway", "gateway:"):
        spec = f"gateway:{os.environ.get('AUTONOMIC_GATEWAY', '')}"
        if spec == "gateway:":
            raise ConfigError(
                "gateway: needs a configuration file",
                hint="use gateway:PATH.yaml or set AUTONOMIC_GATEWAY=PATH.yaml",
            )
    kind, sep, rest = spec.partition(":")
    if not sep or not rest:
        raise ConfigError(
            f"bad model spec {spec!r}",
            hint="use scripted:PATH, function:NAME, openai:MODEL or gateway:PATH.yaml",
        )
    if kind == "scripted":
        from autonomic.adapters.model.scripted import ScriptedModel

        return ScriptedModel.from_file(Path(rest))
    if kind == "function":
        _load_builtin_agents()
        if rest not in _FUNCTION_MODELS:
            known = ", ".join(sorted(_FUNCTION_MODELS)) or "none"
            raise ConfigError(f"unknown function model {rest!r} (known: {known})")
        return _FUNCTION_MODELS[rest]()
    if kind == "openai":
        from autonomic.adapters.model.openai_compat import OpenAICompatModel

        base = os.environ.get("AUTONOMIC_MODEL_BASE_URL") or os.environ.get("OPENAI_BASE_URL")
        return OpenAICompatModel(rest, base_url=base, api_key=os.environ.get("OPENAI_API_KEY"))
    if kind == "gateway":
        try:
            from autonomic.gateway import Gateway, load_config
        except ImportError as exc:
            raise ConfigError(
                f"the model gateway is not installed ({exc.name} is missing)",
                hint="install the extra: pip install 'autonomic[gateway]'",
            ) from None
        return Gateway(load_config(rest))
    raise ConfigError(
        f"unknown model kind {kind!r} in {spec!r}",
        hint="use scripted:PATH, function:NAME, openai:MODEL or gateway:PATH.yaml",
    )


def load_object(path: str) -> Any:
    """Import ``module:attribute``."""
    module_name, sep, attr = path.partition(":")
    if not sep:
        raise ConfigError(f"bad import path {path!r}", hint="write module.path:attribute")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"cannot import {module_name!r}: {exc}") from None
    try:
        return getattr(module, attr)
    except AttributeError:
        raise ConfigError(f"module {module_name!r} has no attribute {attr!r}") from None


def _load_builtin_agents() -> list[Agent]:
    from autonomic.examples.reconciliation.agent import reconciliation_agent

    return [reconciliation_agent()]


def build_agents(paths: list[str] | None = None) -> AgentRegistry:
    """Built-in agents plus those named by ``paths`` and ``AUTONOMIC_AGENTS`` (comma-separated)."""
    registry = AgentRegistry(_load_builtin_agents())
    extra = list(paths or [])
    env = os.environ.get("AUTONOMIC_AGENTS")
    if env:
        extra.extend(p.strip() for p in env.split(",") if p.strip())
    for path in extra:
        obj = load_object(path)
        agents = obj() if callable(obj) and not isinstance(obj, Agent) else obj
        for agent in agents if isinstance(agents, (list, tuple)) else [agents]:
            if not isinstance(agent, Agent):
                raise ConfigError(f"{path} is not an Agent (got {type(agent).__name__})")
            registry.add(agent)
    return registry
