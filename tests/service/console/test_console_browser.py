"""The console in a real browser: Playwright drives Debian's chromium (headless) against
``autonomic serve`` and ``autonomic worker`` running as processes on a SQLite file.

The demo leaves a run waiting for a controller's approval. A member signs in and sees the
approval without an Approve button; an approver signs in, finds it, reads its arguments and risk,
reaches the Approve button with the keyboard, approves, and watches the run complete on its
timeline - streamed by server-sent events, with no reload. Another tenant's approver gets a 404
for the run. Screenshots go to the test's tmp dir (and to ``AUTONOMIC_CONSOLE_IMAGES``, when
set: that is how ``docs/images/console-*.png`` were taken).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("AUTONOMIC_TEST_CHROMIUM", "/usr/bin/chromium")
CLI = [sys.executable, "-m", "autonomic.cli"]
WAIT_MS = 90_000
"""How long a page may take to show what the test waits for (a condition, not a sleep)."""


@dataclass
class Service:
    url: str
    db: str
    keys: dict[str, str]
    run_id: str
    approval_id: str
    shots: Path


def _cli(*args: str, db: str, cwd: Path, ok: tuple[int, ...] = (0,)) -> str:
    done = subprocess.run(
        [*CLI, "--db", db, *args], cwd=cwd, capture_output=True, text=True, timeout=600
    )
    assert done.returncode in ok, f"{args}: exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done.stdout


def _key(db: str, cwd: Path, name: str, role: str, tenant: str) -> str:
    printed = _cli(
        "keys", "create", "--name", name, "--role", role, "--tenant", tenant, db=db, cwd=cwd
    )
    (secret,) = [line.strip() for line in printed.splitlines() if line.startswith("ak_")]
    return secret


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_until_up(url: str, server: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert server.poll() is None, f"autonomic serve exited:\n{log.read_text()}"
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)  # polling a starting server: the wait is for a condition
    raise AssertionError(f"autonomic serve did not answer in 120 s:\n{log.read_text()}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"):
            pytest.fail(f"chromium is missing at {CHROMIUM} (scripts/lib/browser.sh installs it)")
        pytest.skip(f"chromium is missing at {CHROMIUM}: apt-get install chromium")
    db = f"sqlite:///{tmp_path / 'console.db'}"
    demo = tmp_path / "demo"
    _cli("demo", "--workdir", str(demo), db=db, cwd=tmp_path)  # one finished run, for the list
    waiting = _cli("demo", "--interactive", "--workdir", str(demo), db=db, cwd=tmp_path, ok=(5,))
    run_id = next(w for w in waiting.split() if w.startswith("run_"))
    approval_id = next(w for w in waiting.split() if w.startswith("apr_"))
    keys = {
        "approver": _key(db, tmp_path, "carol", "approver", "default"),
        "member": _key(db, tmp_path, "dave", "member", "default"),
        "stranger": _key(db, tmp_path, "eve", "approver", "globex"),
    }
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTONOMIC_FAULT")}
    serve_log, worker_log = tmp_path / "serve.log", tmp_path / "worker.log"
    with serve_log.open("wb") as out:
        server = subprocess.Popen(
            [*CLI, "--db", db, "serve", "--host", "127.0.0.1", "--port", str(port)],
            cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    with worker_log.open("wb") as out:
        worker = subprocess.Popen(
            [*CLI, "--db", db, "worker"],
            cwd=tmp_path,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait_until_up(url, server, serve_log)
        shots = tmp_path / "screenshots"
        shots.mkdir()
        yield Service(url, db, keys, run_id, approval_id.rstrip(":"), shots)
    finally:
        _stop(worker)
        _stop(server)


def _shot(page: object, service: Service, name: str, **options: object) -> None:
    path = service.shots / name
    page.screenshot(path=str(path), **options)  # type: ignore[attr-defined]
    keep = os.environ.get("AUTONOMIC_CONSOLE_IMAGES")
    if keep:
        shutil.copy(path, Path(keep) / name)


def _sign_in(browser: object, service: Service, who: str) -> object:
    context = browser.new_context(viewport={"width": 1366, "height": 860})  # type: ignore[attr-defined]
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    page.goto(service.url + "/console/approvals")
    assert "/console/signin" in page.url
    page.get_by_label("API key").fill(service.keys[who])
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(service.url + "/console/approvals")
    return page


def test_an_approver_approves_the_demo_action_and_watches_the_run_complete(service):
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu"]
        )
        try:
            # a member sees the approval, its arguments, and no way to decide it
            member = _sign_in(browser, service, "member")
            card = member.locator(f"article#{service.approval_id}")
            expect(card).to_contain_text("post_adjustment@1")
            expect(card).to_contain_text("-27000")
            expect(card.get_by_role("button", name="Approve")).to_have_count(0)
            expect(card).to_contain_text("Your role (member) can see approvals but not decide")

            # another tenant's approver: the run does not exist for them
            stranger = _sign_in(browser, service, "stranger")
            expect(stranger.locator(f"article#{service.approval_id}")).to_have_count(0)
            answer = stranger.goto(f"{service.url}/console/runs/{service.run_id}")
            assert answer is not None
            assert answer.status == 404
            expect(stranger.get_by_role("heading", name="Not found")).to_be_visible()

            # the approver finds the pending approval, with its arguments, risk and expiry
            page = _sign_in(browser, service, "approver")
            page.get_by_role("link", name="Runs").click()
            expect(page.locator("table.runs")).to_contain_text("WAITING_FOR_HUMAN")
            expect(page.locator("table.runs")).to_contain_text("COMPLETED")
            _shot(page, service, "console-runs.png")
            page.get_by_role("link", name="Approvals").click()
            card = page.locator(f"article#{service.approval_id}")
            expect(card).to_contain_text("post_adjustment@1")
            expect(card).to_contain_text("INV-1002")
            expect(card).to_contain_text("-27000")
            expect(card).to_contain_text("risk MEDIUM")
            expect(card).to_contain_text("adjusting entries above 100.00 need a controller")
            expect(card).to_contain_text("Expires")
            _shot(page, service, "console-approval.png")

            # the keyboard alone reaches the reason field and the Approve button
            reason_id = f"{service.approval_id}-reason"
            page.locator("body").focus()
            for _ in range(40):
                page.keyboard.press("Tab")
                if page.evaluate("document.activeElement.id") == reason_id:
                    break
            assert page.evaluate("document.activeElement.id") == reason_id
            page.keyboard.type("INV-1002 checked against the supplier's invoice")
            page.keyboard.press("Tab")
            focused = page.evaluate(
                "[document.activeElement.tagName, document.activeElement.textContent.trim()]"
            )
            assert focused == ["BUTTON", "Approve"]
            page.keyboard.press("Enter")

            # the run page follows the run live: no reload, the status turns COMPLETED
            page.wait_for_url(f"{service.url}/console/runs/{service.run_id}?decided=approved")
            page.evaluate("window.stayedOnThePage = true")
            expect(page.locator("#run-status .badge")).to_have_text("COMPLETED", timeout=WAIT_MS)
            assert page.evaluate("window.stayedOnThePage === true"), "the page was reloaded"
            timeline = page.locator("#timeline")
            expect(timeline.locator(".step.approval")).to_contain_text("approved")
            expect(timeline.locator(".step.approval")).to_contain_text("carol@default")
            expect(timeline.locator(".step.transition").last).to_contain_text("COMPLETED")
            page.locator(".step.approval").scroll_into_view_if_needed()
            page.evaluate("window.scrollBy(0, -200)")
            _shot(page, service, "console-timeline.png")
        finally:
            browser.close()
    assert sorted(p.name for p in service.shots.iterdir()) == [
        "console-approval.png",
        "console-runs.png",
        "console-timeline.png",
    ]
