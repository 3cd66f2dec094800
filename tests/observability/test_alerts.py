"""The shipped alerting rules pass promtool, and the webhook notifier posts Alertmanager's format
to a receiver on 127.0.0.1 - once per alert, and a worker sends it for a waiting approval."""

import json
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from autonomic.core.approval import Approval
from autonomic.errors import ConfigError
from autonomic.observability.notifier import (
    AlertNotifier,
    approval_waiting,
    dead_letters,
    payload,
)

ALERTS = Path(__file__).resolve().parents[2] / "deploy" / "prometheus" / "alerts.yml"


def test_the_alerting_rules_pass_promtool(promtool):
    done = subprocess.run([promtool, "check", "rules", str(ALERTS)], capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 8 rules found" in done.stdout


def test_promtool_would_catch_a_broken_rule(promtool, tmp_path):
    broken = tmp_path / "broken.yml"
    broken.write_text(
        ALERTS.read_text().replace("increase(autonomic_dead", "increase(autonomic dead", 1)
    )
    done = subprocess.run([promtool, "check", "rules", str(broken)], capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    assert done.returncode != 0


class Receiver:
    """An HTTP server on 127.0.0.1 that keeps every JSON body posted to it."""

    def __init__(self) -> None:
        self.bodies: list[dict] = []
        received = self.bodies

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers["Content-Length"])
                received.append(json.loads(self.rfile.read(length)))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/alerts"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


def approval(now: float, expires_in: float) -> Approval:
    return Approval(
        id="ap_1", run_id="run_1", call_id="c1", step=5, tenant="default",
        tool="post_adjustment@1", arguments={"amount": 1, "token": "sk-canary-secret"},
        binding="b", explanation="large adjustment", created_at=now - 120,
        expires_at=now + expires_in,
    )  # fmt: skip


def test_the_notifier_posts_alertmanager_webhook_json_once(receiver):
    now = 10_000.0
    notifier = AlertNotifier(receiver.url)
    alerts = [approval_waiting(approval(now, 300), now), dead_letters("billing", 4, now)]
    assert notifier.send(alerts)
    assert not notifier.send(alerts)  # already sent: nothing posted again
    [body] = receiver.bodies
    assert body["version"] == "4"
    assert body["status"] == "firing"
    assert body["receiver"] == "autonomic"
    assert {"groupKey", "groupLabels", "commonLabels", "commonAnnotations", "externalURL"} <= set(
        body
    )
    waiting, dead = body["alerts"]
    assert waiting["labels"] == {
        "alertname": "AutonomicApprovalWaiting",
        "severity": "page",
        "approval": "ap_1",
        "run": "run_1",
        "tool": "post_adjustment@1",
    }  # fmt: skip  (expires in 5 minutes: it pages)
    assert waiting["startsAt"].endswith("Z")
    assert waiting["endsAt"].startswith("0001-")
    assert "autonomic approve ap_1" in waiting["annotations"]["command"]
    assert dead["labels"]["alertname"] == "AutonomicDeadLetters"
    assert "sk-canary-secret" not in json.dumps(body)  # arguments never go into alerts


def test_a_resolved_alert_says_so():
    alert = (
        approval_waiting(approval(10_000.0, 3_600), 10_000.0)._replace(ends_at=10_100.0)
        if hasattr(approval_waiting(approval(10_000.0, 3_600), 10_000.0), "_replace")
        else None
    )
    if alert is None:
        import dataclasses

        alert = dataclasses.replace(approval_waiting(approval(10_000.0, 3_600), 10_000.0),
                                    ends_at=10_100.0)  # fmt: skip
    body = payload([alert])
    assert body["status"] == "resolved"
    assert body["alerts"][0]["labels"]["severity"] == "warning"


def test_a_webhook_that_is_not_http_is_refused():
    with pytest.raises(ConfigError, match="not an http"):
        AlertNotifier("file:///etc/passwd")


def test_a_worker_pages_about_an_approval_waiting(tmp_path, receiver):
    import os
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "AUTONOMIC_DB"))}
    cli = [sys.executable, "-m", "autonomic.cli"]
    waiting = subprocess.run([*cli, "demo", "--interactive"], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=180)  # fmt: skip
    assert waiting.returncode == 5, waiting.stderr  # waits for the controller
    env["AUTONOMIC_ALERT_WEBHOOK"] = receiver.url
    worked = subprocess.run([*cli, "worker", "--until-idle"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert worked.returncode == 0, worked.stderr
    [body] = receiver.bodies
    [alert] = body["alerts"]
    assert alert["labels"]["alertname"] == "AutonomicApprovalWaiting"
    assert alert["labels"]["tool"].startswith("post_adjustment")
