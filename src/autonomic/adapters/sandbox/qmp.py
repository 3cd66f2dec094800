"""A minimal QMP (QEMU Machine Protocol) client: enough to snapshot a VM and see it resume.

QEMU is given a socket we already listen on (``fd=``), so there is no race between starting QEMU
and connecting to it, and no polling for a socket file to appear.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from pathlib import Path
from typing import Any

from autonomic.ports.sandbox import SandboxUnavailable


def listening_socket(path: Path) -> socket.socket:
    """A Unix socket listening at ``path``, whose fd QEMU inherits (``-chardev socket,fd=N``)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    sock.listen(1)
    sock.set_inheritable(True)
    return sock


class Qmp:
    """One QMP session; ``events`` collects asynchronous events as they arrive."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self.events: list[dict[str, Any]] = []

    @classmethod
    async def connect(cls, path: Path) -> Qmp:
        reader, writer = await asyncio.open_unix_connection(str(path))
        qmp = cls(reader, writer)
        await qmp._read()  # the greeting
        await qmp.execute("qmp_capabilities")
        return qmp

    async def _read(self) -> dict[str, Any]:
        line = await self._reader.readline()
        if not line:
            raise SandboxUnavailable("QEMU closed its QMP socket", hint="see QEMU's stderr")
        message: dict[str, Any] = json.loads(line)
        return message

    async def execute(self, command: str, **arguments: Any) -> Any:
        request: dict[str, Any] = {"execute": command}
        if arguments:
            request["arguments"] = arguments
        self._writer.write(json.dumps(request).encode() + b"\n")
        await self._writer.drain()
        while True:
            message = await self._read()
            if "event" in message:
                self.events.append(message)
                continue
            if "error" in message:
                raise SandboxUnavailable(
                    f"QEMU refused {command}: {message['error'].get('desc')}",
                    hint="check the QEMU version (7.2+ is needed)",
                )
            return message.get("return")

    async def wait_event(self, name: str, **data: Any) -> dict[str, Any]:
        """The first event called ``name`` whose data has ``data`` (received already, or next)."""

        def matches(event: dict[str, Any]) -> bool:
            got = event.get("data", {})
            return event["event"] == name and all(got.get(k) == v for k, v in data.items())

        for event in self.events:
            if matches(event):
                return event
        while True:
            message = await self._read()
            if "event" in message:
                self.events.append(message)
                if matches(message):
                    return message
                if message["event"] == "MIGRATION" and message["data"]["status"] == "failed":
                    raise SandboxUnavailable("QEMU could not load the VM snapshot")

    async def close(self) -> None:
        self._writer.close()
        with contextlib.suppress(ConnectionError):
            await self._writer.wait_closed()
