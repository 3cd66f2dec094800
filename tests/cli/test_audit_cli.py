"""`autonomic audit` end to end: the demo with an approval, a cancel and a forced resume is
anchored with who did what; verify passes, then names a break made behind its back; a signed
checkpoint and an export are verified with the public key alone."""

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

from autonomic.cli.exit_codes import ExitCode
from autonomic.core.audit import anchor_summary

CLI = [sys.executable, "-m", "autonomic.cli"]


def autonomic(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in ("AUTONOMIC_DB", "AUTONOMIC_AUDIT_KEY")}
    return subprocess.run(
        [*CLI, *args],
        cwd=cwd,
        env=base | {"COLUMNS": "250"} | env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def acts(db: Path) -> list[dict]:
    conn = sqlite3.connect(db)
    rows = conn.execute("SELECT run_id, body FROM audit_log WHERE pos > 0 ORDER BY pos").fetchall()
    conn.close()
    found = []
    for run_id, body in rows:
        data = anchor_summary(body, run_id) if body[0].isdigit() else json.loads(body)
        if "act" in data:
            found.append(data["act"])
    return found


def test_operator_acts_are_in_the_log_with_who_and_verify_names_a_break(tmp_path):
    stopped = autonomic("demo", "--interactive", cwd=tmp_path)
    assert stopped.returncode == ExitCode.WAITING, stopped.stderr
    [pending] = json.loads(autonomic("approvals", "--json", cwd=tmp_path).stdout)
    assert (
        autonomic(
            "approve", pending["id"], "--as", "controller", "--reason", "ok", cwd=tmp_path
        ).returncode
        == 0
    )
    run_id = pending["run_id"]
    assert (
        autonomic("cancel", run_id, "--as", "olga", "--reason", "enough", cwd=tmp_path).returncode
        == 0
    )
    done = {(a["act"], a["by"]) for a in acts(tmp_path / "autonomic.db")}
    assert ("approval.approve", "controller@default") in done
    assert ("run.cancel", "olga@default") in done

    noted = autonomic(
        "audit",
        "act",
        "policy.change",
        "--as",
        "pat",
        "--detail",
        '{"file": "policy.yaml"}',
        cwd=tmp_path,
    )
    assert noted.returncode == 0, noted.stderr
    assert ("policy.change", "pat@default") in {
        (a["act"], a["by"]) for a in acts(tmp_path / "autonomic.db")
    }
    bad = autonomic("audit", "act", "policy.change", "--detail", "[1]", cwd=tmp_path)
    assert bad.stderr.startswith("error: --detail must be a JSON object")
    ok = autonomic("audit", "verify", cwd=tmp_path)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "audit log intact" in ok.stdout
    one = json.loads(autonomic("audit", "verify", "--run", run_id, "--json", cwd=tmp_path).stdout)
    assert one["ok"]
    assert one["runs"] == 1

    conn = sqlite3.connect(tmp_path / "autonomic.db")
    conn.execute("DROP TRIGGER journal_append_only_delete")
    (last,) = conn.execute("SELECT max(seq) FROM journal WHERE run_id = ?", (run_id,)).fetchone()
    conn.execute("DELETE FROM journal WHERE run_id = ? AND seq >= ?", (run_id, last - 1))
    conn.commit()
    conn.close()
    broken = autonomic("audit", "verify", cwd=tmp_path)
    assert broken.returncode == ExitCode.ERROR
    assert f"truncated at run {run_id} entry {last - 1}" in broken.stdout
    report = json.loads(autonomic("audit", "verify", "--json", cwd=tmp_path).stdout)
    assert report["first_break"]["kind"] == "truncated"
    assert report["first_break"]["position"] == last - 1


def test_signed_checkpoints_export_and_verify_with_the_public_key_only(tmp_path):
    assert autonomic("demo", cwd=tmp_path).returncode == 0
    key = tmp_path / "audit.key"
    made = autonomic("audit", "keygen", "--out", str(key), cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    assert oct(key.stat().st_mode & 0o777) == "0o600"
    pem = key.read_text()
    signed = autonomic("audit", "checkpoint", cwd=tmp_path, AUTONOMIC_AUDIT_KEY=str(key))
    assert signed.returncode == 0, signed.stderr
    assert pem not in signed.stdout + signed.stderr
    assert autonomic("demo", cwd=tmp_path).returncode == 0
    assert autonomic("audit", "checkpoint", "--key", str(key), cwd=tmp_path).returncode == 0
    exported = autonomic("audit", "export", "--out", "x", "--key", str(key), cwd=tmp_path)
    assert exported.returncode == 0, exported.stderr
    assert "2 checkpoints" in exported.stdout
    public = tmp_path / "x" / "public_key.pem"
    ok = autonomic("audit", "verify", "--export", "x", "--public-key", str(public), cwd=tmp_path)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "2 checkpoints" in ok.stdout
    with_db = autonomic("audit", "verify", "--public-key", str(public), cwd=tmp_path)
    assert with_db.returncode == 0, with_db.stdout

    # An auditor kept the checkpoints; someone cuts the log short and drops the last checkpoint.
    kept = tmp_path / "kept.jsonl"
    kept.write_text((tmp_path / "x" / "checkpoints.jsonl").read_text())
    lines = (tmp_path / "x" / "log.jsonl").read_text().splitlines()
    (tmp_path / "x" / "log.jsonl").write_text("\n".join(lines[:-3]) + "\n")
    cut = autonomic(
        "audit",
        "verify",
        "--export",
        "x",
        "--public-key",
        str(public),
        "--checkpoints",
        str(kept),
        cwd=tmp_path,
    )
    assert cut.returncode == ExitCode.ERROR
    assert "log truncated" in cut.stdout

    # A rewritten record, its chain remade: the checkpoint signature no longer fits the head.
    records = [json.loads(line) for line in lines]
    from autonomic.core.audit import record_digest, record_hash

    target = next(i for i, r in enumerate(records) if r[1] == "anchor")
    records[target][3] += " "  # the same JSON, another record
    for i in range(target, len(records)):
        digest = record_digest(records[i][1], records[i][2], records[i][3])
        records[i][4] = record_hash(records[i - 1][4], records[i][0], records[i][1], digest)
    (tmp_path / "x" / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    forged = autonomic(
        "audit", "verify", "--export", "x", "--public-key", str(public), cwd=tmp_path
    )
    assert forged.returncode == ExitCode.ERROR
    assert "log edited" in forged.stdout or "bad signature" in forged.stdout

    other = tmp_path / "other.key"
    autonomic("audit", "keygen", "--out", str(other), cwd=tmp_path)
    wrong = autonomic("audit", "verify", "--public-key", f"{other}.pub", cwd=tmp_path)
    assert wrong.returncode == ExitCode.ERROR
    assert "bad signature" in wrong.stdout


def test_bad_input_gets_one_line(tmp_path):
    nokey = autonomic("audit", "checkpoint", cwd=tmp_path)
    assert nokey.returncode != 0
    assert nokey.stderr.startswith("error: no audit signing key configured")
    assert "Traceback" not in nokey.stderr
    junk = tmp_path / "junk.pem"
    junk.write_text("not a key")
    bad = autonomic("audit", "checkpoint", "--key", str(junk), cwd=tmp_path)
    assert "not an unencrypted PEM private key" in bad.stderr
    assert "Traceback" not in bad.stderr
    noexport = autonomic(
        "audit", "verify", "--export", "nowhere", "--public-key", str(junk), cwd=tmp_path
    )
    assert noexport.returncode != 0
    assert "Traceback" not in noexport.stderr
