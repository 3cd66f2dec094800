"""``autonomic serve``: the HTTP API (and, when mounted, the console) over the same store."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from autonomic.cli.common import AgentOption, cannot_listen, err, settings_of

if TYPE_CHECKING:
    import socket


def serve(
    ctx: typer.Context,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on (0: any free port).")] = 8080,
    agents: AgentOption = None,
    workers: Annotated[
        int,
        typer.Option(help="Worker loops inside the service (0: run `autonomic worker` apart)."),
    ] = 0,
    authz_policy: Annotated[
        str | None,
        typer.Option(
            "--authz-policy",
            help="Cedar policy of what each role may do (default: the shipped one).",
        ),
    ] = None,
    credentials: Annotated[
        str | None,
        typer.Option(
            envvar="AUTONOMIC_CREDENTIALS",
            help="Secret source for tools' scoped credentials: env or file:PATH.",
        ),
    ] = None,
    oidc_jwks_url: Annotated[
        str | None, typer.Option(envvar="AUTONOMIC_OIDC_JWKS_URL", help="Accept OIDC tokens.")
    ] = None,
    oidc_issuer: Annotated[str | None, typer.Option(envvar="AUTONOMIC_OIDC_ISSUER")] = None,
    oidc_audience: Annotated[str | None, typer.Option(envvar="AUTONOMIC_OIDC_AUDIENCE")] = None,
    secure_cookies: Annotated[
        bool, typer.Option(help="Mark session cookies Secure (serve behind HTTPS).")
    ] = False,
) -> None:
    """Serve the REST API (OpenAPI at /openapi.json, interactive docs at /docs)."""
    import asyncio
    from pathlib import Path

    import uvicorn

    from autonomic.errors import ConfigError
    from autonomic.service.app import create_app
    from autonomic.service.console import console_router
    from autonomic.service.settings import POLICY_FILE, OidcConfig, ServiceSettings

    settings = settings_of(ctx)
    oidc = None
    if oidc_jwks_url or oidc_issuer or oidc_audience:
        if not (oidc_jwks_url and oidc_issuer and oidc_audience):
            raise ConfigError(
                "OIDC needs all three of --oidc-jwks-url, --oidc-issuer and --oidc-audience"
            )
        oidc = OidcConfig(jwks_url=oidc_jwks_url, issuer=oidc_issuer, audience=oidc_audience)
    service_settings = ServiceSettings(
        db=settings.db,
        agents=tuple(agents or ()),
        policy=settings.policy,
        authz_policy=Path(authz_policy) if authz_policy else POLICY_FILE,
        oidc=oidc,
        workers=workers,
        credentials=credentials,
        secure_cookies=secure_cookies,
    )
    app = create_app(service_settings, routers=[console_router()])
    config = uvicorn.Config(
        app, host=host, port=port, log_level="warning", access_log=False, lifespan="on"
    )
    listening = _listen(host, port)

    async def main() -> None:
        from autonomic.service.runtime import build_service

        # built here, in the server's loop, before the server starts: what fails (the store,
        # an agent, the policy) raises to main() as one line instead of the server's traceback
        app.state.prebuilt = await build_service(service_settings)
        bound = listening.getsockname()[1]
        err.print(
            f"autonomic API on http://{host}:{bound}  (docs: http://{host}:{bound}/docs, "
            f"console: http://{host}:{bound}/console)"
        )
        await uvicorn.Server(config).serve(sockets=[listening])

    with listening, asyncio.Runner(loop_factory=config.get_loop_factory()) as runner:
        runner.run(main())


def _listen(host: str, port: int) -> socket.socket:
    """A socket listening on ``host:port``; a taken port or a foreign address is a usage error."""
    import socket

    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        listening = socket.socket(family, kind, proto)
        try:
            listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listening.bind(address)
            listening.listen(2048)  # uvicorn's backlog: connections wait from here, never refused
        except OSError:
            listening.close()
            raise
    except OSError as exc:
        raise cannot_listen("listen", host, port, exc, "") from None
    return listening
