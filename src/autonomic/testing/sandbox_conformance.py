"""The conformance suite of the ``Sandbox`` port: what every backend must do, checked the same way.

The namespace backend passes it, cold and from a warm pool; the OCI and microVM backends run it
too. Each check receives a sandbox and raises ``AssertionError`` with what went wrong. With
pytest, one test per check::

    from autonomic.testing.sandbox_conformance import CHECKS, run_check

    @pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
    def test_sandbox_conformance(check):
        asyncio.run(run_check(check, lambda: MySandbox()))

Escapes and abuse are the probes' business (``autonomic.testing.probe_host.run_probes``); this
suite pins the request/result contract: output, exit codes, end reasons, caps, bad input.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Awaitable, Callable

from autonomic.ports.sandbox import Ended, Execution, Limits, Result, Sandbox

Check = Callable[[Sandbox], Awaitable[None]]
QUICK = Limits(wall_seconds=30.0, cpu_seconds=4.0)
"""For code that should finish at once. The wall limit is generous because a backend's start
can fall inside it (a microVM's first run through cold emulated code takes seconds on a busy
host); only ``the_wall_clock_is_enforced`` is about the wall limit, and it sets its own."""


async def _run(sandbox: Sandbox, code: str, **kw: object) -> Result:
    limits = kw.pop("limits", QUICK)
    return await sandbox.execute(Execution(code=code, limits=limits, **kw))  # type: ignore[arg-type]


async def prints_and_exits_zero(sandbox: Sandbox) -> None:
    result = await _run(sandbox, "print(sum(range(1000)))")
    assert result.ok, result
    assert result.stdout == "499500\n"
    assert result.stderr == ""
    # ``name`` or ``name:variant`` (oci:runsc, microvm:tcg): the variant says what really ran.
    assert result.backend.partition(":")[0] == sandbox.name, result.backend
    assert not result.stdout_truncated


async def reports_the_exit_code(sandbox: Sandbox) -> None:
    result = await _run(sandbox, "import sys\nprint('partial')\nsys.exit(7)")
    assert result.ended is Ended.EXIT
    assert result.exit_code == 7
    assert result.stdout == "partial\n"


async def an_exception_is_an_exit_with_a_traceback(sandbox: Sandbox) -> None:
    result = await _run(sandbox, "x = 1\nraise ValueError('boom')\n")
    assert result.ended is Ended.EXIT
    assert result.exit_code == 1
    assert "ValueError: boom" in result.stderr
    assert "line 2" in result.stderr


async def a_syntax_error_is_a_clean_result(sandbox: Sandbox) -> None:
    result = await _run(sandbox, "def (:\n")
    assert result.ended is Ended.EXIT
    assert result.exit_code == 1
    assert "SyntaxError" in result.stderr


async def binary_junk_is_a_clean_result(sandbox: Sandbox) -> None:
    result = await _run(sandbox, bytes(range(256)).decode("latin-1") * 2)
    assert result.ended is Ended.EXIT
    assert result.exit_code not in (0, None)


async def non_utf8_output_is_replaced(sandbox: Sandbox) -> None:
    result = await _run(sandbox, "import sys; sys.stdout.buffer.write(b'a\\xffb')")
    assert result.ok
    assert result.stdout == "a\ufffdb"


async def files_and_stdin_arrive(sandbox: Sandbox) -> None:
    code = "import sys; print(open('in/data.txt').read(), sys.stdin.read())"
    result = await _run(sandbox, code, files={"in/data.txt": b"file"}, stdin=b"piped")
    assert result.stdout == "file piped\n", result


async def each_execution_starts_empty(sandbox: Sandbox) -> None:
    code = "import os\nprint(os.path.exists('left-behind'))\nopen('left-behind', 'w').write('x')"
    first = await _run(sandbox, code)
    second = await _run(sandbox, code)
    assert first.stdout == second.stdout == "False\n", (first, second)


async def the_environment_holds_no_host_secret(sandbox: Sandbox) -> None:
    marker = secrets.token_hex(8)  # a fresh value, so it can only come from this environment
    os.environ["AUTONOMIC_CONFORMANCE_MARKER"] = marker
    try:
        result = await _run(sandbox, "import os; print(dict(os.environ))")
    finally:
        del os.environ["AUTONOMIC_CONFORMANCE_MARKER"]
    assert result.ok, result
    assert marker not in result.stdout


async def output_is_capped_and_flagged(sandbox: Sandbox) -> None:
    limits = Limits(wall_seconds=60.0, output_bytes=50_000)
    result = await _run(sandbox, "while True: print('x' * 1000)", limits=limits)
    assert result.ended is Ended.OUTPUT_LIMIT, result.ended
    assert result.stdout_truncated
    assert len(result.stdout) == 50_000


async def the_wall_clock_is_enforced(sandbox: Sandbox) -> None:
    # Measured against an empty execution now, on this machine: a backend's own start (a
    # microVM's restore under emulation on a busy host) can take longer than the limit.
    empty = await _run(sandbox, "pass")
    limits = Limits(wall_seconds=1.0)
    result = await _run(sandbox, "import time; time.sleep(60)", limits=limits)
    assert result.ended is Ended.TIMEOUT, result.ended
    assert result.exit_code is None
    assert result.duration_s < 3 * (empty.duration_s + limits.wall_seconds), (result, empty)


async def memory_is_enforced(sandbox: Sandbox) -> None:
    limits = Limits(memory_mb=64, wall_seconds=60.0)
    code = "hog = []\nwhile True:\n    hog.append(bytearray(4 << 20))"
    result = await _run(sandbox, code, limits=limits)
    assert result.ended is Ended.MEMORY, (result.ended, result.stderr[-300:])


async def cpu_time_is_enforced(sandbox: Sandbox) -> None:
    limits = Limits(cpu_seconds=1.0, wall_seconds=120.0)
    result = await _run(sandbox, "while True: pass", limits=limits)
    assert result.ended is Ended.CPU, result.ended


async def oversized_files_are_refused(sandbox: Sandbox) -> None:
    limits = Limits(workspace_mb=1)
    files = {"big": b"\0" * (2 * 1024 * 1024)}
    result = await _run(sandbox, "print(1)", files=files, limits=limits)
    assert result.ended is Ended.REFUSED
    assert result.detail


async def escaping_file_paths_are_refused(sandbox: Sandbox) -> None:
    for path in ("../up", "/abs", "a/../../b"):
        result = await _run(sandbox, "print(1)", files={path: b"x"})
        assert result.ended is Ended.REFUSED, path


CHECKS: tuple[Check, ...] = (
    prints_and_exits_zero,
    reports_the_exit_code,
    an_exception_is_an_exit_with_a_traceback,
    a_syntax_error_is_a_clean_result,
    binary_junk_is_a_clean_result,
    non_utf8_output_is_replaced,
    files_and_stdin_arrive,
    each_execution_starts_empty,
    the_environment_holds_no_host_secret,
    output_is_capped_and_flagged,
    the_wall_clock_is_enforced,
    memory_is_enforced,
    cpu_time_is_enforced,
    oversized_files_are_refused,
    escaping_file_paths_are_refused,
)


async def run_check(check: Check, make_sandbox: Callable[[], Sandbox]) -> None:
    """Run one check on a new sandbox, closing it afterwards."""
    sandbox = make_sandbox()
    try:
        await check(sandbox)
    finally:
        await sandbox.close()
