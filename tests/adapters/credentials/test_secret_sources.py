"""The secret sources: the environment and a file, a tenant's own secret before a shared one."""

import json
import os

import pytest

from autonomic.adapters.credentials.env import EnvSecrets
from autonomic.adapters.credentials.file import FileSecrets
from autonomic.errors import ConfigError, NotFound


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
