"""Token counts: exact for OpenAI encodings with the network blocked, from a cache directory holding
only the files our install step extracted; conservative (never under) for unknown models."""

import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest

from autonomic.core.messages import Message, ModelResponse, Role, ToolCall, ToolSpec
from autonomic.gateway.tokens import ENCODING_FILES, TokenCounter, encoding_cache_dir

PROBE = textwrap.dedent(
    """
    import json, socket

    def refuse(*args, **kwargs):
        raise OSError("the network is blocked in this test")

    socket.socket.connect = refuse
    socket.create_connection = refuse
    from autonomic.gateway.tokens import TokenCounter

    gpt4o, gpt4, llama = TokenCounter("gpt-4o"), TokenCounter("gpt-4"), TokenCounter("llama-3-70b")
    print(json.dumps({
        "exact": [gpt4o.exact, gpt4.exact, llama.exact],
        "hello": gpt4o.text("hello world"),
        "great": gpt4.text("tiktoken is great!"),
        "llama": llama.text("tiktoken is great!"),
    }))
    """
)


def _probe(cache_dir):
    env = {**os.environ, "TIKTOKEN_CACHE_DIR": str(cache_dir)}
    out = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout)


@pytest.fixture(scope="module")
def installed() -> str:
    """The cache directory scripts/lib/env.sh fills (ensure_tiktoken_cache)."""
    cache = encoding_cache_dir()
    missing = [n for n, f in ENCODING_FILES.items() if not (cache / f).is_file()]
    if missing:
        reason = f"tiktoken encodings {missing} are not in {cache}; run scripts/test (ensure_tiktoken_cache)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return str(cache)


def test_counts_are_exact_offline_from_only_our_extracted_files(tmp_path, installed):
    fresh = tmp_path / "tiktoken"
    fresh.mkdir()
    for file_name in ENCODING_FILES.values():
        shutil.copy(os.path.join(installed, file_name), fresh / file_name)
    result = _probe(fresh)
    assert result["exact"] == [True, True, False]
    assert result["hello"] == 2  # o200k_base
    assert result["great"] == 6  # cl100k_base: "t", "ik", "token", " is", " great", "!"
    assert result["llama"] >= 6  # unknown model: over-counted, never under


def test_without_the_files_counting_is_conservative_not_a_download(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = _probe(empty)  # the network is blocked: a download attempt would crash the probe
    assert result["exact"] == [False, False, False]
    assert result["hello"] >= 2
    assert result["great"] >= 6


def test_messages_count_framing_tool_calls_and_tool_schemas(installed):
    counter = TokenCounter("gpt-4o-mini")
    assert counter.exact
    plain = [Message(Role.SYSTEM, "be brief"), Message(Role.USER, "hello world")]
    base = counter.messages(plain)
    assert base == 3 + (3 + counter.text("be brief")) + (3 + 2)
    with_call = [*plain, Message(Role.ASSISTANT, None, (ToolCall("c1", "add", '{"a": 1}'),))]
    assert counter.messages(with_call) > base + counter.text('{"a": 1}')
    tools = [ToolSpec("add", "Add two numbers", {"type": "object"})]
    assert counter.messages(plain, tools) > base + counter.text("Add two numbers")
    answer = ModelResponse("hello world", (ToolCall("c", "add", "{}"),))
    assert counter.response(answer) == 2 + 3 + counter.text("add") + counter.text("{}")
