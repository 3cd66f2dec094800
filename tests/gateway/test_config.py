"""The configuration file: a full example loads, every mistake is one line naming file, line, key
and fix; secrets never come from the file."""

import pytest

from autonomic.errors import ConfigError
from autonomic.gateway import Priority, ProviderKind, load_config, parse_config

EXAMPLE = """\
redis_url: ${REDIS_URL:-redis://127.0.0.1:6379/0}
retry: {max_attempts: 5, base_delay: 0.5, max_delay: 20}
breaker: {threshold: 5, reset_after: 30}
fallback_after: {normal: 2, background: 0}
providers:
  - name: openai
    base_url: https://api.openai.com/v1
    model: gpt-4o-mini
    api_key_env: OPENAI_API_KEY
    context_window: 128000
    max_output_tokens: 2048
    price: {input: 0.15, output: 0.60}
    limits: {requests_per_minute: 500, tokens_per_minute: 200000}
  - name: vllm
    base_url: http://vllm:8000/v1
    model: meta-llama/Llama-3.1-70B-Instruct
    context_window: 32768
    serves: [normal, background]
"""


def _write(tmp_path, text, name="gateway.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_the_documented_example_loads(tmp_path):
    config = load_config(_write(tmp_path, EXAMPLE), env={})
    openai, vllm = config.providers
    assert config.redis_url == "redis://127.0.0.1:6379/0"
    assert openai.api_key_env == "OPENAI_API_KEY"
    assert openai.limits.requests_per_minute == 500
    assert openai.pricing.cost(1_000_000, 1_000_000) == pytest.approx(0.75)
    assert vllm.serves == {Priority.NORMAL, Priority.BACKGROUND}
    assert config.retry.max_attempts == 5
    assert config.retry.max_server_wait == 300.0  # the default
    assert config.fallback_after[Priority.CRITICAL] is None


def test_env_references_and_the_redis_override(tmp_path):
    env = {"REDIS_URL": "redis://cache:6379/1"}
    assert load_config(_write(tmp_path, EXAMPLE), env=env).redis_url == "redis://cache:6379/1"
    env["AUTONOMIC_GATEWAY_REDIS_URL"] = "redis://other:6379/2"
    assert load_config(_write(tmp_path, EXAMPLE), env=env).redis_url == "redis://other:6379/2"


def test_the_redis_prefix_namespaces_limits_and_circuits(tmp_path):
    assert load_config(_write(tmp_path, EXAMPLE), env={}).redis_prefix == "autonomic"
    staging = load_config(_write(tmp_path, "redis_prefix: staging\n" + EXAMPLE), env={})
    assert staging.redis_prefix == "staging"
    with pytest.raises(ConfigError, match="redis_prefix must be a non-empty string"):
        load_config(_write(tmp_path, "redis_prefix: ''\n" + EXAMPLE), env={})


def test_the_path_comes_from_the_environment(tmp_path):
    path = _write(tmp_path, EXAMPLE)
    assert load_config(env={"AUTONOMIC_GATEWAY": str(path)}).providers[0].name == "openai"
    with pytest.raises(ConfigError, match="no gateway configuration given"):
        load_config(env={})


def test_toml_works_too(tmp_path):
    text = """
[[providers]]
name = "local"
kind = "scripted"
script = "turns.json"
"""
    config = load_config(_write(tmp_path, text, "gateway.toml"), env={})
    assert config.providers[0].kind is ProviderKind.SCRIPTED


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            "requests_per_minute: 500",
            "requests_per_minute: fast",
            "gateway.yaml:13: providers[0].limits.requests_per_minute must be a positive number, got 'fast'",
        ),
        (
            "requests_per_minute: 500",
            "request_per_minute: 500",
            "gateway.yaml:13: providers[0].limits.request_per_minute is not a known key (did you mean 'requests_per_minute'?)",
        ),
        (
            "api_key_env: OPENAI_API_KEY",
            "api_key_env: sk-live-123",
            "gateway.yaml:9: providers[0].api_key_env must be the name of an environment variable, not a key",
        ),
        (
            "api_key_env: OPENAI_API_KEY",
            "api_key: sk-live-123",
            "gateway.yaml:9: providers[0].api_key must not hold the key itself",
        ),
        (
            "serves: [normal, background]",
            "serves: [normal, urgent]",
            "gateway.yaml:18: providers[1].serves has an unknown priority class",
        ),
        (
            "name: vllm",
            "name: openai",
            "gateway.yaml:14: providers[1].name 'openai' is used twice",
        ),
        (
            "base_url: http://vllm:8000/v1",
            "base_url: vllm:8000",
            "gateway.yaml:15: providers[1].base_url must be an http(s) URL",
        ),
        (
            "max_attempts: 5",
            "max_attempts: 2.5",
            "gateway.yaml:2: retry.max_attempts must be a positive integer, got 2.5",
        ),
        (
            "max_delay: 20}",
            "max_delay: 20, max_server_wait: -1}",
            "gateway.yaml:2: retry.max_server_wait must be a positive number, got -1",
        ),
        (
            "max_delay: 20}",
            "max_delay: 20, max_server_wat: 60}",
            "retry.max_server_wat is not a known key (did you mean 'max_server_wait'?)",
        ),
        (
            "providers:",
            "provider:",
            "gateway.yaml:5: provider is not a known key (did you mean 'providers'?)",
        ),
        (
            "    model: gpt-4o-mini\n",
            "",
            "gateway.yaml:6: providers[0] provider 'openai' needs a model",
        ),
        (
            "redis_url: ${REDIS_URL:-redis://127.0.0.1:6379/0}",
            "redis_url: ${NOPE}",
            "refers to ${NOPE}, which is not set",
        ),
        ("providers:", "providers: [\n", "gateway.yaml:7: not valid YAML"),
    ],
)
def test_mistakes_name_the_file_line_key_and_fix(tmp_path, old, new, expected):
    assert old in EXAMPLE
    path = _write(tmp_path, EXAMPLE.replace(old, new, 1))
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    message = str(info.value)
    assert expected in message.replace(str(tmp_path) + "/", "")
    assert "sk-live-123" not in message  # a key pasted by mistake is not echoed


def test_a_missing_file_and_an_unknown_format(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml", env={})
    with pytest.raises(ConfigError, match=r"name the file \.yaml"):
        load_config(_write(tmp_path, "{}", "gateway.ini"), env={})


def test_every_priority_class_needs_a_provider():
    data = {
        "providers": [
            {"name": "a", "base_url": "http://a/v1", "model": "m", "serves": ["critical"]}
        ]
    }
    with pytest.raises(ConfigError, match="has no provider that serves 'normal' calls"):
        parse_config(data, source="g.yaml")


def test_the_example_in_the_docs_is_valid(tmp_path):
    from pathlib import Path

    doc = (Path(__file__).parents[2] / "docs" / "model-gateway.md").read_text()
    block = doc.split("```yaml\n", 1)[1].split("```", 1)[0]
    config = load_config(_write(tmp_path, block), env={})
    assert [p.name for p in config.providers] == ["openai", "vllm", "offline"]
    assert config.fallback_after[Priority.BACKGROUND] == 0
