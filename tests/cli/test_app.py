"""``main()``: whatever goes wrong, the user gets one line and an exit status, never a traceback."""

from __future__ import annotations

import pytest

from autonomic.cli import app as app_module
from autonomic.cli.exit_codes import ExitCode


def _broken() -> None:
    raise TypeError("list indices must be integers, password=hunter2 in the way")


def test_a_bug_of_ours_is_one_line_with_secrets_masked(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(app_module, "app", _broken)
    monkeypatch.delenv("AUTONOMIC_TRACEBACK", raising=False)
    with pytest.raises(SystemExit) as exited:
        app_module.main()
    assert exited.value.code == ExitCode.ERROR
    printed = capsys.readouterr()
    assert printed.err.startswith("error: unexpected TypeError: list indices must be integers")
    assert "hunter2" not in printed.err
    assert "Traceback" not in printed.err
    assert "AUTONOMIC_TRACEBACK=1" in printed.err


def test_the_traceback_is_there_for_the_report(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(app_module, "app", _broken)
    monkeypatch.setenv("AUTONOMIC_TRACEBACK", "1")
    with pytest.raises(TypeError, match="list indices"):
        app_module.main()
