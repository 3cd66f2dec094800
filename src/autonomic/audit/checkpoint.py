"""Signed checkpoints and the export an outside auditor verifies with the public key alone.

A checkpoint is a record appended to the audit log that states the log's head (the hash of the
record before it), its length and the time, signed with an Ed25519 key. Anyone with database
access can rewrite the log and recompute its chain; nobody without the private key can sign a
checkpoint for the rewritten one, and the checkpoints an auditor kept (from an earlier export)
must still be in the log: so a rewrite, and a log cut short, show.

The private key is configuration: a PEM file named by ``--key`` or ``AUTONOMIC_AUDIT_KEY``
(``autonomic audit keygen`` makes one, readable by its owner only). Its bytes are never logged,
printed or journaled; only its public key's fingerprint is written into a checkpoint.

An export is a directory: ``log.jsonl`` (every record of the log, in order), ``checkpoints.jsonl``
(the checkpoint records) and ``public_key.pem``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from autonomic.core.canonical import canonical_json
from autonomic.core.verification import LogChecker, Verifier
from autonomic.errors import ConfigError, InvalidInput
from autonomic.ports.store import Store

KEY_ENV = "AUTONOMIC_AUDIT_KEY"

try:  # the audit extra
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (
        Ed25519PrivateKey,
        Ed25519PublicKey,
    )
except ImportError:  # pragma: no cover - depends on the installed extras
    _MISSING = "signed checkpoints need the cryptography package: pip install 'autonomic[audit]'"
else:
    _MISSING = ""


def _need_crypto() -> None:
    if _MISSING:
        raise ConfigError(_MISSING, hint="install the audit extra")


def key_path(given: str | None) -> Path:
    """Where the private key is: ``--key``, else ``AUTONOMIC_AUDIT_KEY``."""
    raw = given or os.environ.get(KEY_ENV)
    if not raw:
        raise ConfigError(
            "no audit signing key configured",
            hint=f"pass --key PATH or set {KEY_ENV}; `autonomic audit keygen --out PATH` makes one",
        )
    return Path(raw)


def generate_key(path: Path) -> Path:
    """Write a new private key to ``path`` (mode 0600) and its public key beside it
    (``path.pub``); refuse to overwrite. Returns the public key's path."""
    _need_crypto()
    if path.exists():
        raise InvalidInput(
            f"{path} exists already", hint="choose another path; keys are never overwritten"
        )
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    public = path.with_name(path.name + ".pub")
    public.write_bytes(_public_pem(key.public_key()))
    return public


def _public_pem(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def load_private_key(path: Path) -> Ed25519PrivateKey:
    """The signing key at ``path``; a clear error (never its content) when it is not one."""
    _need_crypto()
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except OSError as exc:
        raise ConfigError(f"cannot read the audit key {path}: {exc.strerror}") from None
    except (ValueError, TypeError):
        raise ConfigError(
            f"{path} is not an unencrypted PEM private key",
            hint="make one with `autonomic audit keygen`",
        ) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(
            f"{path} is not an Ed25519 key", hint="make one with `autonomic audit keygen`"
        )
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    _need_crypto()
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except OSError as exc:
        raise ConfigError(f"cannot read the public key {path}: {exc.strerror}") from None
    except ValueError:
        raise ConfigError(f"{path} is not a PEM public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ConfigError(f"{path} is not an Ed25519 public key")
    return key


def fingerprint(key: Ed25519PublicKey) -> str:
    """A short name of a public key, written into each checkpoint."""
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "ed25519:" + hashlib.sha256(raw).hexdigest()[:16]


def _signed_part(data: Mapping[str, Any]) -> bytes:
    return canonical_json({k: data[k] for k in ("pos", "head", "count", "time")}).encode()


def signer(
    key: Ed25519PrivateKey, clock: Callable[[], float] = time.time
) -> Callable[[int, str], str]:
    """``sign(pos, head)``: the body of a checkpoint of a log whose last record is ``pos``."""

    def sign(pos: int, head: str) -> str:
        data: dict[str, Any] = {"pos": pos, "head": head, "count": pos + 1, "time": clock()}
        data["key"] = fingerprint(key.public_key())
        data["signature"] = base64.b64encode(key.sign(_signed_part(data))).decode()
        return canonical_json(data)

    return sign


def verifier(key: Ed25519PublicKey) -> Verifier:
    """Checks a checkpoint's signature with ``key``."""

    def check(data: Mapping[str, Any]) -> bool:
        try:
            key.verify(base64.b64decode(str(data["signature"])), _signed_part(data))
        except (InvalidSignature, KeyError, ValueError):
            return False
        return True

    return check


async def export(store: Store, out: Path, public_key: Ed25519PublicKey) -> tuple[int, int]:
    """Write the log, its checkpoints and the public key into ``out``; (records, checkpoints).

    A command's one job: the local file writes block the loop, which runs nothing else."""
    _prepare(out)
    records = checkpoints = 0
    after = -1
    with open(out / "log.jsonl", "w") as log, open(out / "checkpoints.jsonl", "w") as cps:  # noqa: ASYNC230
        while rows := await store.scan_audit_log(after=after):
            for row in rows:
                line = json.dumps(list(row), ensure_ascii=False)
                log.write(line + "\n")
                records += 1
                if row[1] == "checkpoint":
                    cps.write(row[3] + "\n")
                    checkpoints += 1
            after = rows[-1][0]
    _write(out / "public_key.pem", _public_pem(public_key))
    return records, checkpoints


_HINT = "the export was changed or cut: ask for it again (`autonomic audit export`)"


def _checkpoints(path: Path) -> list[dict[str, Any]]:
    """The checkpoints listed in ``path``, each an object with an integer ``pos``; a line that is
    not one is refused by its number (an auditor edits this file by hand)."""
    found = []
    for number, line in enumerate(path.read_text(errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except ValueError:
            data = None
        pos = data.get("pos") if isinstance(data, dict) else None
        if type(pos) is not int:
            raise InvalidInput(f"{path.name} line {number} is not a checkpoint", hint=_HINT)
        found.append(data)
    return found


def _record(line: str, number: int) -> tuple[int, str, str | None, str, str, float]:
    """One line of ``log.jsonl`` as the record it must be: position, kind, run id or null,
    body, stored hash, time."""
    try:
        pos, kind, run_id, body, stored, created_at = json.loads(line)
        if not (
            type(pos) is int
            and isinstance(kind, str)
            and (run_id is None or isinstance(run_id, str))
            and isinstance(body, str)
            and isinstance(stored, str)
            and isinstance(created_at, int | float)
            and not isinstance(created_at, bool)
        ):
            raise ValueError(line)
    except (ValueError, TypeError):
        raise InvalidInput(f"log.jsonl line {number} is not a record", hint=_HINT) from None
    return pos, kind, run_id, body, stored, float(created_at)


def _prepare(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)


def _write(path: Path, data: bytes) -> None:
    path.write_bytes(data)


def verify_export(
    folder: Path, public_key: Ed25519PublicKey, kept: Path | None = None
) -> LogChecker:
    """Check an export with the public key only: the log's chain, every checkpoint's signature,
    and that the log still reaches each checkpoint in ``kept`` (the auditor's own copy of
    ``checkpoints.jsonl``; by default the export's)."""
    listed = kept or folder / "checkpoints.jsonl"
    try:
        expected = _checkpoints(listed)
        lines = (folder / "log.jsonl").open()
    except OSError as exc:
        raise InvalidInput(
            f"not an audit export: {exc.strerror or exc}: {exc.filename or folder}",
            hint="make one with `autonomic audit export`",
        ) from None
    check = verifier(public_key)
    log = LogChecker(verify_signature=check, watch=frozenset(c["pos"] for c in expected))
    with lines:
        for number, line in enumerate(lines, start=1):
            log.feed([_record(line, number)])
    for cp in expected:
        if not check(cp):
            from autonomic.core.verification import Break, BreakKind

            if log.first_break is None:
                log.first_break = Break(
                    BreakKind.BAD_SIGNATURE,
                    None,
                    int(cp["pos"]) + 1,
                    "a kept checkpoint's signature does not verify",
                )
        log.expect_checkpoint(cp)
    return log
