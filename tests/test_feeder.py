"""Measuring how much of a stream a destination read (harness.qemu.feeder).

The destination here is a stand-in that reads as QEMU 0.13-1.0 does: blocking reads into
a 32 KiB buffer, refilled only once used up, and it stops (closing its end) right after
the byte that ends its load. The real builds are exercised in test_historic_driver.py.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from harness.qemu.feeder import InputProbe, deliver_paced, locate_stop, pump

READER = textwrap.dedent("""
    import os, socket, sys, time
    path, stop_at, exit_after = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "exit"
    ls = socket.socket(socket.AF_UNIX); ls.bind(path); ls.listen(1)
    conn, _ = ls.accept()
    buf, pos, offset = b"", 0, 0
    while True:
        if pos == len(buf):
            buf, pos = conn.recv(32768), 0   # refill only when the buffer is used up
            if not buf:
                break                         # the end of the stream
        byte = buf[pos]; pos += 1
        if offset == stop_at:
            break                             # the load ends after this byte
        offset += 1
        if offset % 4096 == 0:
            time.sleep(0.0005)                # some work per page, as a loader does
    conn.close()
    if exit_after:
        sys.exit(0)
    time.sleep(60)                            # a destination that loaded keeps running
""")


def start_reader(tmp_path: Path, stop_at: int, *, exit_after: bool = False
                 ) -> tuple[int, socket.socket, Callable[[], None]]:
    path = tmp_path / f"r{time.monotonic_ns()}.sock"
    proc = subprocess.Popen([sys.executable, "-c", READER, str(path), str(stop_at),
                             "exit" if exit_after else "stay"])
    for _ in range(500):
        try:
            s = socket.socket(socket.AF_UNIX)
            s.connect(str(path))
            break
        except OSError:
            s.close()
            time.sleep(0.01)
    else:
        proc.kill()
        raise RuntimeError("the stand-in destination did not listen")

    def cleanup() -> None:
        s.close()
        proc.kill()
        proc.wait()
    return proc.pid, s, cleanup


def chunks(data: bytes, size: int = 50_000) -> Iterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i:i + size]


DATA = bytes(range(256)) * 1200  # 307,200 bytes


def test_a_destination_that_reads_everything_asks_for_the_last_byte(tmp_path: Path) -> None:
    pid, s, cleanup = start_reader(tmp_path, stop_at=len(DATA) - 1)
    try:
        result = pump(chunks(DATA), s, InputProbe(pid, s), final_timeout=10)
    finally:
        cleanup()
    assert result.read_all is True
    assert (result.total, result.delivered, result.bytes_unread) == (len(DATA), len(DATA), 0)


@pytest.mark.parametrize("stop_at", [0, 4095, 100_000, len(DATA) - 2])
def test_an_early_stop_is_seen_and_located_to_the_byte(tmp_path: Path, stop_at: int) -> None:
    pid, s, cleanup = start_reader(tmp_path, stop_at)
    try:
        result = pump(chunks(DATA), s, InputProbe(pid, s), final_timeout=10)
    finally:
        cleanup()
    assert result.read_all is False
    assert result.stopped_after is not None
    lo, hi = result.stopped_after
    assert lo <= stop_at <= hi
    located = locate_stop(DATA, lambda: start_reader(tmp_path, stop_at), result.stopped_after,
                          timeout=10)
    assert located == (stop_at, stop_at)


def test_a_destination_that_exits_counts_as_closed(tmp_path: Path) -> None:
    pid, s, cleanup = start_reader(tmp_path, 5000, exit_after=True)
    try:
        result = pump(chunks(DATA), s, InputProbe(pid, s), final_timeout=10)
    finally:
        cleanup()
    assert result.read_all is False


def test_paced_delivery_reports_none_when_everything_was_read(tmp_path: Path) -> None:
    pid, s, cleanup = start_reader(tmp_path, len(DATA) - 1)
    try:
        found = deliver_paced(DATA, s, InputProbe(pid, s), start=1000, end=9000, chunk=1000,
                              timeout=10)
    finally:
        cleanup()
    assert found is None


def test_a_probe_waits_only_once_everything_sent_was_read(tmp_path: Path) -> None:
    """Data still queued on the socket means the destination has not read it yet; once
    it has, it sleeps in a read and the probe says so."""
    pid, s, cleanup = start_reader(tmp_path, len(DATA) - 1)
    try:
        probe = InputProbe(pid, s)
        assert probe.settle(10) == "waiting"  # nothing sent yet: it waits for the header
        s.sendall(DATA[:200_000])  # ~25 ms of the stand-in's work per 100 KB
        assert not probe.waiting()
        assert probe.settle(10) == "waiting"
        assert probe._queued() == 0
    finally:
        cleanup()
