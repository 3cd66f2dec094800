"""The gateway's configuration file (YAML or TOML), validated with errors that say where and how.

Every mistake is one line naming the file, the line (YAML) and the key path, what is wrong and how
to fix it, e.g. ``gateway.yaml:14: providers[1].limits.requests_per_minute must be a positive
number, got 'fast'``. Unknown keys are errors (with the closest known key suggested), because a
misspelt limit silently ignored is a limit not enforced.

String values may name environment variables as ``${VAR}`` or ``${VAR:-default}``; API keys are
never read from the file, only the *name* of their variable (``api_key_env``).
"""

from __future__ import annotations

import difflib
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autonomic.errors import ConfigError
from autonomic.gateway.provider import (
    ALL_PRIORITIES,
    Limits,
    Pricing,
    Priority,
    Provider,
    ProviderKind,
)

ENV_VAR = "AUTONOMIC_GATEWAY"
"""Environment variable naming the configuration file (``gateway:`` model specs do too)."""

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_PROVIDER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")

Path_ = tuple[str | int, ...]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff with full jitter: attempt *n* waits ``uniform(0, min(max, base*2**n))``,
    but at least what the server asked for (``Retry-After`` and its cousins), up to
    ``max_server_wait``."""

    max_attempts: int = 4
    base_delay: float = 0.5
    max_delay: float = 20.0
    max_server_wait: float = 300.0
    """The longest one server hint makes a call wait before trying that server again: a
    ``Retry-After: 86400`` from a confused proxy (or a daily quota's reset) is cut to this, and the
    server, asked again, repeats its hint if it still means it."""


@dataclass(frozen=True, slots=True)
class BreakerPolicy:
    """Per-provider circuit breaker: open after ``threshold`` consecutive failures, probe after
    ``reset_after`` seconds."""

    threshold: int = 5
    reset_after: float = 30.0


DEFAULT_FALLBACK_AFTER: Mapping[Priority, float | None] = {
    Priority.CRITICAL: None,
    Priority.NORMAL: 2.0,
    Priority.BACKGROUND: 0.0,
}


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    """Everything a ``Gateway`` needs, as read from a file or built in code."""

    providers: tuple[Provider, ...]
    redis_url: str | None = None
    """Share rate-limit buckets and circuit breakers between processes through this Redis."""
    redis_prefix: str = "autonomic"
    """Namespace of the gateway's Redis keys (``{prefix}:ratelimit:...``, ``{prefix}:breaker:...``),
    so deployments (or tests) sharing one Redis do not share limits and circuits."""
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    breaker: BreakerPolicy = field(default_factory=BreakerPolicy)
    fallback_after: Mapping[Priority, float | None] = field(
        default_factory=lambda: dict(DEFAULT_FALLBACK_AFTER)
    )
    """Seconds a call of each class may wait for one provider's capacity before the next
    provider is tried; ``None``: wait up to the deadline (only the last provider if several)."""
    default_deadline: float = 300.0
    """Seconds a call may take (waits, retries, fallbacks) when the caller sets no deadline."""
    compression_threshold: float = 0.75
    validate_tool_calls: bool = True
    """Treat tool calls with non-JSON arguments or unknown tool names as a retryable error."""
    source: str = "<code>"

    def provider(self, name: str) -> Provider:
        for p in self.providers:
            if p.name == name:
                return p
        known = ", ".join(p.name for p in self.providers)
        raise ConfigError(f"no provider named {name!r} in {self.source}", hint=f"known: {known}")


def load_config(
    path: str | Path | None = None, *, env: Mapping[str, str] | None = None
) -> GatewayConfig:
    """Read and validate a YAML (``.yaml``/``.yml``) or TOML (``.toml``) file.

    ``path`` defaults to ``$AUTONOMIC_GATEWAY``. ``AUTONOMIC_GATEWAY_REDIS_URL`` overrides
    ``redis_url``.
    """
    environ = os.environ if env is None else env
    if path is None:
        path = environ.get(ENV_VAR)
        if not path:
            raise ConfigError(
                "no gateway configuration given",
                hint=f"pass gateway:PATH.yaml as the model, or set {ENV_VAR}=PATH.yaml",
            )
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"gateway configuration {p} does not exist", hint="check the path"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read gateway configuration {p}: {exc}") from None
    lines: dict[Path_, int] = {}
    suffix = p.suffix.lower()
    if suffix in (".yaml", ".yml"):
        data = _parse_yaml(p, text, lines)
    elif suffix == ".toml":
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{p}: not valid TOML: {exc}") from None
    else:
        raise ConfigError(
            f"{p}: unknown configuration format {suffix or '(no extension)'!r}",
            hint="name the file .yaml, .yml or .toml",
        )
    return parse_config(data, source=str(p), lines=lines, env=environ)


def parse_config(
    data: Any,
    *,
    source: str = "<config>",
    lines: Mapping[Path_, int] | None = None,
    env: Mapping[str, str] | None = None,
) -> GatewayConfig:
    """Validate an already-parsed mapping (the file's content)."""
    reader = _Reader(source, lines or {}, os.environ if env is None else env)
    return reader.config(data)


def _parse_yaml(p: Path, text: str, lines: dict[Path_, int]) -> Any:
    import yaml

    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{p}{where}: not valid YAML: {problem}") from None
    if node is not None:
        _index_lines(node, (), lines)
    return data


def _index_lines(node: Any, path: Path_, lines: dict[Path_, int]) -> None:
    import yaml

    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            child = (*path, str(key.value))
            lines[child] = key.start_mark.line + 1
            _index_lines(value, child, lines)
            lines[child] = key.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _index_lines(item, (*path, i), lines)


def _dotted(path: Path_) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out or "(top level)"


class _Reader:
    def __init__(self, source: str, lines: Mapping[Path_, int], env: Mapping[str, str]) -> None:
        self.source = source
        self.lines = lines
        self.env = env

    def fail(self, path: Path_, message: str, hint: str | None = None) -> ConfigError:
        line = None
        for n in range(len(path), -1, -1):
            line = self.lines.get(path[:n])
            if line is not None:
                break
        where = f"{self.source}:{line}" if line is not None else self.source
        return ConfigError(f"{where}: {_dotted(path)} {message}", hint=hint)

    def table(self, value: Any, path: Path_, known: set[str]) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.fail(path, f"must be a mapping, got {type(value).__name__}")
        for key in value:
            if key not in known:
                close = difflib.get_close_matches(str(key), sorted(known), n=1)
                hint = (
                    f"did you mean {close[0]!r}?"
                    if close
                    else f"known keys: {', '.join(sorted(known))}"
                )
                raise self.fail((*path, str(key)), "is not a known key", hint=hint)
        return value

    def string(self, value: Any, path: Path_) -> str:
        if not isinstance(value, str) or not value.strip():
            raise self.fail(path, f"must be a non-empty string, got {value!r}")

        def expand(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            if name in self.env:
                return self.env[name]
            if default is not None:
                return default
            raise self.fail(
                path,
                f"refers to ${{{name}}}, which is not set",
                hint=f"export {name}=... or write ${{{name}:-default}}",
            )

        return _ENV_REF.sub(expand, value)

    def number(
        self, value: Any, path: Path_, *, positive: bool = True, integer: bool = False
    ) -> float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if ok and integer and not float(value).is_integer():
            ok = False
        if ok and (value <= 0 if positive else value < 0):
            ok = False
        if not ok:
            kind = "integer" if integer else "number"
            sign = "a positive" if positive else "a non-negative"
            raise self.fail(path, f"must be {sign} {kind}, got {value!r}")
        return float(value)

    def config(self, data: Any) -> GatewayConfig:
        top = self.table(
            data,
            (),
            {
                "providers",
                "redis_url",
                "redis_prefix",
                "retry",
                "breaker",
                "fallback_after",
                "default_deadline",
                "compression_threshold",
                "validate_tool_calls",
            },
        )
        raw_providers = top.get("providers")
        if not isinstance(raw_providers, list) or not raw_providers:
            raise self.fail(
                ("providers",),
                "must be a non-empty list of providers",
                hint="providers: [{name: main, base_url: ..., model: ...}]",
            )
        providers = tuple(self.provider(p, ("providers", i)) for i, p in enumerate(raw_providers))
        seen: set[str] = set()
        for i, p in enumerate(providers):
            if p.name in seen:
                raise self.fail(
                    ("providers", i, "name"),
                    f"{p.name!r} is used twice",
                    hint="give each provider its own name",
                )
            seen.add(p.name)
        for prio in Priority:
            if not any(prio in p.serves for p in providers):
                raise self.fail(
                    ("providers",),
                    f"has no provider that serves {prio.value!r} calls",
                    hint=f"add {prio.value} to some provider's serves list",
                )
        redis_url = self.env.get("AUTONOMIC_GATEWAY_REDIS_URL") or (
            self.string(top["redis_url"], ("redis_url",)) if top.get("redis_url") else None
        )
        if redis_url is not None and not redis_url.startswith(("redis://", "rediss://", "unix://")):
            raise self.fail(("redis_url",), f"must be a redis:// URL, got {redis_url!r}")
        redis_prefix = (
            self.string(top["redis_prefix"], ("redis_prefix",))
            if "redis_prefix" in top
            else "autonomic"
        )
        retry_raw = self.table(
            top.get("retry"),
            ("retry",),
            {"max_attempts", "base_delay", "max_delay", "max_server_wait"},
        )
        retry = RetryPolicy(
            max_attempts=int(
                self.number(
                    retry_raw.get("max_attempts", 4), ("retry", "max_attempts"), integer=True
                )
            ),
            base_delay=self.number(retry_raw.get("base_delay", 0.5), ("retry", "base_delay")),
            max_delay=self.number(retry_raw.get("max_delay", 20.0), ("retry", "max_delay")),
            max_server_wait=self.number(
                retry_raw.get("max_server_wait", 300.0), ("retry", "max_server_wait")
            ),
        )
        br_raw = self.table(top.get("breaker"), ("breaker",), {"threshold", "reset_after"})
        breaker = BreakerPolicy(
            threshold=int(
                self.number(br_raw.get("threshold", 5), ("breaker", "threshold"), integer=True)
            ),
            reset_after=self.number(br_raw.get("reset_after", 30.0), ("breaker", "reset_after")),
        )
        fb_raw = self.table(
            top.get("fallback_after"), ("fallback_after",), {p.value for p in Priority}
        )
        fallback_after = dict(DEFAULT_FALLBACK_AFTER)
        for key, value in fb_raw.items():
            fallback_after[Priority(key)] = (
                None
                if value is None
                else self.number(value, ("fallback_after", key), positive=False)
            )
        threshold = self.number(top.get("compression_threshold", 0.75), ("compression_threshold",))
        if threshold >= 1:
            raise self.fail(
                ("compression_threshold",),
                f"must be below 1 (a share of the window), got {threshold}",
            )
        validate = top.get("validate_tool_calls", True)
        if not isinstance(validate, bool):
            raise self.fail(("validate_tool_calls",), f"must be true or false, got {validate!r}")
        return GatewayConfig(
            providers=providers,
            redis_url=redis_url,
            redis_prefix=redis_prefix,
            retry=retry,
            breaker=breaker,
            fallback_after=fallback_after,
            default_deadline=self.number(top.get("default_deadline", 300.0), ("default_deadline",)),
            compression_threshold=threshold,
            validate_tool_calls=validate,
            source=self.source,
        )

    def provider(self, raw: Any, path: Path_) -> Provider:
        if isinstance(raw, dict) and "api_key" in raw:
            raise self.fail(
                (*path, "api_key"),
                "must not hold the key itself",
                hint="export the key in an environment variable and name it: api_key_env: OPENAI_API_KEY",
            )
        t = self.table(
            raw,
            path,
            {
                "name",
                "kind",
                "base_url",
                "model",
                "api_key_env",
                "context_window",
                "max_output_tokens",
                "price",
                "limits",
                "serves",
                "encoding",
                "timeout",
                "script",
                "spec",
            },
        )
        if "name" not in t:
            raise self.fail(path, "needs a name", hint="name: main")
        name = self.string(t["name"], (*path, "name"))
        if not _PROVIDER_NAME.match(name):
            raise self.fail(
                (*path, "name"),
                f"{name!r} is not a valid name",
                hint="use letters, digits, '.', '-', '_'",
            )
        kind_raw = t.get("kind", "openai")
        try:
            kind = ProviderKind(kind_raw)
        except ValueError:
            raise self.fail(
                (*path, "kind"),
                f"must be one of {', '.join(k.value for k in ProviderKind)}, got {kind_raw!r}",
            ) from None
        base_url = None
        script = None
        if kind is ProviderKind.OPENAI:
            if "base_url" in t:
                base_url = self.string(t["base_url"], (*path, "base_url"))
                if not base_url.startswith(("http://", "https://")):
                    raise self.fail(
                        (*path, "base_url"),
                        f"must be an http(s) URL, got {base_url!r}",
                        hint="e.g. http://vllm:8000/v1",
                    )
            if "model" not in t:
                raise self.fail(path, f"provider {name!r} needs a model", hint="model: gpt-4o-mini")
        elif kind is ProviderKind.SCRIPTED:
            if "script" not in t:
                raise self.fail(
                    path,
                    f"scripted provider {name!r} needs a script",
                    hint="script: path/to/turns.json",
                )
            script = self.string(t["script"], (*path, "script"))
        else:
            if "spec" not in t:
                raise self.fail(
                    path, f"model provider {name!r} needs a spec", hint="spec: function:reconcile"
                )
            script = self.string(t["spec"], (*path, "spec"))
        model = self.string(t.get("model", name), (*path, "model"))
        api_key_env = None
        if "api_key_env" in t:
            api_key_env = self.string(t["api_key_env"], (*path, "api_key_env"))
            if not _ENV_NAME.match(api_key_env):
                raise self.fail(
                    (*path, "api_key_env"),
                    "must be the name of an environment variable, not a key",
                    hint="api_key_env: OPENAI_API_KEY (and export OPENAI_API_KEY=...)",
                )
        price_raw = self.table(t.get("price"), (*path, "price"), {"input", "output"})
        pricing = Pricing(
            self.number(price_raw.get("input", 0.0), (*path, "price", "input"), positive=False),
            self.number(price_raw.get("output", 0.0), (*path, "price", "output"), positive=False),
        )
        lim_raw = self.table(
            t.get("limits"),
            (*path, "limits"),
            {"requests_per_minute", "tokens_per_minute", "burst_seconds", "max_concurrency"},
        )
        limits = Limits(
            requests_per_minute=(
                self.number(
                    lim_raw["requests_per_minute"], (*path, "limits", "requests_per_minute")
                )
                if lim_raw.get("requests_per_minute") is not None
                else None
            ),
            tokens_per_minute=(
                self.number(lim_raw["tokens_per_minute"], (*path, "limits", "tokens_per_minute"))
                if lim_raw.get("tokens_per_minute") is not None
                else None
            ),
            burst_seconds=self.number(
                lim_raw.get("burst_seconds", 1.0), (*path, "limits", "burst_seconds")
            ),
            max_concurrency=int(
                self.number(
                    lim_raw.get("max_concurrency", 64),
                    (*path, "limits", "max_concurrency"),
                    integer=True,
                )
            ),
        )
        serves_raw = t.get("serves")
        serves = ALL_PRIORITIES
        if serves_raw is not None:
            if not isinstance(serves_raw, list) or not serves_raw:
                raise self.fail(
                    (*path, "serves"),
                    "must be a non-empty list of priority classes",
                    hint="serves: [normal, background]",
                )
            try:
                serves = frozenset(Priority(s) for s in serves_raw)
            except ValueError:
                raise self.fail(
                    (*path, "serves"),
                    f"has an unknown priority class in {serves_raw!r}",
                    hint=f"use {', '.join(p.value for p in Priority)}",
                ) from None
        max_out = t.get("max_output_tokens")
        return Provider(
            name=name,
            model=model,
            kind=kind,
            base_url=base_url,
            api_key_env=api_key_env,
            context_window=int(
                self.number(t.get("context_window", 8192), (*path, "context_window"), integer=True)
            ),
            max_output_tokens=(
                int(self.number(max_out, (*path, "max_output_tokens"), integer=True))
                if max_out is not None
                else None
            ),
            pricing=pricing,
            limits=limits,
            serves=serves,
            encoding=self.string(t["encoding"], (*path, "encoding")) if "encoding" in t else None,
            timeout=self.number(t.get("timeout", 120.0), (*path, "timeout")),
            script=script,
        )
