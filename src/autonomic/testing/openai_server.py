"""A real OpenAI-compatible HTTP server on 127.0.0.1 that plays scripted replies and faults.

For tests of anything that talks to a model server over HTTP: each POST to
``/v1/chat/completions`` pops the next scripted reply (a completion body, an error status, a fault),
and every request body is kept for assertions. When the script runs out, ``default`` (a reply or a
function of the request body) answers; without one, the server answers 500.

Faults a real provider produces, so retry, breaker and parsing code can be tested against them:
``rate_limited`` (429 with ``Retry-After`` or any other wait hint real servers send, see
``RATE_HINTS``; ``limited_once`` tells each conversation to wait once), ``server_error`` (5xx), ``slow`` (a reply sent after a
delay), ``malformed_tool_call`` (arguments that are not JSON), ``empty_choices``, ``raw`` (any
bytes, e.g. truncated JSON) and ``truncated_stream`` (a streamed answer cut off mid-way).

``call_ids`` plays servers that are careless with tool-call ids: ``"repeat"`` gives every tool
call of every answer the same id (``REPEATED_ID``; a mock some proxies ship does this, and some
local servers), ``"none"`` sends tool calls without an id. ``"scripted"`` (the default) sends the
ids the replies carry.

``limit`` makes the server enforce its own requests-per-window and tokens-per-window budget like a
commercial endpoint (sliding window; over budget it answers 429 with ``Retry-After``) and
``arrivals`` records when each request arrived, so tests can assert the rate a client really sent.

The server speaks HTTP/1.1; with ``keep_alive=True`` clients can reuse connections. It runs in a
background thread; use it as a context manager.
"""

from __future__ import annotations

import copy
import email.utils
import json
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Literal

CallIds = Literal["scripted", "repeat", "none"]
"""How the server names the tool calls it sends (see the module docstring)."""
REPEATED_ID = "call_0"
"""The one id every tool call carries with ``call_ids="repeat"``."""


@dataclass
class Reply:
    """One scripted answer: HTTP ``status`` and JSON ``body``.

    ``delay`` holds the answer back that many seconds (a slow provider); ``raw``, when set, is sent
    instead of ``body`` as it is (malformed or truncated JSON).
    """

    status: int = 200
    body: dict[str, Any] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    raw: bytes | None = None
    stream_cut: int | None = None
    """For ``stream: true`` requests: drop the connection after this many events (no ``[DONE]``)."""


@dataclass(frozen=True)
class Limit:
    """A budget the server enforces itself: at most ``requests`` and ``tokens`` per ``window`` s.

    Tokens are the usage (prompt + completion) the server reports in its replies.
    """

    requests: int | None = None
    tokens: int | None = None
    window: float = 60.0


@dataclass(frozen=True)
class Arrival:
    """One request as the server saw it: monotonic arrival time, the status it answered, tokens."""

    at: float
    status: int
    tokens: int


def completion(
    content: str | None = None,
    tool_calls: list[tuple[str, str, str]] | None = None,
    *,
    model: str = "test-model",
    usage: tuple[int, int] | None = (10, 5),
) -> Reply:
    """A successful chat completion; ``tool_calls`` are (id, name, raw arguments).

    ``usage=None`` leaves usage out of the body, as some servers do.
    """
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if tool_calls:
        message["tool_calls"] = [
            {"id": i, "type": "function", "function": {"name": n, "arguments": a}}
            for i, n, a in tool_calls
        ]
    body: dict[str, Any] = {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": 0,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "finish_reason": "tool_calls" if tool_calls else "stop",
            }
        ],
    }
    if usage is not None:
        body["usage"] = {
            "prompt_tokens": usage[0],
            "completion_tokens": usage[1],
            "total_tokens": sum(usage),
        }
    return Reply(body=body)


RATE_HINTS = (
    "Retry-After",
    "retry-after-date",
    "retry-after-ms",
    "llm_provider-retry-after",
    "x-ratelimit-reset-requests",
    "x-ratelimit-reset-tokens",
)
"""The ways real servers say how long to wait, as ``rate_limited(header=...)`` spells them:
seconds, an HTTP date (``retry-after-date`` sends ``Retry-After: <date>``), milliseconds, a LiteLLM
proxy's own header (the only hint it sends on a 429), and OpenAI's budget resets (Go durations)."""


def rate_limited(
    retry_after: float = 1.0, *, header: str = "Retry-After", headers: dict[str, str] | None = None
) -> Reply:
    """A 429 asking for ``retry_after`` seconds in ``header`` (any of ``RATE_HINTS``, formatted as
    that header is: ``retry-after-ms`` in milliseconds, ``x-ratelimit-reset-*`` as ``1m2.5s``,
    ``retry-after-date`` as an HTTP date from now, rounded up to the second); ``headers`` are
    sent as well, verbatim (more hints, garbage, ``x-ratelimit-remaining-*``)."""
    name = header.lower()
    if name == "retry-after-ms":
        value = str(int(retry_after * 1000))
    elif name.startswith("x-ratelimit-reset-"):
        value = go_duration(retry_after)
    elif name == "retry-after-date":
        header = "Retry-After"
        value = email.utils.formatdate(math.ceil(time.time() + retry_after), usegmt=True)
    else:
        value = f"{retry_after:g}"
    return Reply(
        429,
        {"error": {"message": "Rate limit reached", "type": "rate_limit_error"}},
        headers={header: value, **(headers or {})},
    )


def go_duration(seconds: float) -> str:
    """``seconds`` as OpenAI writes its ``x-ratelimit-reset-*`` headers (Go's format): ``20ms``,
    ``1s``, ``6m0s``, ``1h2m3.5s``."""
    if seconds < 1:
        return f"{seconds * 1000:g}ms"
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    text = f"{secs:g}s"
    if minutes or hours:
        text = f"{int(minutes)}m{text}"
    if hours:
        text = f"{int(hours)}h{text}"
    return text


def limited_once(first: Callable[[dict[str, Any]], Reply], then: Reply) -> Responder:
    """A responder (``default=``) answering the first request of each conversation with
    ``first(body)`` - e.g. a 429 with a hint - and every later one with ``then``: each of many
    concurrent callers is told to wait once, then served. A conversation is its messages."""
    seen: set[str] = set()
    lock = threading.Lock()

    def answer(body: dict[str, Any]) -> Reply:
        key = json.dumps(body.get("messages"), sort_keys=True)
        with lock:
            fresh = key not in seen
            seen.add(key)
        return first(body) if fresh else then

    return answer


def server_error(status: int = 500) -> Reply:
    """A 5xx from the provider."""
    return Reply(
        status, {"error": {"message": f"internal error ({status})", "type": "server_error"}}
    )


def slow(reply: Reply, seconds: float) -> Reply:
    """``reply`` sent after ``seconds`` (for timeouts and latency)."""
    return Reply(reply.status, reply.body, dict(reply.headers), seconds, reply.raw)


def malformed_tool_call(name: str = "add", arguments: str = '{"a": 1,') -> Reply:
    """A tool call whose arguments are not valid JSON."""
    return completion(None, [("call_bad", name, arguments)])


def empty_choices() -> Reply:
    """A 200 with an empty ``choices`` list."""
    reply = completion("x")
    reply.body["choices"] = []
    return reply


def truncated_stream(reply: Reply, after: int = 2) -> Reply:
    """``reply`` streamed (to ``stream: true`` requests) but cut after ``after`` events."""
    return Reply(reply.status, reply.body, dict(reply.headers), reply.delay, reply.raw, after)


def stream_events(body: dict[str, Any], piece: int = 8) -> list[dict[str, Any]]:
    """A chat completion as the chunks a streaming server sends: role, content in ``piece``-character
    deltas, one delta per tool call, the finish reason, then usage (when the body has it)."""
    base = {k: body.get(k) for k in ("id", "created", "model")} | {
        "object": "chat.completion.chunk"
    }
    choice = (body.get("choices") or [{}])[0]
    message = choice.get("message") or {}

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return base | {"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

    events = [chunk({"role": "assistant", "content": ""})]
    content = message.get("content") or ""
    events += [chunk({"content": content[i : i + piece]}) for i in range(0, len(content), piece)]
    for index, call in enumerate(message.get("tool_calls") or []):
        events.append(chunk({"tool_calls": [{"index": index, **call}]}))
    events.append(chunk({}, choice.get("finish_reason") or "stop"))
    if body.get("usage"):
        events.append(base | {"choices": [], "usage": body["usage"]})
    return events


def raw(data: bytes, status: int = 200) -> Reply:
    """Any bytes as the body, e.g. truncated JSON."""
    return Reply(status, raw=data)


Responder = Callable[[dict[str, Any]], Reply]


class OpenAITestServer:
    """``with OpenAITestServer([replies...]) as server: server.base_url``"""

    def __init__(
        self,
        replies: list[Reply] | None = None,
        *,
        default: Reply | Responder | None = None,
        limit: Limit | None = None,
        keep_alive: bool = False,
        call_ids: CallIds = "scripted",
    ) -> None:
        """``keep_alive=True`` keeps connections open between requests (pooled clients); off by
        default, so a client dropped without ``close()`` leaves no open connection behind.
        ``call_ids``: ``"repeat"`` sends one id for every tool call, ``"none"`` sends none."""
        self.replies: deque[Reply] = deque(replies or [])
        self.call_ids = call_ids
        self.requests: list[dict[str, Any]] = []
        self.arrivals: list[Arrival] = []
        self.limit = limit
        self._default = default
        self._lock = threading.Lock()
        self._window: deque[tuple[float, int]] = deque()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # one write per response, sent at once: headers and body in separate small segments
            # meet Nagle's algorithm and delayed ACKs and cost 40 ms a request
            wbufsize = 1 << 16
            disable_nagle_algorithm = True

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(length) or b"{}")
                reply = outer._answer(body)
                if reply.delay:
                    time.sleep(reply.delay)
                if body.get("stream") and reply.status == 200 and reply.raw is None:
                    self._stream(reply)
                    return
                data = reply.raw if reply.raw is not None else json.dumps(reply.body).encode()
                self.send_response(reply.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                if not keep_alive:
                    self.send_header("Connection", "close")
                    self.close_connection = True
                for key, value in reply.headers.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(data)

            def _stream(self, reply: Reply) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                events = [f"data: {json.dumps(e)}\n\n" for e in stream_events(reply.body)]
                events.append("data: [DONE]\n\n")
                for n, event in enumerate(events):
                    if reply.stream_cut is not None and n >= reply.stream_cut:
                        self.wfile.flush()
                        self.close_connection = True  # no terminating chunk: a truncated body
                        return
                    data = event.encode()
                    self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                    self.wfile.flush()
                self.wfile.write(b"0\r\n\r\n")
                if not keep_alive:
                    self.close_connection = True

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self._server = _Server(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def _answer(self, body: dict[str, Any]) -> Reply:
        now = time.monotonic()
        with self._lock:
            self.requests.append(body)
            if self.replies:
                reply = self.replies.popleft()
            elif isinstance(self._default, Reply):
                reply = self._default
            elif self._default is not None:
                reply = self._default(body)
            else:
                reply = Reply(500, {"error": {"message": "no scripted reply left"}})
            if self.call_ids != "scripted":
                reply = _with_call_ids(reply, self.call_ids)
            tokens = _usage_tokens(reply)
            if self.limit is not None and reply.status == 200:
                over = self._over_limit(now, tokens)
                if over is not None:
                    reply, tokens = rate_limited(over), 0
            self.arrivals.append(Arrival(now, reply.status, tokens))
            return reply

    def _over_limit(self, now: float, tokens: int) -> float | None:
        """Seconds until this request would fit the sliding window, or None if it fits now."""
        assert self.limit is not None
        window = self.limit.window
        while self._window and self._window[0][0] <= now - window:
            self._window.popleft()
        count = len(self._window)
        used = sum(t for _, t in self._window)
        too_many = self.limit.requests is not None and count + 1 > self.limit.requests
        too_much = self.limit.tokens is not None and used + tokens > self.limit.tokens
        if too_many or too_much:
            oldest = self._window[0][0] if self._window else now
            return max(0.001, oldest + window - now)
        self._window.append((now, tokens))
        return None

    def served(self) -> list[Arrival]:
        """Arrivals answered with 200."""
        with self._lock:
            return [a for a in self.arrivals if a.status == 200]

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/v1"

    def __enter__(self) -> OpenAITestServer:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


class _Server(ThreadingHTTPServer):
    # the default backlog of 5 resets connections when dozens of clients connect at once
    request_queue_size = 1024
    daemon_threads = True


def _with_call_ids(reply: Reply, mode: CallIds) -> Reply:
    """``reply`` with its tool calls' ids all ``REPEATED_ID`` (``"repeat"``) or left out
    (``"none"``); the scripted reply itself is not changed (a default answers many requests)."""
    if reply.raw is not None or reply.status != 200:
        return reply
    body = copy.deepcopy(reply.body)
    for choice in body.get("choices") or []:
        for call in (choice.get("message") or {}).get("tool_calls") or []:
            if mode == "repeat":
                call["id"] = REPEATED_ID
            else:
                call.pop("id", None)
    return Reply(reply.status, body, dict(reply.headers), reply.delay, None, reply.stream_cut)


def _usage_tokens(reply: Reply) -> int:
    usage = reply.body.get("usage") if reply.raw is None else None
    if not isinstance(usage, dict):
        return 0
    return int(usage.get("prompt_tokens", 0)) + int(usage.get("completion_tokens", 0))


def max_in_window(times: list[float], window: float) -> int:
    """The largest number of ``times`` inside any window of ``window`` seconds (sliding)."""
    ordered = sorted(times)
    best = 0
    start = 0
    for end, t in enumerate(ordered):
        while ordered[start] <= t - window:
            start += 1
        best = max(best, end - start + 1)
    return best
