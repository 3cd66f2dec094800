"""The wait a server asks for, in each of the forms real servers send it, and garbage ignored."""

import email.utils

import pytest

from autonomic.adapters.model.rate_hints import RateHint, duration_seconds, rate_hint

NOW = 1_700_000_000.0


def _date(seconds_from_now: float) -> str:
    return email.utils.formatdate(NOW + seconds_from_now, usegmt=True)


@pytest.mark.parametrize(
    ("headers", "seconds", "header"),
    [
        ({"Retry-After": "7"}, 7.0, "retry-after"),
        ({"retry-after": "1.5"}, 1.5, "retry-after"),
        ({"Retry-After": _date(30)}, 30.0, "retry-after"),
        ({"Retry-After": _date(-30)}, 0.0, "retry-after"),  # passed: go now
        ({"retry-after-ms": "2500"}, 2.5, "retry-after-ms"),
        ({"llm_provider-retry-after": "60"}, 60.0, "llm_provider-retry-after"),
        ({"LLM_Provider-Retry-After-Ms": "250"}, 0.25, "llm_provider-retry-after-ms"),
        ({"x-ratelimit-reset-requests": "6m0s"}, 360.0, "x-ratelimit-reset-requests"),
        ({"x-ratelimit-reset-tokens": "20ms"}, 0.02, "x-ratelimit-reset-tokens"),
        ({"x-ratelimit-reset-tokens": "1h2m3.5s"}, 3723.5, "x-ratelimit-reset-tokens"),
        ({"x-ratelimit-reset-requests": "1s"}, 1.0, "x-ratelimit-reset-requests"),
        (
            {"llm_provider-x-ratelimit-reset-requests": "2m"},
            120.0,
            "llm_provider-x-ratelimit-reset-requests",
        ),
    ],
)
def test_each_form_of_hint_is_read(headers, seconds, header):
    hint = rate_hint(headers, status=429, now=NOW)
    assert hint is not None
    assert hint.seconds == pytest.approx(seconds)
    assert hint.header == header


def test_the_longest_applicable_wait_wins():
    headers = {
        "retry-after": "1",
        "retry-after-ms": "1500",
        "llm_provider-retry-after": "60",
        "x-ratelimit-reset-requests": "6s",
        "x-ratelimit-reset-tokens": "20ms",
    }
    assert rate_hint(headers, status=429, now=NOW) == RateHint(
        60.0, "llm_provider-retry-after", "60"
    )


def test_budget_resets_count_on_a_429_only():
    # OpenAI sends them on every answer: on a 503 they say nothing about when to come back
    headers = {"x-ratelimit-reset-requests": "6m0s", "retry-after": "2"}
    assert rate_hint(headers, status=503, now=NOW) == RateHint(2.0, "retry-after", "2")
    assert rate_hint({"x-ratelimit-reset-tokens": "6m0s"}, status=500, now=NOW) is None


def test_a_budget_with_room_left_is_not_waited_for():
    tokens_ran_out = {
        "x-ratelimit-remaining-requests": "12",
        "x-ratelimit-remaining-tokens": "300",  # fewer than the request needs
        "x-ratelimit-reset-requests": "6m0s",
        "x-ratelimit-reset-tokens": "4s",
    }
    hint = rate_hint(tokens_ran_out, status=429, now=NOW)
    assert hint == RateHint(4.0, "x-ratelimit-reset-tokens", "4s")
    requests_ran_out = tokens_ran_out | {
        "x-ratelimit-remaining-requests": "0",
        "x-ratelimit-reset-requests": "2s",
        "x-ratelimit-reset-tokens": "50s",
    }
    hint = rate_hint(requests_ran_out, status=429, now=NOW)
    assert hint == RateHint(2.0, "x-ratelimit-reset-requests", "2s")


@pytest.mark.parametrize(
    "value",
    [
        "",
        "soon",
        "-5",
        "nan",
        "inf",
        "1e999",
        "0x10",
        "5 seconds",
        "Wed, 99 Foo 2024 25:61:00 GMT",
        "60, 60",
        "1" * 5000,
        "\x00\xff",
    ],
)
def test_garbage_values_are_ignored_not_a_crash(value):
    for header in (
        "retry-after",
        "retry-after-ms",
        "llm_provider-retry-after",
        "x-ratelimit-reset-requests",
        "x-ratelimit-reset-tokens",
    ):
        assert rate_hint({header: value}, status=429, now=NOW) is None, header
    # garbage beside a good hint does not hide it
    hint = rate_hint({"retry-after": value, "retry-after-ms": "300"}, status=429, now=NOW)
    assert hint == RateHint(0.3, "retry-after-ms", "300")


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("0s", 0.0),
        ("0", 0.0),
        ("1.5", 1.5),
        ("300us", 0.0003),
        ("2h", 7200.0),
        ("1m", 60.0),
        ("1h2m3.5s", 3723.5),
        ("1.5m", 90.0),
        (".5s", 0.5),
        ("1x", None),
        ("s", None),
        ("1h-2m", None),
        ("-1s", None),
        ("1h 2m", None),
        ("1s" * 40, None),
    ],
)
def test_go_durations(value, seconds):
    found = duration_seconds(value)
    if seconds is None:
        assert found is None
    else:
        assert found == pytest.approx(seconds)


def test_no_hint_is_none():
    assert rate_hint({"content-type": "application/json"}, status=429, now=NOW) is None
