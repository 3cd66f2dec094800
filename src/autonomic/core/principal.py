"""Who acted, written one way everywhere: ``name@tenant``.

The service names a caller by its credential (an API key's name, an OIDC token's subject) and its
tenant; the CLI names an operator by ``--as NAME`` or the OS user. Both are recorded as a
*principal*, ``name@tenant``, so that "never approve your own request" holds whichever door a
person came in by: a run started by the key ``alice`` of tenant ``acme`` has the requester
``alice@acme``, and ``autonomic approve apr_... --as alice`` on its approval decides as
``alice@acme`` too, and is refused.

The rule:

* a bare name (no ``@``) is qualified with the tenant of the run or approval acted on;
* a name that carries ``@`` is taken as written (``--as alice@acme``; an admin key's principal,
  whose tenant is the admin's own);
* two principals are the same person when they are equal once both are qualified and case-folded
  (``Alice@ACME`` is ``alice@acme``; a requester recorded bare by an older version, ``alice``, is
  ``alice@<the run's tenant>``).
"""

from __future__ import annotations

DEFAULT_TENANT = "default"
"""The tenant of what is made without naming one (a run started from the CLI, an event)."""


def principal(name: str, tenant: str) -> str:
    """``name@tenant``; a name that already carries ``@`` is kept as it is."""
    name = name.strip()
    return name if "@" in name else f"{name}@{tenant}"


def same_principal(a: str, b: str, tenant: str) -> bool:
    """Whether ``a`` and ``b`` name one person acting in ``tenant`` (see the module docstring)."""
    return principal(a, tenant).casefold() == principal(b, tenant).casefold()
