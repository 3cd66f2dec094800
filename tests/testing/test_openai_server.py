"""The OpenAI-compatible test server: faults it plays and the rate limit it enforces itself."""

import email.utils
import json
import time
import urllib.request

import pytest

from autonomic.testing.openai_server import (
    REPEATED_ID,
    Limit,
    OpenAITestServer,
    completion,
    limited_once,
    max_in_window,
    rate_limited,
    raw,
    server_error,
)


def _post(server, body=None):
    request = urllib.request.Request(
        server.base_url + "/chat/completions",
        data=json.dumps(body or {"model": "m", "messages": []}).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def test_scripted_faults_are_played_in_order_then_the_default():
    replies = [rate_limited(2.5), server_error(503), raw(b'{"trunc')]
    with OpenAITestServer(replies, default=completion("ok")) as server:
        status, headers, _ = _post(server)
        assert (status, headers["Retry-After"]) == (429, "2.5")
        assert _post(server)[0] == 503
        assert _post(server)[2] == b'{"trunc'
        status, _, body = _post(server)
        assert status == 200
        assert json.loads(body)["choices"][0]["message"]["content"] == "ok"
    assert len(server.requests) == 4


def test_a_responder_sees_the_request():
    def echo(body):
        return completion(body["messages"][-1]["content"].upper())

    with OpenAITestServer(default=echo) as server:
        _, _, body = _post(server, {"model": "m", "messages": [{"role": "user", "content": "hi"}]})
    assert json.loads(body)["choices"][0]["message"]["content"] == "HI"


def test_the_server_enforces_its_own_limit_and_records_arrivals():
    limit = Limit(requests=3, tokens=1000, window=60)
    with OpenAITestServer(default=completion("ok", usage=(10, 5)), limit=limit) as server:
        statuses = [_post(server)[0] for _ in range(5)]
    assert statuses == [200, 200, 200, 429, 429]
    assert [a.status for a in server.arrivals] == statuses
    assert len(server.served()) == 3
    assert max_in_window([a.at for a in server.served()], 60) == 3


def test_the_token_limit_counts_reported_usage():
    limit = Limit(tokens=40, window=60)
    with OpenAITestServer(default=completion("ok", usage=(10, 5)), limit=limit) as server:
        statuses = [_post(server)[0] for _ in range(3)]
    assert statuses == [200, 200, 429]  # 15 + 15 fit in 40, a third 15 does not


@pytest.mark.parametrize(
    ("times", "window", "expected"), [([0, 0.5, 1.0, 1.6], 1.0, 2), ([], 1.0, 0)]
)
def test_max_in_window(times, window, expected):
    assert max_in_window(times, window) == expected


def _stream(server):
    import asyncio

    import openai

    async def main():
        client = openai.AsyncOpenAI(base_url=server.base_url, api_key="k", max_retries=0)
        try:
            stream = await client.chat.completions.create(
                model="m", messages=[{"role": "user", "content": "hi"}], stream=True
            )
            return [chunk async for chunk in stream]
        finally:
            await client.close()

    return asyncio.run(main())


def test_streamed_answers_arrive_as_chunks():
    from autonomic.testing.openai_server import stream_events

    reply = completion("a streamed answer", usage=(3, 4))
    with OpenAITestServer([reply]) as server:
        chunks = _stream(server)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "a streamed answer"
    assert chunks[-1].usage.completion_tokens == 4
    assert len(chunks) == len(stream_events(reply.body))


def test_a_truncated_stream_is_an_error_for_the_client():
    import openai

    from autonomic.testing.openai_server import truncated_stream

    with (
        OpenAITestServer([truncated_stream(completion("never finished"), after=2)]) as server,
        pytest.raises(openai.APIConnectionError),
    ):
        _stream(server)  # the body ends without its last chunk: the connection broke mid-answer


@pytest.mark.parametrize(
    ("header", "sent_as", "value"),
    [
        ("Retry-After", "Retry-After", "62.5"),
        ("retry-after-ms", "retry-after-ms", "62500"),
        ("llm_provider-retry-after", "llm_provider-retry-after", "62.5"),
        ("x-ratelimit-reset-requests", "x-ratelimit-reset-requests", "1m2.5s"),
        ("x-ratelimit-reset-tokens", "x-ratelimit-reset-tokens", "1m2.5s"),
    ],
)
def test_rate_limited_speaks_each_servers_hint(header, sent_as, value):
    extra = {"x-ratelimit-remaining-requests": "0"}
    with OpenAITestServer([rate_limited(62.5, header=header, headers=extra)]) as server:
        status, headers, _ = _post(server)
    assert status == 429
    assert headers[sent_as] == value
    assert headers["x-ratelimit-remaining-requests"] == "0"


def test_rate_limited_as_an_http_date_is_at_least_the_wait_from_now():
    before = time.time()
    with OpenAITestServer([rate_limited(30, header="retry-after-date")]) as server:
        _status, headers, _ = _post(server)
    when = email.utils.parsedate_to_datetime(headers["Retry-After"]).timestamp()
    assert when >= before + 30  # rounded up to the second, never down


def test_limited_once_tells_each_conversation_to_wait_once():
    answer = limited_once(lambda body: rate_limited(5), completion("ok"))
    with OpenAITestServer(default=answer) as server:
        first = [_post(server, {"messages": [{"role": "user", "content": c}]}) for c in "abab"]
    assert [status for status, _, _ in first] == [429, 429, 200, 200]


@pytest.mark.parametrize(("mode", "want"), [("repeat", [REPEATED_ID] * 2), ("none", [None, None])])
def test_the_server_can_repeat_or_leave_out_tool_call_ids(mode, want):
    reply = completion(None, [("a", "add", "{}"), ("b", "add", "{}")])
    with OpenAITestServer(default=reply, call_ids=mode) as server:
        bodies = [json.loads(_post(server)[2]) for _ in range(2)]
    for body in bodies:
        calls = body["choices"][0]["message"]["tool_calls"]
        assert [c.get("id") for c in calls] == want
    # the scripted reply itself is unchanged (a default answers every request)
    assert [c["id"] for c in reply.body["choices"][0]["message"]["tool_calls"]] == ["a", "b"]
