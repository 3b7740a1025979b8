"""Shared helpers of the device tests: one device's payload, its framed stream, a load, the
bytes of an embedded PCIDevice; the scenarios a release dies saving."""

from __future__ import annotations

import struct
from typing import Any

from harness.emulator.releases import Release
from harness.emulator.savevm import HeaderPolicy, Saver, load_stream, wire_rules_for
from harness.emulator.stream import StreamReader, StreamWriter

# (release, scenario) where the release's save dies on the scenario's state, as the real
# build does: RHEL 6.1's gesn_state field list has no end marker, and a pending media event
# kills its save (tests/test_rhel6.py). Tests that save every scenario leave these out.
SAVE_DIES = frozenset({("rhel6.1", "atapi-media-event"), ("rhel6.1", "atapi-two-subsections")})

# Every release with the stream formats its machine types write.
RUNS = [("0.13", 3), ("0.14", 3), ("0.15", 3), ("new", 3), ("new", 4), ("1.0", 3)]
RUN_IDS = [f"{r}-f{f}" for r, f in RUNS]


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


def round_trip(cls: type, release: Release, fmt: int, seed: int | None) -> None:
    """A ``cls`` device (randomised by ``seed``) saved and loaded into a fresh one: every
    section's state the same."""
    import random

    from harness.emulator.vmstate import dump_state

    src = cls(release)
    if seed is not None:
        src.randomize(random.Random(seed))
    dst = load(cls, release, fmt, stream(src, fmt))
    for s_sec, d_sec in zip(src.sections(), dst.sections(), strict=True):
        assert dump_state(d_sec.desc, d_sec.obj) == dump_state(s_sec.desc, s_sec.obj)


def pci_device_bytes(dev: Any, sentinel: bool = False) -> bytes:
    """An embedded "PCIDevice" as packed from its field list (version, config, INTx
    levels), with the format-4 0x06 when ``sentinel``."""
    out = struct.pack(">i", 2) + dev.config + struct.pack(">4I", *dev.irq_state)
    return out + (b"\x06" if sentinel else b"")
