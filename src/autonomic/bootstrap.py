"""The composition root: the one place that turns URLs and specs into adapters.

Optional backends are imported lazily, so ``autonomic --help`` stays fast and a missing extra fails
with a message that names it.
"""

from __future__ import annotations

import importlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autonomic.adapters.store.rows import redact_url
from autonomic.errors import ConfigError
from autonomic.ports.model import Model, RoutedModel
from autonomic.ports.store import Store

if TYPE_CHECKING:
    from autonomic.core.event_types import EventTypes
    from autonomic.engine.agent import Agent, AgentRegistry
    from autonomic.engine.step import Hook
    from autonomic.governance.runaway.gate import Runaway
    from autonomic.governance.runaway.tenant import TenantBudget
    from autonomic.ports.bus import Bus
    from autonomic.ports.counters import Counters
    from autonomic.ports.credentials import CredentialIssuer
    from autonomic.ports.embedder import Embedder
    from autonomic.ports.plan_cache import PlanCache
    from autonomic.ports.state_cache import StateCache

DEFAULT_DB = "sqlite:///autonomic.db"
"""A SQLite file in the working directory: the embedded default."""

_FUNCTION_MODELS: dict[str, Callable[[], Model]] = {}


def database_url(explicit: str | None = None) -> str:
    """``explicit`` (``--db``), else ``AUTONOMIC_DB``, else the embedded default."""
    return explicit or os.environ.get("AUTONOMIC_DB") or DEFAULT_DB


def build_store(url: str, *, readonly: bool = False, create: bool = True) -> Store:
    """A store for ``url``: ``sqlite:///path.db`` or ``postgresql://user@host:port/db``.

    ``readonly``: the database refuses every write (and a SQLite file is never created).
    ``create=False``: a SQLite file that does not exist is refused rather than created.
    """
    scheme = url.partition("://")[0].lower()
    if scheme == "sqlite":
        from autonomic.adapters.store.sqlite import SQLiteStore

        return SQLiteStore(url, readonly=readonly, create=create)
    if scheme in ("postgresql", "postgres"):
        try:
            from autonomic.adapters.store.postgres import PostgresStore
        except ImportError as exc:
            raise ConfigError(
                f"PostgreSQL support is not installed ({exc.name} is missing)",
                hint="install the extra: pip install 'autonomic[postgres]'",
            ) from None
        return PostgresStore(url, readonly=readonly)
    raise ConfigError(
        f"unsupported database URL {redact_url(url)!r}",
        hint="use sqlite:///path/to/file.db or postgresql://user@host:5432/dbname",
    )


def build_credentials(spec: str | None = None) -> CredentialIssuer | None:
    """The issuer of tools' scoped credentials, from ``spec`` or ``AUTONOMIC_CREDENTIALS``:
    ``env`` (``AUTONOMIC_SECRET_*`` variables), ``file:PATH`` (a JSON file), or nothing (tools
    that declare credentials then fail their calls with a clear error)."""
    from autonomic.ports.credentials import CredentialIssuer

    spec = spec or os.environ.get("AUTONOMIC_CREDENTIALS")
    if not spec:
        return None
    if spec == "env":
        from autonomic.adapters.credentials.env import EnvSecrets

        return CredentialIssuer(EnvSecrets())
    if spec.startswith("file:") and len(spec) > 5:
        from autonomic.adapters.credentials.file import FileSecrets

        return CredentialIssuer(FileSecrets(spec[5:]))
    raise ConfigError(
        f"unknown credentials source {spec!r}", hint="use env or file:PATH (a JSON file)"
    )


DEFAULT_BUS = "sql"
"""The embedded bus, in the run store's own database."""


def bus_url(explicit: str | None = None) -> str:
    """``explicit`` (``--bus``), else ``AUTONOMIC_BUS``, else ``sql`` (the embedded bus)."""
    return explicit or os.environ.get("AUTONOMIC_BUS") or DEFAULT_BUS


def open_bus(url: str, store: Store, *, types: EventTypes | None = None) -> Bus:
    """The bus for ``url``: ``sql`` is the embedded bus in ``store``'s own database (SQLite or
    PostgreSQL, migrated); ``kafka://host:port`` is Kafka (the kafka extra). Nothing connects
    here: the first publish or poll does."""
    base, _, query = url.partition("?")
    scheme = base.partition("://")[0].lower() if "://" in base else base.lower()
    if scheme == "sql":
        from autonomic.adapters.bus.sql import SqlBus
        from autonomic.adapters.store.sql import SqlStore

        if not isinstance(store, SqlStore):
            raise ConfigError(
                f"the embedded bus needs a SQL store, not {type(store).__name__}",
                hint="use --db sqlite:///... or postgresql://..., or --bus kafka://host:9092",
            )
        options = _bus_options(url, query, ("lease_ttl", "poll_interval"))
        return SqlBus(store, types=types, **options)
    if scheme == "kafka":
        try:
            from autonomic.adapters.bus.kafka import KafkaBus
        except ImportError as exc:
            raise ConfigError(
                f"Kafka support is not installed ({exc.name} is missing)",
                hint="install the extra: pip install 'autonomic[kafka]'",
            ) from None
        return KafkaBus(url, types=types)  # its URL options: adapters/bus/kafka.py
    raise ConfigError(
        f"unsupported bus URL {redact_url(url)!r}",
        hint="use sql (the embedded bus, in the --db database) or kafka://host:9092",
    )


def _bus_options(url: str, query: str, known: tuple[str, ...]) -> dict[str, float]:
    """``?lease_ttl=2&poll_interval=0.05``: positive numbers, names from ``known``."""
    from urllib.parse import parse_qsl

    options: dict[str, float] = {}
    for name, value in parse_qsl(query, keep_blank_values=True):
        if name not in known:
            raise ConfigError(
                f"bus URL {redact_url(url)!r}: unknown option {name!r}",
                hint=f"known options: {', '.join(known)}",
            )
        try:
            number = float(value)
        except ValueError:
            number = -1.0
        if not number > 0:
            raise ConfigError(f"bus URL {redact_url(url)!r}: {name} must be a positive number")
        options[name] = number
    return options


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
      alone reads the path from ``AUTONOMIC_GATEWAY``); ``gateway:PATH#NAME[,NAME...]`` routes
      only to the named providers (the model split: a small planner, a large actor).
    """
    if spec.startswith("gateway") and "#" in spec:
        from autonomic.gateway.split import view_spec

        parent_spec, providers = view_spec(spec)
        parent = build_model(parent_spec)
        assert providers is not None
        return _gateway_view(parent, providers, spec)
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
            from autonomic.gateway.config import load_config
            from autonomic.gateway.gateway import Gateway
        except ImportError as exc:
            raise ConfigError(
                f"the model gateway is not installed ({exc.name} is missing)",
                hint="install the extra: pip install 'autonomic[gateway]'",
            ) from None
        return Gateway(load_config(rest), resolve=build_model)
    raise ConfigError(
        f"unknown model kind {kind!r} in {spec!r}",
        hint="use scripted:PATH, function:NAME, openai:MODEL or gateway:PATH.yaml",
    )


def _gateway_view(parent: Model, providers: list[str], spec: str) -> Model:
    """The view of ``parent`` (a gateway) that routes to ``providers`` only."""
    if not isinstance(
        parent, RoutedModel
    ):  # pragma: no cover - view_spec only accepts gateway specs
        raise ConfigError(f"{spec!r}: '#providers' applies to gateway: specs only")
    try:
        return parent.restricted(providers, name=spec)
    except ConfigError as exc:
        raise ConfigError(f"model spec {spec!r}: {exc.message}", hint=exc.hint) from None


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
    """The demo agents, and the deterministic models they bring (``function:NAME``)."""
    from autonomic.examples.bus import agent as bus  # its agents load with --agent (bus demo)
    from autonomic.examples.reconciliation import agent as reconciliation
    from autonomic.examples.runaway import agent as runaway
    from autonomic.examples.swarm import agent as swarm  # loads with --agent (swarm demo)
    from autonomic.examples.triage import agent as triage

    for example in (reconciliation, runaway, triage, bus, swarm):
        for name, factory in example.FUNCTION_MODELS.items():
            _FUNCTION_MODELS.setdefault(name, factory)
    return [reconciliation.reconciliation_agent(), runaway.runaway_agent(), triage.triage_agent()]


def build_agents(paths: list[str] | None = None) -> AgentRegistry:
    """Built-in agents plus those named by ``paths`` and ``AUTONOMIC_AGENTS`` (comma-separated)."""
    from autonomic.engine.agent import Agent, AgentRegistry  # here: `autonomic runs` needs none

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


def build_embedder(name: str | None = None) -> Embedder:
    """The loop guard's embedder: ``hashed`` (default, offline) or ``semantic`` (the extra)."""
    choice = (name or os.environ.get("AUTONOMIC_EMBEDDER") or "hashed").strip().lower()
    if choice == "hashed":
        from autonomic.governance.runaway.hashed import HashedNgramEmbedder

        return HashedNgramEmbedder()
    if choice == "semantic":
        try:
            from autonomic.adapters.embedder.semantic import SemanticEmbedder

            return SemanticEmbedder()
        except ImportError as exc:
            raise ConfigError(
                f"the semantic embedder is not installed ({exc.name} is missing)",
                hint="install the extra: pip install 'autonomic[semantic]', or use "
                "AUTONOMIC_EMBEDDER=hashed",
            ) from None
    raise ConfigError(
        f"unknown embedder {choice!r} in AUTONOMIC_EMBEDDER",
        hint="use hashed (offline default) or semantic",
    )


def build_counters(url: str | None = None) -> Counters:
    """Shared counters for tenant budgets: Redis at ``AUTONOMIC_REDIS_URL``, else in memory."""
    target = url or os.environ.get("AUTONOMIC_REDIS_URL")
    if not target:
        from autonomic.adapters.counters.memory import MemoryCounters

        return MemoryCounters()
    if not target.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigError(
            f"unsupported counters URL {redact_url(target)!r} in AUTONOMIC_REDIS_URL",
            hint="use redis://host:6379/0",
        )
    from autonomic.adapters.redis.counters import RedisCounters  # names the extra if missing

    return RedisCounters(target)


def build_state_cache(value: str | None = None) -> StateCache | None:
    """Where runs' folded state is kept for the worker that resumes them (docs/stores.md, "Hot
    run state"): ``AUTONOMIC_STATE_CACHE`` is a ``redis://`` URL, or ``off``; unset, the Redis
    of ``AUTONOMIC_REDIS_URL`` when there is one (the cache pays for runs of a few hundred steps
    and is skipped for short ones: benchmarks/README.md), else none."""
    raw = (value if value is not None else os.environ.get("AUTONOMIC_STATE_CACHE", "")).strip()
    if raw in ("off", "none"):
        return None
    if not raw:
        raw = os.environ.get("AUTONOMIC_REDIS_URL", "").strip()
        if not raw.startswith(("redis://", "rediss://", "unix://")):
            return None  # no Redis configured (build_counters reports a bad URL)
    if raw.startswith(("redis://", "rediss://", "unix://")):
        from autonomic.adapters.redis.state_cache import RedisStateCache  # names the extra

        return RedisStateCache(raw)
    raise ConfigError(
        f"AUTONOMIC_STATE_CACHE={redact_url(raw)!r} is not a state cache",
        hint="use redis://host:6379/0 to keep runs' folded state in Redis, or off",
    )


def build_plan_cache(value: str | None = None) -> PlanCache | None:
    """Where planning agents' plans are reused: ``AUTONOMIC_PLAN_CACHE`` is ``memory`` (the
    default: per process), ``off`` (plan every run) or a ``redis://`` URL (shared by every
    worker)."""
    raw = (value if value is not None else os.environ.get("AUTONOMIC_PLAN_CACHE", "")).strip()
    if raw in ("", "memory"):
        from autonomic.gateway.plan_cache import LocalPlanCache

        return LocalPlanCache()
    if raw in ("off", "none"):
        return None
    if raw.startswith(("redis://", "rediss://", "unix://")):
        from autonomic.adapters.redis.plan_cache import RedisPlanCache  # names the extra if missing

        return RedisPlanCache(raw)
    raise ConfigError(
        f"AUTONOMIC_PLAN_CACHE={redact_url(raw)!r} is not a plan cache",
        hint="use memory (the default), off, or redis://host:6379/0 to share plans between workers",
    )


def tenant_budgets(text: str | None = None) -> dict[str, TenantBudget]:
    """Per-tenant daily budgets from ``AUTONOMIC_TENANT_BUDGETS`` (JSON: tenant -> limits; the
    tenant ``*`` applies to every tenant not named), e.g. ``{"acme": {"tokens": 2000000}}``."""
    raw = text if text is not None else os.environ.get("AUTONOMIC_TENANT_BUDGETS", "")
    if not raw.strip():
        return {}
    hint = 'e.g. AUTONOMIC_TENANT_BUDGETS=\'{"acme": {"tokens": 2000000, "cost": 50}}\''
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"AUTONOMIC_TENANT_BUDGETS is not JSON: {exc}", hint=hint) from None
    if not isinstance(data, dict):
        raise ConfigError("AUTONOMIC_TENANT_BUDGETS must be a JSON object", hint=hint)
    known = {"turns", "tokens", "cost", "tool_calls"}
    budgets: dict[str, TenantBudget] = {}
    for tenant, limits in data.items():
        if not isinstance(limits, dict) or set(limits) - known:
            raise ConfigError(
                f"AUTONOMIC_TENANT_BUDGETS[{tenant!r}]: limits must be an object with keys "
                f"{', '.join(sorted(known))}",
                hint=hint,
            )
        bad = [k for k, v in limits.items() if not isinstance(v, int | float) or v < 0]
        if bad:
            raise ConfigError(
                f"AUTONOMIC_TENANT_BUDGETS[{tenant!r}]: {', '.join(bad)} must be numbers >= 0",
                hint=hint,
            )
        from autonomic.governance.runaway.tenant import TenantBudget

        budgets[str(tenant)] = TenantBudget(**limits)
    return budgets


def build_runaway() -> Runaway:
    """The runaway guards every engine gets: embedder, tenant ledger and counters from the
    environment (``AUTONOMIC_EMBEDDER``, ``AUTONOMIC_TENANT_BUDGETS``, ``AUTONOMIC_REDIS_URL``)."""
    from autonomic.governance.runaway.gate import Runaway
    from autonomic.governance.runaway.tenant import TenantLedger

    budgets = tenant_budgets()
    default = budgets.pop("*", None)
    ledger = TenantLedger(build_counters(), budgets, default=default)
    return Runaway(embedder=build_embedder(), ledger=ledger)


def build_telemetry(*, metrics: bool = False) -> list[Hook]:
    """The tracing and metrics hooks the environment asks for (docs/observability.md).

    Tracing: when the ``OTEL_*`` variables name an OTLP endpoint (the SDK is not imported
    otherwise). Metrics: when ``metrics`` (a worker serving ``/metrics``) or
    ``PROMETHEUS_MULTIPROC_DIR`` is set."""
    from autonomic.observability import metrics as metrics_module
    from autonomic.observability.tracing import Tracing

    hooks: list[Hook] = []
    tracing = Tracing.from_environment()
    if tracing is not None:
        from autonomic.engine.tracing import TracingHook

        hooks.append(TracingHook(tracing))
    if metrics or metrics_module.enabled_by_environment():
        from autonomic.engine.metering import MetricsHook

        hooks.append(MetricsHook(metrics_module.Metrics.get()))
    return hooks
