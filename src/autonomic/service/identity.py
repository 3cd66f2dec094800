"""Who is asking: the identity every request of the service is answered for.

An identity comes only from a credential (an API key, a session cookie made from one, or an OIDC
token), never from a form field or a query parameter: the approver recorded on a decision is the
one the credential names.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from autonomic.ports.keys import Role

__all__ = ["Identity", "Role"]

Via = Literal["key", "session", "oidc"]


@dataclass(frozen=True, slots=True)
class Identity:
    """An authenticated caller.

    Attributes:
        key_id: the API key's id (``key_...``); for an OIDC token, ``oidc:`` and its subject.
        name: who holds the credential (a key's name; the token's name claim).
        tenant: the one tenant it sees (an admin sees every tenant).
        role: member, approver or admin.
        via: how it signed in: a bearer ``key``, a ``session`` cookie, an ``oidc`` token.
    """

    key_id: str
    name: str
    tenant: str
    role: Role
    via: Via = "key"

    @property
    def principal(self) -> str:
        """``name@tenant``: what the journal records as who acted (``by``), and what a run records
        as its requester, so that an approver can never decide on a run it started itself. The same
        person with two keys of different roles is one principal."""
        return f"{self.name}@{self.tenant}"

    @property
    def sees_every_tenant(self) -> bool:
        """An admin's queries are not scoped to one tenant."""
        return self.role is Role.ADMIN
