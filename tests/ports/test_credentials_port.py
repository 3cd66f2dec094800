"""The credentials port: a scoped credential is masked when printed, refuses to be serialised,
expires; redact() replaces a secret wherever it stands in a JSON value."""

import json

import pytest

from autonomic.adapters.credentials.env import EnvSecrets
from autonomic.core.canonical import canonical_json
from autonomic.ports.credentials import (
    REDACTED,
    CredentialExpired,
    CredentialIssuer,
    CredentialScope,
    redact,
)

SCOPE = CredentialScope("acme", "run_1", "pay", "bank")


def test_a_credential_is_masked_expires_and_cannot_be_serialised():
    now = [100.0]
    issuer = CredentialIssuer(
        EnvSecrets({"AUTONOMIC_SECRET_BANK": "s3cret"}), ttl=5, clock=lambda: now[0]
    )
    credential = issuer.issue(SCOPE)
    assert credential.reveal() == "s3cret"
    assert "s3cret" not in repr(credential)
    assert "s3cret" not in str(credential)
    assert "s3cret" not in f"{credential!r} {[credential]} { ({'c': credential}) }"
    with pytest.raises(TypeError):
        canonical_json({"c": credential})
    with pytest.raises(TypeError):
        json.dumps(credential)
    now[0] = 105.0
    with pytest.raises(CredentialExpired):
        credential.reveal()


def test_redact_replaces_the_secret_wherever_it_is():
    value = {"a": "x s3cret y", "b": ["s3cret"], "s3cret": 1, "n": 2}
    assert redact(value, ("s3cret",)) == {
        "a": f"x {REDACTED} y", "b": [REDACTED], REDACTED: 1, "n": 2,
    }  # fmt: skip
