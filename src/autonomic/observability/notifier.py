"""Alert notifications in Alertmanager's webhook format, for on-call tools.

Anything that accepts Alertmanager's webhook (PagerDuty and Opsgenie bridges, Slack relays, a
receiver of your own) can page an operator when approvals wait or events dead-letter, without
running an Alertmanager: ``AlertNotifier(url).send([...])`` posts one JSON document
(``version: "4"``, a ``groupKey``, ``status``, the common labels, and the alerts, each with
labels, annotations, ``startsAt`` and a fingerprint). Workers post when ``AUTONOMIC_ALERT_WEBHOOK``
is set (``engine/worker.py``); the bus (issue 13) calls ``dead_letters`` when it dead-letters.

Labels and annotations name runs, tools and approvals - never arguments or secrets.
"""

from __future__ import annotations

import hashlib
import json
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from autonomic.core.approval import Approval


@dataclass(frozen=True, slots=True)
class Alert:
    """One alert: its labels say what it is about (they make its identity), annotations say more."""

    name: str
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    starts_at: float
    severity: str = "warning"
    ends_at: float | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def all_labels(self) -> dict[str, str]:
        return {"alertname": self.name, "severity": self.severity, **self.labels}

    @property
    def fingerprint(self) -> str:
        text = json.dumps(self.all_labels(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": "resolved" if self.ends_at is not None else "firing",
            "labels": self.all_labels(),
            "annotations": dict(self.annotations),
            "startsAt": _rfc3339(self.starts_at),
            "endsAt": _rfc3339(self.ends_at)
            if self.ends_at is not None
            else "0001-01-01T00:00:00Z",
            "generatorURL": "",
            "fingerprint": self.fingerprint,
        }


def approval_waiting(approval: Approval, now: float) -> Alert:
    """An approval that waits for a human (with how long, and when it expires)."""
    return Alert(
        name="AutonomicApprovalWaiting",
        labels={"approval": approval.id, "run": approval.run_id, "tool": approval.tool},
        annotations={
            "summary": f"approval {approval.id} for {approval.tool} has waited "
            f"{int(now - approval.created_at)} s; it expires in "
            f"{max(0, int(approval.expires_at - now))} s",
            "command": f"autonomic approve {approval.id} --as YOU",
        },
        starts_at=approval.created_at,
        severity="page" if approval.expires_at - now < 600 else "warning",
    )


def dead_letters(group: str, count: int, now: float, *, topic: str = "") -> Alert:
    """Events a consumer group could not handle and moved to the dead-letter topic."""
    return Alert(
        name="AutonomicDeadLetters",
        labels={"group": group, **({"topic": topic} if topic else {})},
        annotations={"summary": f"{count} events failed to route for consumer group {group}"},
        starts_at=now,
        severity="page",
    )


def payload(alerts: Sequence[Alert], *, receiver: str = "autonomic") -> dict[str, Any]:
    """The Alertmanager webhook body (version 4) for ``alerts``."""
    labelsets = [a.all_labels() for a in alerts]
    common = (
        {k: v for k, v in labelsets[0].items() if all(ls.get(k) == v for ls in labelsets)}
        if labelsets
        else {}
    )
    firing = any(a.ends_at is None for a in alerts)
    return {
        "version": "4",
        "groupKey": "{}:" + json.dumps(common, sort_keys=True),
        "truncatedAlerts": 0,
        "status": "firing" if firing else "resolved",
        "receiver": receiver,
        "groupLabels": {k: v for k, v in common.items() if k == "alertname"},
        "commonLabels": common,
        "commonAnnotations": {},
        "externalURL": "",
        "alerts": [a.to_dict() for a in alerts],
    }


class AlertNotifier:
    """Posts alerts to one webhook URL (``AUTONOMIC_ALERT_WEBHOOK``), each alert once until it
    changes severity: a worker's idle loop may call ``send`` with the same approvals often."""

    def __init__(self, url: str, *, timeout: float = 5.0) -> None:
        if not url.startswith(("http://", "https://")):
            from autonomic.errors import ConfigError

            raise ConfigError(
                f"alert webhook {url!r} is not an http(s) URL",
                hint="set AUTONOMIC_ALERT_WEBHOOK=https://host/path",
            )
        self.url = url
        self.timeout = timeout
        self._sent: set[str] = set()

    def fresh(self, alerts: Sequence[Alert]) -> list[Alert]:
        return [a for a in alerts if a.fingerprint not in self._sent]

    def send(self, alerts: Sequence[Alert]) -> bool:
        """Post the alerts not already sent; ``True`` if something was posted. Blocking: call it
        in a thread from async code."""
        new = self.fresh(alerts)
        if not new:
            return False
        body = json.dumps(payload(new)).encode()
        request = urllib.request.Request(  # noqa: S310 - the scheme is checked in __init__
            self.url, data=body, headers={"Content-Type": "application/json"}, method="POST"
        )
        with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310
            response.read()
        self._sent.update(a.fingerprint for a in new)
        return True


def _rfc3339(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat().replace("+00:00", "Z")
