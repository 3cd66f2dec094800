"""``autonomic gateway-check``: validate a model gateway configuration, show its providers."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from autonomic.cli.common import JsonOption, out


def gateway_check(
    path: Annotated[
        str | None,
        typer.Argument(help="The gateway file (.yaml/.toml); default: $AUTONOMIC_GATEWAY."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Validate a model gateway configuration and show its providers (keys are never shown)."""
    import os

    from autonomic.gateway import load_config

    config = load_config(path)
    rows = [
        {
            "name": p.name,
            "kind": p.kind.value,
            "model": p.model,
            "base_url": p.base_url,
            "api_key_env": p.api_key_env,
            "api_key_set": bool(p.api_key_env and os.environ.get(p.api_key_env)),
            "context_window": p.context_window,
            "price_per_million": [p.pricing.input_per_million, p.pricing.output_per_million],
            "requests_per_minute": p.limits.requests_per_minute,
            "tokens_per_minute": p.limits.tokens_per_minute,
            "serves": sorted(c.value for c in p.serves),
        }
        for p in config.providers
    ]
    if as_json:
        out.print_json(
            json.dumps(
                {"source": config.source, "redis_url": bool(config.redis_url), "providers": rows}
            )
        )
        return
    shared = "shared through Redis" if config.redis_url else "in-process"
    out.print(f"{config.source}: {len(rows)} provider(s), rate limits and circuits {shared}")
    for p in config.providers:
        key = "none"
        if p.api_key_env:
            key = f"{p.api_key_env} ({'set' if os.environ.get(p.api_key_env) else 'NOT SET'})"
        out.print(
            f"  {p.name}: {p.kind.value} {p.model} at {p.base_url or 'default'}; "
            f"window {p.context_window}; ${p.pricing.input_per_million:g}/"
            f"${p.pricing.output_per_million:g} per 1M in/out; "
            f"rpm {p.limits.requests_per_minute or 'unlimited'}, "
            f"tpm {p.limits.tokens_per_minute or 'unlimited'}; "
            f"serves {', '.join(sorted(c.value for c in p.serves))}; key {key}",
            markup=False,
        )
