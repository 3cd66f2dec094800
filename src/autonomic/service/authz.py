"""Authorization: may this identity do this action on this resource? Asked of a Cedar policy.

The rules live in a policy file (``policy.cedar``, shipped; ``--authz-policy`` for another), read
once when the service starts and evaluated with ``cedarpy``: changing who may do what needs no
code. ``authorize`` answers in two steps, because they mean different things to the caller:

1. **Tenant isolation**, in code: a resource of another tenant (for anyone but an admin) raises
   ``NotFound``, worded exactly as for an id that does not exist, so existence does not leak.
2. **The role's right**, by the policy: a refusal raises ``Forbidden`` (403) naming the action.

Interface (for routes and the console)::

    service.authorize(identity, Action.DECIDE, Resource.of_approval(approval))

``Resource`` says what is acted on: its kind, id, tenant and (for runs and approvals) requester.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cedarpy

from autonomic.core.approval import Approval
from autonomic.core.principal import principal as qualified
from autonomic.core.run import Run
from autonomic.errors import ConfigError, NotFound
from autonomic.service.identity import Identity
from autonomic.service.problems import Forbidden


class Action(enum.StrEnum):
    """The acts the policy knows (Cedar ``Action::"..."``)."""

    READ = "read"
    START_RUN = "start_run"
    CANCEL = "cancel"
    RESUME = "resume"
    DECIDE = "decide"
    MANAGE_KEYS = "manage_keys"
    READ_METRICS = "read_metrics"
    PUBLISH = "publish"
    SETTLE_LETTER = "settle_letter"
    VERIFY_AUDIT = "verify_audit"


_WHAT = {
    Action.READ: "read this",
    Action.START_RUN: "start runs",
    Action.CANCEL: "cancel runs",
    Action.RESUME: "resume runs",
    Action.DECIDE: "decide approvals",
    Action.MANAGE_KEYS: "manage keys",
    Action.READ_METRICS: "read the service's metrics",
    Action.PUBLISH: "publish events",
    Action.SETTLE_LETTER: "retry or drop dead letters",
    Action.VERIFY_AUDIT: "verify the audit log",
}


@dataclass(frozen=True, slots=True)
class Resource:
    """What an action is on.

    Attributes:
        kind: ``Run``, ``Approval``, ``Agent``, ``Key``, ``DeadLetter``, ``Tenant`` or
            ``Service``.
        id: its id (a tenant's name for ``Tenant``).
        tenant: whose it is.
        requester: who started the run (runs and approvals), as ``Identity.principal``.
    """

    kind: str
    id: str
    tenant: str
    requester: str | None = None

    @staticmethod
    def of_run(run: Run, requester: str | None = None) -> Resource:
        return Resource("Run", run.id, run.tenant, _who(requester, run.tenant))

    @staticmethod
    def of_approval(approval: Approval) -> Resource:
        return Resource(
            "Approval", approval.id, approval.tenant, _who(approval.requester, approval.tenant)
        )

    @staticmethod
    def tenant_of(identity: Identity) -> Resource:
        """The caller's own tenant: the resource of listing, starting, reading agents."""
        return Resource("Tenant", identity.tenant, identity.tenant)

    def missing(self) -> NotFound:
        """The error for an id that does not exist (or is another tenant's: the same words)."""
        return NotFound(f"no {self.kind.lower()} {self.id}")


def _who(requester: str | None, tenant: str) -> str | None:
    """The requester as the policy compares it: qualified and case-folded (``core/principal.py``:
    a run started from the CLI by ``alice`` is ``alice@<tenant>``, the same as the key alice of
    that tenant)."""
    return None if requester is None else qualified(requester, tenant).casefold()


class Authorizer:
    """A Cedar policy set, parsed once; see the module docstring."""

    def __init__(self, policy_file: Path) -> None:
        try:
            text = policy_file.read_text()
        except OSError as exc:
            raise ConfigError(
                f"cannot read the authorization policy {policy_file}: {exc.strerror}",
                hint="--authz-policy FILE names a Cedar policy (the shipped one: service/policy.cedar)",
            ) from None
        try:
            self._policies = cedarpy.PolicySet.from_str(text)
        except ValueError as exc:  # the parser's words
            raise ConfigError(
                f"the authorization policy {policy_file} does not parse: {exc}",
                hint="fix the Cedar syntax (https://docs.cedarpolicy.com)",
            ) from None
        self.file = policy_file
        self._answers: dict[tuple[str | None, ...], bool] = {}

    ANSWERS_KEPT = 20_000
    """Answers remembered at most (the memo starts over when full)."""

    def allows(self, identity: Identity, action: Action, resource: Resource) -> bool:
        """What the policy says, tenant rule included; no exception.

        Answers are remembered per exact question - every value the policy is given, the ids
        included - so a repeated question (a key starting runs in its tenant, reading its
        approvals) is answered without evaluating the policy again, and the answer is the one
        the policy would give: the policy is read once, at start, and never changes under it."""
        question = (
            identity.key_id, identity.role.value, identity.tenant, identity.principal,
            action.value, resource.kind, resource.id, resource.tenant, resource.requester,
        )  # fmt: skip
        known = self._answers.get(question)
        if known is None:
            known = self._evaluate(identity, action, resource)
            if len(self._answers) >= self.ANSWERS_KEPT:
                self._answers.clear()
            self._answers[question] = known
        return known

    def _evaluate(self, identity: Identity, action: Action, resource: Resource) -> bool:
        principal = {"type": "Autonomic::Identity", "id": identity.key_id}
        target = {"type": f"Autonomic::{resource.kind}", "id": resource.id}
        attrs: dict[str, Any] = {"tenant": resource.tenant}
        if resource.requester is not None:
            attrs["requester"] = resource.requester
        entities = [
            {
                "uid": principal,
                "attrs": {
                    "role": identity.role.value,
                    "tenant": identity.tenant,
                    "principal": identity.principal.casefold(),
                },
                "parents": [],
            },
            {"uid": target, "attrs": attrs, "parents": []},
        ]
        request = {
            "principal": principal,
            "action": {"type": "Action", "id": action.value},
            "resource": target,
            "context": {},
        }
        return bool(cedarpy.is_authorized(request, self._policies, entities).allowed)

    def authorize(self, identity: Identity, action: Action, resource: Resource) -> None:
        """Return if allowed; ``NotFound`` for another tenant's object, ``Forbidden`` else."""
        if not identity.sees_every_tenant and resource.tenant != identity.tenant:
            raise resource.missing()
        if self.allows(identity, action, resource):
            return
        if (
            action is Action.DECIDE
            and resource.requester is not None
            and resource.requester == identity.principal.casefold()
        ):
            raise Forbidden(
                f"{identity.principal} started the run this approval belongs to and cannot decide it",
                hint="another approver of the tenant must decide",
                code="own_request",
            )
        raise Forbidden(
            f"a {identity.role.value} may not {_WHAT[action]}",
            hint="ask an admin for a key with the right role",
        )
