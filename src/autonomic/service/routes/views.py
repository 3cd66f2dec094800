"""Domain values as the API's response bodies (``schemas.py``), and the runs cursor."""

from __future__ import annotations

import base64
import binascii

from autonomic.core.approval import Approval
from autonomic.core.run import Run
from autonomic.errors import InvalidInput
from autonomic.ports.keys import ApiKey
from autonomic.service.schemas import ApprovalOut, KeyOut, RunOut


def run_out(run: Run) -> RunOut:
    return RunOut(
        id=run.id,
        tenant=run.tenant,
        agent=run.agent,
        agent_version=run.agent_version,
        model=run.model,
        status=run.status.value,
        status_reason=run.status_reason,
        created_at=run.created_at,
        updated_at=run.updated_at,
        metadata=run.metadata,
        output=run.output,
        parent_run_id=run.parent_run_id,
    )


def approval_out(a: Approval) -> ApprovalOut:
    return ApprovalOut(
        id=a.id,
        run_id=a.run_id,
        tenant=a.tenant,
        tool=a.tool,
        arguments=a.arguments,
        binding=a.binding,
        explanation=a.explanation,
        status=a.status.value,
        requester=a.requester,
        created_at=a.created_at,
        expires_at=a.expires_at,
        decided_by=list(a.decided_by),
        reason=a.reason,
    )


def key_out(key: ApiKey, now: float) -> KeyOut:
    return KeyOut(
        id=key.id,
        name=key.name,
        tenant=key.tenant,
        role=key.role.value,
        state=key.state(now),
        created_at=key.created_at,
        expires_at=key.expires_at,
        created_by=key.created_by,
        rotated_by=key.rotated_by,
        revoked_by=key.revoked_by,
    )


def cursor_of(run: Run) -> str:
    """Where the next page starts: after this run (newest first)."""
    return base64.urlsafe_b64encode(f"{run.created_at!r}|{run.id}".encode()).decode()


def parse_cursor(cursor: str) -> tuple[float, str]:
    try:
        at, bar, run_id = base64.urlsafe_b64decode(cursor.encode()).decode().partition("|")
        if not bar or not run_id:
            raise ValueError(cursor)
        return float(at), run_id
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise InvalidInput(
            "the cursor is not one this service gave out",
            hint="pass next_cursor from the previous page unchanged, or leave it out",
        ) from None
