"""The polling helper the trace-backend tests wait with: a 404 is "not yet", not a failure.

Phoenix answers 404 for a project until it has ingested the project's first span, after it has
answered the export; a test whose first look came first failed at once (seen in CI) instead of
waiting like the tests that caught the error themselves.
"""

from __future__ import annotations

import urllib.error
from email.message import Message

import pytest

from conftest import eventually


def _http_error(code: int) -> urllib.error.HTTPError:
    return urllib.error.HTTPError(
        "http://127.0.0.1/v1/projects/p/spans", code, "x", Message(), None
    )


def test_a_project_not_found_yet_is_waited_for() -> None:
    answers = iter([_http_error(404), _http_error(404), ["span"]])

    def check() -> list[str]:
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    assert eventually(check, "spans", deadline=30) == ["span"]


def test_a_server_error_is_not_waited_for() -> None:
    def check() -> list[str]:
        raise _http_error(500)

    with pytest.raises(urllib.error.HTTPError):
        eventually(check, "spans", deadline=30)
