"""Streams saved to and loaded from files, pipes and sockets in bulk: the same bytes and
the same errors as in memory, and as before bulk I/O (recorded at c1fe33f).

A stream's bytes depend only on the machine's state. Guest RAM filled by a scenario's
workload (``live-ram``) changed with its generator (bench/README.md); every other byte of
every stream, and every refusal of a load, is as it was. The machine itself changed once
since, on purpose: issue 14 made it the real one (every section and RAM block of a real
``-M pc``, the real loader's RAM checks), and the digests were recorded again from bytes
in memory; files, pipes and sockets are held to them.
"""

from __future__ import annotations

import hashlib
import os
import socket
import struct
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from harness import cli
from harness.emulator.errors import LoadCrash, LoadError
from harness.emulator.machine import Machine
from harness.scenarios import apply_scenario, get_scenario

from .sources import SocketSink, file_source, pipe_source, socket_source

# -- streams ----------------------------------------------------------------------------


def media(scenario: str) -> frozenset[str]:
    """The drives a scenario's machine is started with (and its destination)."""
    return get_scenario(scenario).media


def saved(release: str, machine: str, scenario: str, seed: int, ram: str) -> tuple[Machine, bytes]:
    m = Machine(release, machine, ram, media=media(scenario))
    s = apply_scenario(m, scenario, seed)
    return m, m.save(passes=s.live_passes, workload=s.workload)  # type: ignore[return-value]


def ram_records(stream: bytes, start: int, end: int) -> Iterator[tuple[int, int]]:
    """``(offset, flags)`` of every record of a v4 ``ram`` payload ``stream[start:end]``."""
    o = start
    while o < end:
        word = struct.unpack_from(">Q", stream, o)[0]
        flags = word & 0xFFF
        yield o, flags
        o += 8
        if flags & 0x04:  # MEM_SIZE: the block list
            left = word & ~0xFFF
            while left:
                o += 1 + stream[o]
                left -= struct.unpack_from(">Q", stream, o)[0]
                o += 8
        elif flags & (0x02 | 0x08):
            if not flags & 0x20:
                o += 1 + stream[o]
            o += 1 if flags & 0x02 else 4096


def sections(stream: bytes, release: str, machine: str, ram: str,
             drives: frozenset[str] = frozenset()) -> list[Any]:
    _, report = Machine.load(release, machine, stream, ram_size=ram, media=drives)
    return report.sections


def ram_header_size(kind: str) -> int:
    return 1 + 4 + 1 + len(b"ram") + 4 + 4 if kind == "START" else 1 + 4


def outside_ram(stream: bytes, release: str, machine: str, ram: str,
                drives: frozenset[str] = frozenset()) -> bytes:
    """The stream without the payloads of its ``ram`` sections: header, section headers,
    device sections, EOF."""
    secs = sections(stream, release, machine, ram, drives)
    out = [stream[: secs[0].offset]]
    for s in secs:
        stop = s.offset + ram_header_size(s.kind) if s.idstr == "ram" else s.end
        out.append(stream[s.offset : stop])
    out.append(stream[secs[-1].end :])
    return b"".join(out)


def interesting_offsets(stream: bytes, release: str, machine: str, ram: str,
                        drives: frozenset[str] = frozenset()) -> list[int]:
    """Where a cut or a flipped byte meets a decision of the loader: the file header, every
    byte of the first RAM and first device section header, the edges of every other
    section header and every section's end, and the edges of RAM records (the be64, its
    flags byte, the name or fill byte, the middle and end of a page) for the first records
    of each section, every change of record kind and the last records; every byte of the
    first device section and every 31st byte of the others (at most 64 in one section:
    e1000's 67 KB)."""
    secs = sections(stream, release, machine, ram, drives)
    found = set(range(0, 24))
    firsts = {secs[0].offset, next(s.offset for s in secs if s.idstr != "ram")}
    for s in secs:
        if s.offset in firsts:
            found.update(range(s.offset - 1, s.offset + 40))
        else:
            found.update((s.offset - 1, s.offset, s.offset + 1, s.offset + 5, s.offset + 6))
        found.update((s.end - 1, s.end, s.end + 1))
        if s.idstr != "ram":
            continue
        records = list(ram_records(stream, s.offset + ram_header_size(s.kind), s.end))
        for i, (o, flags) in enumerate(records):
            changes = i and (flags != records[i - 1][1] or (flags & 0x02 and stream[o + 8]
                                                              != stream[records[i - 1][0] + 8]))
            if i < 8 or i >= len(records) - 3 or changes:
                found.update((o - 1, o, o + 1, o + 7, o + 8, o + 9))
                if flags & 0x08:
                    found.update((o + 9 + 2048, o + 9 + 4095))
    devices = [s for s in secs if s.idstr != "ram"]
    for i, s in enumerate(devices):
        found.update(range(s.offset, s.end, 1 if i == 0 else max(31, (s.end - s.offset) // 64)))
    found.add(len(stream) - 1)
    return sorted(o for o in found if 0 <= o < len(stream))


# -- loading from every kind of source -------------------------------------------------


def outcome(release: str, machine: str, source: Any, ram: str,
            drives: frozenset[str] = frozenset()) -> tuple[Any, ...]:
    """What a load did: the refusal or crash (class, reason, offset, section, field, message), or
    what it loaded (bytes consumed and left unread, sections never loaded, RAM digests)."""
    try:
        m, report = Machine.load(release, machine, source, ram_size=ram, media=drives)
    except LoadError as e:
        return (type(e).__name__, e.reason.name, e.offset, e.section, e.field, str(e))
    except LoadCrash as e:  # where QEMU dies instead of refusing
        return (type(e).__name__, "CRASHED", e.offset, e.section, None, str(e))
    return ("loaded", report.bytes_consumed, report.bytes_unread, tuple(report.not_loaded),
            tuple(sorted(m.ram.digest().items())))


def digest(outcomes: list[tuple[Any, ...]]) -> str:
    return hashlib.sha256(repr(outcomes).encode()).hexdigest()


SOURCES = {"file": file_source, "pipe": pipe_source, "socket": socket_source}


# -- the same bytes ---------------------------------------------------------------------

# sha256 of whole streams, recorded at c1fe33f, again with issue 14's machine: scenarios whose RAM holds only firmware.
STREAMS = {
    ("0.13", "pc", "idle", 0, "8M"): "22be96b1aa1daab53b554301e2f43b12da24d6c3325af44fd51dee897c39145b",
    ("0.14", "pc", "random", 1, "8M"): "d075330e67830b25ec4a51485a6e3b86d19c0301a311d456efc47c2ec7c00560",
    ("0.14", "pc-0.13", "ide-dma", 0, "1M"): "ed8df19ee5698eb68509744c565ed00ca672121e64c70ff7cb8572f9af5c1064",
    ("0.15", "pc", "ide-bus-error", 0, "8M"): "ab7b6954841c0dbe0915af07e62880dc2eda705dd9ec767926a22d72083a64f0",
    ("new", "pc", "random", 7, "16M"): "99b0f67f054fae01d17ff9213952ff34b4eb1163aa256822795cee190f3e6139",
    ("new", "pc", "cpu-two-subsections", 0, "1M"): "b4b45a4ead70272f1e19e6287c36fe3d0f7ba7997c34e75b938ec2a6e061205f",
    ("new", "pc-0.14", "collide-eof", 0, "8M"): "5b3525686fe8c3e0fab5065e4c57c3d0a24d81425ea05a2b220865d7452966d2",
    ("1.0", "pc", "atapi-two-subsections", 0, "8M"): "e9fdf5f52857055f986b14f5239c96b6453ad611b35511cd0617962cf65f92df",
    ("1.0", "pc-0.14", "random", 2, "1M"): "aab84ffdfe53f4b0f32a7ca1a3cc71f0dc147f1f0606067553cc4640714c2736",
}  # fmt: skip

# sha256 of live-ram streams outside their RAM payloads (header, section headers, devices,
# EOF), recorded at c1fe33f (again with issue 14's machine): the generator of the guest's pages changed, nothing else.
OUTSIDE_RAM = {
    ("0.14", "pc", "live-ram", 0, "8M"): "9f3eb07e3b1dc019c28ed7bb00cf108ab6289074024fe70e1d592867a6f903de",
    ("new", "pc", "live-ram", 0, "8M"): "67690422d90c5e4f582c7a15dfd3d98f5720bb2d32bcb590238554ff3fa1167f",
    ("new", "pc-0.14", "live-ram", 5, "16M"): "a710358392af7c831c8a3000a901510a423898417eec9f9977ca9da2e36ce4c1",
    ("1.0", "pc", "live-ram", 3, "4M"): "99a6e05365649e8c73cca69be9b1459fbacfcb95f01f19fb0093da417bbda23d",
}  # fmt: skip


def save_through(kind: str, release: str, machine: str, scenario: str, seed: int, ram: str,
                 tmp: Any) -> bytes:
    """The stream of a fresh machine in ``scenario``, saved to memory, a file, a socket or
    by the ``migmatrix save`` command."""
    if kind == "memory":
        return saved(release, machine, scenario, seed, ram)[1]
    if kind == "command":
        path = os.path.join(tmp, "cmd.mig")
        assert cli.main(["save", "--release", release, "--machine", machine, "--ram", ram,
                         "--scenario", scenario, "--seed", str(seed), "-o", path]) == 0
        with open(path, "rb") as f:
            return f.read()
    m = Machine(release, machine, ram, media=media(scenario))
    s = apply_scenario(m, scenario, seed)
    if kind == "file":
        path = os.path.join(tmp, "saved.mig")
        with open(path, "wb") as f:
            m.save(f, passes=s.live_passes, workload=s.workload)
        with open(path, "rb") as f:
            return f.read()
    a, b = socket.socketpair()
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(_read_all(b)))
    reader.start()
    try:
        m.save(SocketSink(a), passes=s.live_passes, workload=s.workload)
    finally:
        a.shutdown(socket.SHUT_WR)
        reader.join()
        a.close()
        b.close()
    return got[0]


def _read_all(sock: socket.socket) -> bytes:
    out = bytearray()
    while chunk := sock.recv(1 << 20):
        out += chunk
    return bytes(out)


@pytest.mark.parametrize("combo", list(STREAMS), ids=lambda c: "-".join(map(str, c)))
def test_streams_are_byte_identical_to_before(combo: tuple[Any, ...], tmp_path: Any) -> None:
    for kind in ("memory", "file", "socket"):
        stream = save_through(kind, *combo, tmp_path)
        assert hashlib.sha256(stream).hexdigest() == STREAMS[combo], kind


@pytest.mark.parametrize("combo", list(OUTSIDE_RAM), ids=lambda c: "-".join(map(str, c)))
def test_live_ram_streams_differ_from_before_only_in_ram_pages(combo: tuple[Any, ...]) -> None:
    release, machine, scenario, _, ram = combo
    _, stream = saved(*combo)
    assert hashlib.sha256(outside_ram(stream, release, machine, ram,
                                      media(scenario))).hexdigest() == \
        OUTSIDE_RAM[combo]


@pytest.mark.parametrize("combo", [("new", "pc", "live-ram", 4, "8M"),
                                   ("0.14", "pc", "random", 1, "8M")],
                         ids=lambda c: "-".join(map(str, c)))
def test_memory_file_socket_and_command_save_the_same_bytes(combo: tuple[Any, ...],
                                                            tmp_path: Any) -> None:
    streams = {kind: save_through(kind, *combo, tmp_path)
               for kind in ("memory", "file", "socket", "command")}
    assert len(set(streams.values())) == 1


# -- the same refusals ------------------------------------------------------------------

# sha256 of the outcomes of loading each stream cut at every interesting offset (733 and
# 779 of them), and with the byte flipped at every 4th, recorded from bytes with issue 14's
# machine (first at c1fe33f, from bytes and from files).
REFUSALS = {
    ("new", "pc", "idle", 0, "1M"): (
        "9ab1549dbe72f971a0bdc94d2f19f853532e33e5fb51ed6c9737461c9b0ac74e",
        "263e1f69a83d0c64589ed88d16a49ddc46fe5f1bb2d855ff21fb04103a3f8c31",
    ),
    ("0.14", "pc", "random", 2, "1M"): (
        "4176bfc5bdd65ccc7cadf9de4f47265e7ff584ab653303b46dffc6776c0c3aef",
        "d8d3afc2b0b41efe06efd097aa5e2b58d89241d2d0a6ee857fb340971901e9d9",
    ),
}


def flipped(stream: bytes, offset: int) -> bytes:
    bad = bytearray(stream)
    bad[offset] ^= 0xFF
    return bytes(bad)


def outcomes(combo: tuple[Any, ...], load: Callable[[bytes], tuple[Any, ...]], *,
             flips: bool = True) -> tuple[list[Any], list[Any]]:
    release, machine, scenario, _, ram = combo
    _, stream = saved(*combo)
    offsets = interesting_offsets(stream, release, machine, ram, media(scenario))
    cuts = [load(stream[:o]) for o in offsets]
    return cuts, [load(flipped(stream, o)) for o in offsets[::4]] if flips else []


def test_refusals_read_as_a_specification() -> None:
    release, machine, ram = "new", "pc", "1M"
    _, stream = saved(release, machine, "idle", 0, ram)
    page = 2527  # the first PAGE record (a pc.bios page, CONTINUE) of the START chunk at 35

    def why(data: bytes) -> tuple[Any, ...]:
        return outcome(release, machine, data, ram)[1:]

    assert why(stream[:3]) == ("TRUNCATED", 0, None, None,
                               "truncated input: needed 4 byte(s), 3 left (offset 0)")
    assert why(stream[: page + 8 + 2048]) == (
        "TRUNCATED", 2535, "ram", None,
        "truncated input: needed 4096 byte(s), 2048 left (offset 2535, section ram)")
    assert why(stream[:-1]) == ("TRUNCATED", len(stream) - 1, None, None,
                                f"truncated input: needed 1 byte(s), 0 left (offset "
                                f"{len(stream) - 1})")
    # Flags 0x28 flipped to 0xd7: QEMU ignores the FULL bit and the unknown ones; MEM_SIZE
    # makes it read the page's bytes as a block list, whose first name it does not have.
    reason, offset, section, _, message = why(flipped(stream, page + 7))
    assert (reason, offset, section) == ("UNKNOWN_RAM_BLOCK", page + 8, "ram")
    assert message.startswith("unknown RAM block: unknown RAM block ")


@pytest.mark.parametrize("combo", list(REFUSALS), ids=lambda c: "-".join(map(str, c)))
def test_loads_refuse_and_accept_exactly_as_before(combo: tuple[Any, ...]) -> None:
    release, machine, scenario, _, ram = combo
    cuts, flips = outcomes(combo, lambda data: outcome(release, machine, data, ram,
                                                       media(scenario)))
    assert (digest(cuts), digest(flips)) == REFUSALS[combo]


@pytest.mark.parametrize("source", list(SOURCES))
@pytest.mark.parametrize("combo", list(REFUSALS), ids=lambda c: "-".join(map(str, c)))
def test_files_pipes_and_sockets_load_as_bytes_do(combo: tuple[Any, ...], source: str) -> None:
    release, machine, scenario, _, ram = combo

    def load(data: bytes) -> tuple[Any, ...]:
        with SOURCES[source](data) as src:
            return outcome(release, machine, src, ram, media(scenario))

    cuts, flips = outcomes(combo, load, flips=source == "file")
    assert digest(cuts) == REFUSALS[combo][0]
    if flips:
        assert digest(flips) == REFUSALS[combo][1]
