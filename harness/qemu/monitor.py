"""The human monitor of QEMU 0.13 to 1.0, as a small asyncio client.

Scenarios are built the way a user built them in 2011: ``change floppy0 FILE``,
``eject``, ``pci_add``, ``device_add``, ``info status``. QMP of that era lacks most of
these (0.13 has no ``human-monitor-command``), so the driver also opens the human
monitor (``-monitor unix:SOCK,server,nowait``). It echoes what it is sent with terminal
editing sequences and ends every answer with the ``(qemu)`` prompt; :meth:`command`
returns the answer alone, verbatim otherwise (it goes into a cell's detail).
"""

from __future__ import annotations

import asyncio
import contextlib
import re

__all__ = ["HumanMonitor", "MonitorError"]

PROMPT = b"(qemu) "
_ESCAPES = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


class MonitorError(Exception):
    """The monitor closed, or did not answer in time."""


class HumanMonitor:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 banner: str) -> None:
        self.reader = reader
        self.writer = writer
        self.banner = banner
        self.transcript: list[tuple[str, str]] = []  # (command, answer), for the detail

    @classmethod
    async def connect(cls, path: str, timeout: float = 10.0) -> HumanMonitor:
        """Connect to a monitor socket (retrying until it listens) and read its banner."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            try:
                reader, writer = await asyncio.open_unix_connection(path)
                break
            except OSError as e:
                if asyncio.get_running_loop().time() > deadline:
                    raise MonitorError(f"monitor {path}: {e}") from e
                await asyncio.sleep(0.02)
        banner = await cls._until_prompt(reader, timeout)
        return cls(reader, writer, _clean(banner))

    @staticmethod
    async def _until_prompt(reader: asyncio.StreamReader, timeout: float) -> str:
        try:
            data = await asyncio.wait_for(reader.readuntil(PROMPT), timeout)
        except asyncio.IncompleteReadError as e:
            raise MonitorError(f"the monitor closed: {e.partial.decode('latin-1')!r}") from e
        except TimeoutError as e:
            raise MonitorError(f"no monitor prompt within {timeout:g} s") from e
        return data[: -len(PROMPT)].decode("latin-1")

    async def command(self, line: str, timeout: float = 30.0) -> str:
        """Run one command; its answer without the echo and the prompt."""
        self.writer.write(line.encode() + b"\n")
        await self.writer.drain()
        raw = await self._until_prompt(self.reader, timeout)
        # The echo (with its editing sequences) ends at the first line break.
        _, _, answer = raw.partition("\n")
        answer = _clean(answer)
        self.transcript.append((line, answer))
        return answer

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.writer.wait_closed(), 1.0)


def _clean(text: str) -> str:
    return _ESCAPES.sub("", text).replace("\r", "").strip()
