"""The credentials port: a scoped credential is masked when printed, refuses to be serialised,
expires, and the secret sources find a tenant's secret before a shared one."""

import json
import os

import pytest

from autonomic.adapters.credentials.env import EnvSecrets
from autonomic.adapters.credentials.file import FileSecrets
from autonomic.core.canonical import canonical_json
from autonomic.errors import ConfigError, NotFound
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


def test_the_environment_source_prefers_the_tenants_own_secret():
    env = {"AUTONOMIC_SECRET_BANK": "shared", "AUTONOMIC_SECRET_ACME__BANK": "acme's"}
    source = EnvSecrets(env)
    assert source.secret("acme", "bank") == "acme's"
    assert source.secret("other", "bank") == "shared"
    with pytest.raises(NotFound) as found:
        source.secret("acme", "github")
    assert "AUTONOMIC_SECRET_ACME__GITHUB" in str(found.value)


def test_the_file_source_reads_per_tenant_and_refuses_a_readable_file(tmp_path):
    path = tmp_path / "secrets.json"
    path.write_text(json.dumps({"acme": {"bank": "acme's"}, "*": {"bank": "shared"}}))
    os.chmod(path, 0o600)
    source = FileSecrets(path)
    assert source.secret("acme", "bank") == "acme's"
    assert source.secret("beta", "bank") == "shared"
    with pytest.raises(NotFound):
        source.secret("beta", "github")
    os.chmod(path, 0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        source.secret("acme", "bank")
    os.chmod(path, 0o600)
    path.write_text("{not json")
    with pytest.raises(ConfigError, match="not JSON"):
        source.secret("acme", "bank")


def test_redact_replaces_the_secret_wherever_it_is():
    value = {"a": "x s3cret y", "b": ["s3cret"], "s3cret": 1, "n": 2}
    assert redact(value, ("s3cret",)) == {
        "a": f"x {REDACTED} y", "b": [REDACTED], REDACTED: 1, "n": 2,
    }  # fmt: skip
