"""How consumers of the embedded bus learn that something was published, without busy polling.

* In one process (any database): a publish sets the wake-up of every consumer of the same
  database in this process at once (``LocalWake``).
* Across processes on PostgreSQL: ``LISTEN``/``NOTIFY``. A publish's transaction sends
  ``pg_notify`` (delivered when it commits, never for a rolled-back one); each bus keeps one
  listening connection whose notifications wake its consumers (``PostgresListener``).
* Across processes on SQLite there is no notification: a consumer also re-reads every
  ``poll_interval`` (short: an indexed read of a local file).

A wake-up is only a hint to look now; the database is always what a consumer reads, so a lost or
spurious wake-up costs latency, never an event.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from typing import Any

CHANNEL = "autonomic_bus"


class Wakeable:
    """A consumer that can be woken: an ``asyncio.Event`` it waits on between reads."""

    def __init__(self) -> None:
        self.woken = asyncio.Event()

    def wake(self) -> None:
        self.woken.set()


class LocalWake:
    """The consumers of each database in this process, woken by its publishes."""

    _members: dict[str, weakref.WeakSet[Wakeable]] = {}

    @classmethod
    def join(cls, where: str, member: Wakeable) -> None:
        cls._members.setdefault(where, weakref.WeakSet()).add(member)

    @classmethod
    def leave(cls, where: str, member: Wakeable) -> None:
        cls._members.get(where, weakref.WeakSet()).discard(member)

    @classmethod
    def wake(cls, where: str) -> None:
        for member in list(cls._members.get(where, ())):
            with contextlib.suppress(RuntimeError):  # a member of a loop that has ended
                member.wake()


class PostgresListener:
    """One ``LISTEN`` connection per bus; every notification wakes the bus's local consumers.

    Opened lazily by the first consumer; if it cannot connect (or drops), consumers keep polling
    at their interval, so a listener failure slows them down but loses nothing."""

    def __init__(self, url: str, where: str) -> None:
        self._url = url
        self._where = where
        self._task: asyncio.Task[None] | None = None
        self._conn: Any = None

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._listen())

    async def _listen(self) -> None:
        import psycopg

        try:
            self._conn = await psycopg.AsyncConnection.connect(self._url, autocommit=True)
            await self._conn.execute(f"LISTEN {CHANNEL}")
            async for _ in self._conn.notifies():
                LocalWake.wake(self._where)
        except (psycopg.Error, OSError):
            return  # consumers fall back to polling at their interval

    async def aclose(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()
