"""``--model gateway:PATH.yaml``: the composition root builds a gateway; scripted providers work."""

import asyncio
import json

import pytest

from autonomic.bootstrap import build_model
from autonomic.core.messages import Message, Role
from autonomic.errors import ConfigError
from autonomic.gateway import Gateway


def test_a_gateway_spec_builds_a_gateway_over_a_scripted_provider(tmp_path, monkeypatch):
    script = tmp_path / "turns.json"
    script.write_text(json.dumps({"turns": [{"content": "hello from the script"}]}))
    config = tmp_path / "gateway.yaml"
    config.write_text(
        f"providers:\n  - name: offline\n    kind: scripted\n    script: {script}\n"
        "    price: {input: 1, output: 2}\n"
    )
    model = build_model(f"gateway:{config}")
    assert isinstance(model, Gateway)
    assert model.name == "gateway:offline"
    response = asyncio.run(model.complete([Message(Role.USER, "hi")], []))
    assert (response.provider, response.content) == ("offline", "hello from the script")
    assert response.cost_usd is not None
    assert response.cost_usd > 0
    monkeypatch.setenv("AUTONOMIC_GATEWAY", str(config))
    assert isinstance(build_model("gateway:"), Gateway)


def test_a_gateway_spec_without_a_file_says_how_to_give_one(monkeypatch):
    monkeypatch.delenv("AUTONOMIC_GATEWAY", raising=False)
    with pytest.raises(ConfigError, match="needs a configuration file"):
        build_model("gateway:")


def test_a_missing_api_key_variable_is_named(tmp_path, monkeypatch):
    monkeypatch.delenv("NO_SUCH_KEY_VAR", raising=False)
    config = tmp_path / "gateway.yaml"
    config.write_text(
        "providers:\n  - name: main\n    base_url: http://127.0.0.1:1/v1\n    model: m\n"
        "    api_key_env: NO_SUCH_KEY_VAR\n"
    )
    with pytest.raises(ConfigError, match="environment variable NO_SUCH_KEY_VAR is not set"):
        build_model(f"gateway:{config}")


def test_the_cli_validates_a_gateway_file_and_never_prints_a_key(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from autonomic.cli.app import app

    monkeypatch.setenv("MY_KEY", "sk-secret-value")
    good = tmp_path / "gateway.yaml"
    good.write_text(
        "providers:\n  - name: main\n    base_url: http://127.0.0.1:1/v1\n    model: m\n"
        "    api_key_env: MY_KEY\n"
    )
    result = CliRunner().invoke(app, ["gateway-check", str(good), "--json"])
    assert result.exit_code == 0, result.output
    assert '"api_key_set": true' in result.output
    assert "sk-secret-value" not in result.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("providers: []\n")
    result = CliRunner().invoke(app, ["gateway-check", str(bad)])
    assert result.exit_code != 0
    assert "providers must be a non-empty list" in str(result.exception)
