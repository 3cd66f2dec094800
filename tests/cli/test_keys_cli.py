"""``autonomic keys`` and ``autonomic serve`` as a user runs them: real processes, a real server
on 127.0.0.1, the secret printed once and stored only as a hash."""

import json
import os
import re
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx

CLI = [sys.executable, "-m", "autonomic.cli"]


def autonomic(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "AUTONOMIC_DB"} | {"COLUMNS": "200"}
    return subprocess.run(
        [*CLI, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


def _secret(output: str) -> str:
    match = re.search(r"^(ak_key_[0-9a-f]{16}_\S+)$", output, re.M)
    assert match, output
    return match.group(1)


def test_keys_are_created_listed_rotated_and_revoked_and_stored_as_hashes(tmp_path):
    made = autonomic("keys", "create", "--tenant", "acme", "--role", "approver", "--name", "bob",
                     "--expires", "30d", "--as", "root", cwd=tmp_path)  # fmt: skip
    assert made.returncode == 0, made.stderr
    secret = _secret(made.stdout)
    key_id = secret[3:23]
    listed = autonomic("keys", "list", "--json", cwd=tmp_path)
    (row,) = json.loads(listed.stdout)
    assert (row["id"], row["tenant"], row["role"], row["state"]) == (
        key_id,
        "acme",
        "approver",
        "active",
    )
    assert row["created_by"] == "root@acme"  # NAME@TENANT of the key, as the API records it
    assert row["expires_at"] > time.time() + 29 * 86400
    assert secret not in listed.stdout
    rotated = autonomic("keys", "rotate", key_id, "--as", "root", cwd=tmp_path)
    assert rotated.returncode == 0, rotated.stderr
    new = _secret(rotated.stdout)
    assert new != secret
    assert new.startswith(f"ak_{key_id}_")
    revoked = autonomic("keys", "revoke", key_id, "--as", "root", cwd=tmp_path)
    assert "revoked by root@acme" in revoked.stdout
    (row,) = json.loads(autonomic("keys", "list", "--json", cwd=tmp_path).stdout)
    assert (row["state"], row["rotated_by"], row["revoked_by"]) == (
        "revoked",
        "root@acme",
        "root@acme",
    )
    stored = (tmp_path / "autonomic.db").read_bytes()
    for s in (secret, new):
        assert s.split("_", 3)[3].encode() not in stored
    db = sqlite3.connect(tmp_path / "autonomic.db")
    (digest,) = db.execute("SELECT hash FROM api_keys").fetchone()
    assert re.fullmatch(r"[0-9a-f]{64}", digest)
    for bad, words in [
        (["keys", "create", "--tenant", "acme", "--role", "root", "--name", "x"], "unknown role"),
        (["keys", "create", "--tenant", "a b", "--role", "member", "--name", "x"], "bad tenant"),
        (["keys", "create", "--tenant", "a", "--role", "member", "--name", "x", "--expires", "soon"], "bad duration"),
        (["keys", "rotate", "key_nope"], "bad key id"),
        (["keys", "rotate", key_id], "was revoked"),
        (["keys", "revoke", "key_0123456789abcdef"], "no key"),
    ]:  # fmt: skip
        result = autonomic(*bad, cwd=tmp_path)
        assert result.returncode == 2, (bad, result.stderr)
        assert result.stderr.startswith("error: "), result.stderr
        assert words in result.stderr, result.stderr
        assert "Traceback" not in result.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_serve_answers_on_127_0_0_1(tmp_path):
    made = autonomic("keys", "create", "--tenant", "acme", "--role", "member", "--name", "ann",
                     cwd=tmp_path)  # fmt: skip
    secret = _secret(made.stdout)
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k != "AUTONOMIC_DB"}
    server = subprocess.Popen(
        [*CLI, "serve", "--port", str(port), "--workers", "1"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:  # wait until it listens (a readiness poll, not a sleep as synchronisation)
            try:
                if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                assert server.poll() is None, server.stderr.read() if server.stderr else ""
                assert time.monotonic() < deadline, "serve did not start in 60 s"
                time.sleep(0.1)
        headers = {"Authorization": f"Bearer {secret}"}
        assert httpx.get(f"{base}/runs", timeout=10).status_code == 401
        started = httpx.post(f"{base}/runs", json={"agent": "triage", "task": "triage the inbox"},
                             headers=headers, timeout=10)  # fmt: skip
        assert started.status_code == 201, started.text
        run_id = started.json()["id"]
        status = None
        while time.monotonic() < deadline:  # the in-process worker drives it
            status = httpx.get(f"{base}/runs/{run_id}", headers=headers, timeout=10).json()[
                "status"
            ]
            if status not in ("PENDING", "RUNNING"):
                break
            time.sleep(0.1)
        assert status not in ("PENDING", "RUNNING"), status
        timeline = httpx.get(f"{base}/runs/{run_id}/timeline", headers=headers, timeout=10).json()
        assert timeline["items"][0]["kind"] == "run.started"
        openapi = httpx.get(f"{base}/openapi.json", timeout=10).json()
        assert "/runs/{run_id}/timeline" in openapi["paths"]
        assert httpx.get(f"{base}/docs", timeout=10).status_code == 200
    finally:
        server.terminate()
        _, stderr = server.communicate(timeout=60)
    assert "Traceback" not in stderr, stderr
