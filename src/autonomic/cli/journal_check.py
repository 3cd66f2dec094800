"""The journals' half of ``autonomic audit verify``, in a process of its own for a big store.

``verify`` reads the audit log (one chain, record after record) and every run's journal (each
its own chain): two walks that need each other only at the end, when each run's journal is held
against its anchors. On a store of a million entries each walk is seconds of hashing in Python,
and one process runs them one after the other on one core. So for a store whose log is long
(``SPLIT_FROM`` records), a child process (``python -m autonomic.cli.journal_check``) opens the
same database read-only and sums up every run's chain (``audit.verify.journal_chains``) while
this one reads the log; ``verify_store`` then compares the summaries with the anchors, and reads
again and judges here only a run that does not match. The report is the same either way
(``tests/audit/test_split_verify.py``).

The child is a plain subprocess, not ``multiprocessing``: the database URL (which may hold a
password) goes to it on stdin, never on its command line; its stderr is not the user's (a child
that fails is replaced by the same work done here, never by a traceback); and its answer is
``marshal`` on stdout.
"""

from __future__ import annotations

import asyncio
import marshal
import sys
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from autonomic.audit.verify import Chains

__all__ = ["SPLIT_FROM", "chains_elsewhere"]

SPLIT_FROM: Final = 50_000
"""From how many audit records the journals are checked in a process of their own (below it,
starting a Python process costs more than it saves)."""


async def chains_elsewhere(
    store: Any, url: str, *, split_from: int = SPLIT_FROM
) -> Coroutine[Any, Any, Chains] | None:
    """Start summing up ``store``'s journals in a child process when its log is long, and give
    what awaits the result; ``None`` when the log is short (``verify`` then walks the journals
    itself). If the child could not do it, the awaiting does it here: what ``verify`` finds
    never depends on the child."""
    if "\n" in url or not await store.scan_audit_log(after=split_from, limit=1):
        return None
    try:
        child = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "autonomic.cli.journal_check",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
        assert child.stdin is not None
        # one line, written now: the pipe takes a URL whole at once, and the child reads up to
        # its newline - not up to the end of its input, which the close below only delivers
        # when this loop next runs (a SQLite read never yields to it)
        child.stdin.write(url.encode() + b"\n")
        child.stdin.close()
    except OSError:
        child = None
    return _result(child, store)


async def _result(child: asyncio.subprocess.Process | None, store: Any) -> Chains:
    from autonomic.audit.verify import journal_chains

    if child is not None:
        try:
            assert child.stdout is not None
            answer = await child.stdout.read()
            if await child.wait() == 0:
                chains: Chains = marshal.loads(answer)  # noqa: S302 - our own child's answer
                return chains
        except (OSError, ValueError, EOFError, TypeError):
            pass
        finally:
            if child.returncode is None:
                child.kill()
                await child.wait()
    return await journal_chains(store)  # the child could not: the same work, here


async def _chains_of(url: str) -> Chains:
    from autonomic.audit.verify import journal_chains
    from autonomic.cli.common import open_store

    store = await open_store(url, "read")
    try:
        return await journal_chains(store)
    finally:
        await store.close()


def main() -> None:
    """The child: the URL on stdin's first line, every journal's chain summed up, ``marshal``
    on stdout."""
    url = sys.stdin.readline().rstrip("\n")
    sys.stdout.buffer.write(marshal.dumps(asyncio.run(_chains_of(url))))


if __name__ == "__main__":
    main()
