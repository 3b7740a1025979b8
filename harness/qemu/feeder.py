"""Feeding a stream to a real destination, and measuring how much of it it read.

QEMU 0.13 to 1.0 read an incoming stream synchronously: the loading thread blocks in
``read``/``recvfrom`` whenever its 32 KiB buffer is used up and it needs more. A load
that ends early on a stray ``0x00`` type byte reports success and closes the connection
with bytes unread, and no QEMU message says where it stopped. This module finds out
from outside, on the real program:

- :class:`InputProbe` says whether the destination process is *waiting for input*: one
  of its threads sleeps in a read-type system call (``/proc/PID/task/*/syscall`` and
  ``stat``) while nothing we sent is still queued on the socket (``SIOCOUTQ``). QEMU
  refills its buffer only when it has consumed everything in it, so waiting means
  "everything delivered so far was read, and more is wanted".
- :func:`pump` forwards a source's bytes to the destination and holds back the last one:
  once the source is done, a destination that waits for that byte read the whole stream
  but it; one that closes first stopped early (``read_all`` is False).
- :func:`locate_stop` replays a recorded stream to fresh destinations in paced chunks,
  each replay narrowing the range 16-fold (chunks of 16^k bytes down to single bytes),
  to the exact byte after which the destination stopped reading: the offset QEMU's own
  messages never give.

Linux only (``/proc``, ``SIOCOUTQ``); the probe needs to read the destination's
``/proc`` entries (same user, or root).
"""

from __future__ import annotations

import array
import fcntl
import os
import select
import socket
import termios
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

__all__ = ["FeedResult", "InputProbe", "deliver_paced", "locate_stop", "pump"]

# x86_64 system call numbers of the ways QEMU reads a stream: read, pread64, readv,
# recvfrom, recvmsg.
READ_SYSCALLS = frozenset({0, 17, 19, 45, 47})
POLL_S = 0.0002
STABLE_S = 0.001  # a wait must still be the same wait this much later


class InputProbe:
    """Watches one destination process and its end of our connection."""

    def __init__(self, pid: int, conn: socket.socket) -> None:
        self.pid = pid
        self.conn = conn

    def _queued(self) -> int:
        buf = array.array("i", [0])
        fcntl.ioctl(self.conn.fileno(), termios.TIOCOUTQ, buf)
        return buf[0]

    def closed(self) -> bool:
        """The destination closed its end (it finished or failed), or exited."""
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        p = select.poll()
        p.register(self.conn, select.POLLIN | select.POLLHUP | select.POLLERR)
        return bool(p.poll(0))

    def _waiting_threads(self) -> dict[str, str]:
        out = {}
        try:
            tids = os.listdir(f"/proc/{self.pid}/task")
        except OSError:
            return {}
        for tid in tids:
            base = f"/proc/{self.pid}/task/{tid}"
            try:
                with open(f"{base}/syscall") as f:
                    call = f.read().split()
                with open(f"{base}/stat") as f:
                    stat = f.read()
                with open(f"{base}/status") as f:
                    switches = next((line for line in f if line.startswith("voluntary_ctxt")), "")
            except OSError:
                continue
            state = stat[stat.rfind(")") + 2:].split(" ", 1)[0]
            if call and call[0].isdigit() and int(call[0]) in READ_SYSCALLS and state == "S":
                out[tid] = switches
        return out

    def waiting(self) -> bool:
        """Everything sent so far was read and the destination sleeps wanting more."""
        if self._queued():
            return False
        first = self._waiting_threads()
        if not first:
            return False
        time.sleep(STABLE_S)
        if self._queued():
            return False
        second = self._waiting_threads()
        return any(second.get(tid) == sw for tid, sw in first.items())

    def settle(self, timeout: float) -> str:
        """Wait until the destination waits for input (``"waiting"``), closed
        (``"closed"``) or neither within ``timeout`` (``"busy"``)."""
        deadline = time.monotonic() + timeout
        while True:
            if self.closed():
                return "closed"
            if self.waiting():
                return "waiting"
            if time.monotonic() > deadline:
                return "busy"
            time.sleep(POLL_S)


@dataclass
class FeedResult:
    """What one delivery showed. ``read_all``: True when the destination read up to the
    last byte and asked for it; False when it closed before; None when it could not be
    told (the probe never saw it wait). ``stopped_after`` brackets the offset of the last
    byte it read when it stopped early: ``(lo, hi)``, exact when ``lo == hi``."""

    total: int
    delivered: int
    read_all: bool | None
    stopped_after: tuple[int, int] | None = None
    note: str = ""

    @property
    def bytes_unread(self) -> int | None:
        """Bytes of the stream the destination never read (at least), if it stopped early."""
        if self.read_all or self.stopped_after is None:
            return 0 if self.read_all else None
        return self.total - 1 - self.stopped_after[1]


def _send(conn: socket.socket, data: bytes) -> bool:
    try:
        conn.sendall(data)
        return True
    except OSError:
        return False


def pump(chunks: Iterable[bytes], conn: socket.socket, probe: InputProbe, *,
         final_timeout: float = 30.0, on_chunk: Callable[[bytes], None] | None = None
         ) -> FeedResult:
    """Forward ``chunks`` (a source's bytes as they come) to ``conn``, holding back the
    last byte until the destination asks for it. Keeps consuming ``chunks`` after the
    destination closed, so that a source still sending finishes its migration."""
    total = delivered = 0
    held = b""
    alive = True
    for chunk in chunks:
        if not chunk:
            continue
        if on_chunk is not None:
            on_chunk(chunk)
        total += len(chunk)
        data = held + chunk
        held, data = data[-1:], data[:-1]
        if alive and data:
            alive = _send(conn, data)
            if alive:
                delivered += len(data)
    if total == 0:
        return FeedResult(0, 0, None, note="the source sent nothing")
    if not alive:
        return FeedResult(total, delivered, False, (0, max(0, delivered - 1)),
                          "the destination closed its end while the stream was sent")
    state = probe.settle(final_timeout)
    if state == "closed":
        return FeedResult(total, delivered, False, (0, max(0, delivered - 1)),
                          "the destination closed its end before asking for the last byte")
    ok = _send(conn, held)
    if ok:
        delivered += 1
        try:
            conn.shutdown(socket.SHUT_WR)
        except OSError:
            pass
    if state == "busy":
        return FeedResult(total, delivered, None,
                          note=f"the destination neither waited for input nor closed within "
                               f"{final_timeout:g} s of the end of the stream")
    return FeedResult(total, delivered, True)


def deliver_paced(data: bytes, conn: socket.socket, probe: InputProbe, *, start: int,
                  end: int, chunk: int, timeout: float = 30.0) -> tuple[int, int] | None:
    """Send ``data[:start]`` at once, then ``data[start:end]`` in ``chunk``-byte steps,
    each only once the destination waits for input. Returns ``(lo, hi)``: the destination
    stopped after reading a byte in ``[lo, hi]`` (the last piece sent); ``None`` if it
    read all of ``data[:end]`` and still waited for more."""
    sent_from, pos = 0, start
    if start and not _send(conn, data[:start]):
        return (0, start - 1)
    while True:
        state = probe.settle(timeout)
        if state == "closed":
            return (sent_from, max(sent_from, pos - 1))
        if state == "busy":
            raise TimeoutError(f"the destination neither read nor closed at offset {pos}")
        if pos >= end:
            return None
        n = min(chunk, end - pos)
        if not _send(conn, data[pos:pos + n]):
            return (sent_from, max(sent_from, pos - 1))
        sent_from, pos = pos, pos + n


def locate_stop(data: bytes, start_destination: Callable[[], tuple[int, socket.socket, Callable[[], None]]],
                bounds: tuple[int, int], *, fanout: int = 16,
                timeout: float = 30.0) -> tuple[int, int]:
    """Narrow ``bounds`` (the destination stopped after reading a byte in ``[lo, hi]``)
    by replaying ``data`` to fresh destinations: ``start_destination()`` returns
    ``(pid, connected socket, cleanup)``. Each replay sends the bytes before ``lo`` at
    once and the range in ``fanout`` steps."""
    lo, hi = bounds
    while lo < hi:
        step = 1
        while step * fanout < hi - lo + 1:
            step *= fanout
        pid, conn, cleanup = start_destination()
        try:
            probe = InputProbe(pid, conn)
            found = deliver_paced(data, conn, probe, start=lo, end=hi + 1, chunk=step,
                                  timeout=timeout)
        finally:
            cleanup()
        narrowed = None if found is None else (max(lo, found[0]), min(hi, found[1]))
        if narrowed is None or narrowed[0] > narrowed[1] or narrowed == (lo, hi):
            break  # this replay did not stop where the first did: keep what is known
        lo, hi = narrowed
    return (lo, hi)
