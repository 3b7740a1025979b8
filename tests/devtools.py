"""Shared helpers of the device tests: one device's payload, its framed stream, a load."""

from __future__ import annotations

from typing import Any

from harness.emulator.releases import Release
from harness.emulator.savevm import HeaderPolicy, Saver, load_stream, wire_rules_for
from harness.emulator.stream import StreamReader, StreamWriter


def payload(dev: Any, fmt: int) -> bytes:
    """The device's section payloads, back to back, without section headers."""
    w = StreamWriter()
    for section in dev.sections():
        section.save(w, wire_rules_for(fmt, dev.release.peek))
    return w.getvalue()


def stream(dev: Any, fmt: int) -> bytes:
    """A whole stream (header, FULL sections, EOF) holding only this device."""
    w = StreamWriter()
    saver = Saver(w, dev.sections(), fmt, dev.release.peek)
    saver.begin()
    saver.complete()
    return w.getvalue()


def load(cls: type, release: Release, fmt: int, data: bytes, board: Any = None) -> Any:
    """A fresh ``cls`` device of ``release`` (on ``board``: the destination is started with
    the source's command line) loaded from a whole stream."""
    dev = cls(release, board)
    header = HeaderPolicy(release.accepted_versions, fmt, release.format_per_machine)
    load_stream(StreamReader(data), dev.sections(), header, release.peek)
    return dev
