"""OIDC bearer tokens: a JWT signed by the provider, verified against its published JWKS.

The token must be signed by a key in the JWKS (fetched from ``jwks_url`` and cached; a token
naming an unknown key id refetches it once, so the provider can rotate keys), by an accepted
algorithm (never ``none``, never a symmetric one: the JWKS is public), issued by ``issuer`` for
``audience``, unexpired. Its claims name the tenant, the role and who it is; a token missing one,
or naming an unknown role, is refused like a bad signature: 401.
"""

from __future__ import annotations

import asyncio

import jwt

from autonomic.ports.keys import Role
from autonomic.service.identity import Identity
from autonomic.service.keys import TENANT
from autonomic.service.problems import Unauthenticated
from autonomic.service.settings import OidcConfig

_ASYMMETRIC = frozenset({"RS256", "RS384", "RS512", "ES256", "ES384", "ES512", "PS256", "EdDSA"})


class OidcVerifier:
    """Turns an OIDC token into an ``Identity``, or refuses it."""

    def __init__(self, config: OidcConfig) -> None:
        algorithms = [a for a in config.algorithms if a in _ASYMMETRIC]
        if not algorithms:
            from autonomic.errors import ConfigError

            raise ConfigError(
                "OIDC needs an asymmetric signature algorithm",
                hint="RS256 or ES256 (the JWKS is public: a shared secret cannot be in it)",
            )
        self.config = config
        self._algorithms = algorithms
        self._jwks = jwt.PyJWKClient(config.jwks_url, cache_keys=True, lifespan=300, timeout=5)

    def _decode(self, token: str) -> dict[str, object]:
        key = self._jwks.get_signing_key_from_jwt(token)
        claims: dict[str, object] = jwt.decode(
            token,
            key.key,
            algorithms=self._algorithms,
            audience=self.config.audience,
            issuer=self.config.issuer,
            options={"require": ["exp", "iss", "aud"]},
        )
        return claims

    async def identify(self, token: str) -> Identity:
        """The identity the token names; ``Unauthenticated`` for any fault in it."""
        identity, _expires = await self.verify(token)
        return identity

    async def verify(self, token: str) -> tuple[Identity, float]:
        """The identity the token names and when the token expires (epoch s): a console session
        made from a token ends no later than the token."""
        try:
            claims = await asyncio.to_thread(self._decode, token)
        except jwt.PyJWKClientConnectionError:
            raise Unauthenticated(
                "the OIDC provider's keys cannot be fetched now", hint="try again later"
            ) from None
        except jwt.PyJWTError as exc:
            raise Unauthenticated(
                f"the OIDC token was refused: {exc}", hint="get a fresh token from your provider"
            ) from None
        c = self.config
        tenant, role, name = (
            claims.get(c.tenant_claim),
            claims.get(c.role_claim),
            claims.get(c.name_claim),
        )
        if not (isinstance(tenant, str) and TENANT.match(tenant)):
            raise Unauthenticated(f"the OIDC token has no valid {c.tenant_claim!r} claim")
        if not isinstance(name, str) or not name:
            raise Unauthenticated(f"the OIDC token has no {c.name_claim!r} claim")
        try:
            parsed = Role(str(role))
        except ValueError:
            raise Unauthenticated(
                f"the OIDC token's {c.role_claim!r} claim must be member, approver or admin"
            ) from None
        identity = Identity(
            key_id=f"oidc:{name}", name=name, tenant=tenant, role=parsed, via="oidc"
        )
        return identity, float(claims["exp"])  # type: ignore[arg-type]  # required above
