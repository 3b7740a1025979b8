"""Streams saved to and loaded from files, pipes and sockets in bulk: the same bytes and
the same errors as in memory, and as before bulk I/O (recorded at c1fe33f).

A stream's bytes depend only on the machine's state. Guest RAM filled by a scenario's
workload (``live-ram``) changed with its generator (bench/README.md); every other byte of
every stream, and every refusal of a load, is as it was.
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
from harness.emulator.errors import LoadError
from harness.emulator.machine import Machine
from harness.scenarios import apply_scenario

from .sources import SocketSink, file_source, pipe_source, socket_source

# -- streams ----------------------------------------------------------------------------


def saved(release: str, machine: str, scenario: str, seed: int, ram: str) -> tuple[Machine, bytes]:
    m = Machine(release, machine, ram)
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


def sections(stream: bytes, release: str, machine: str, ram: str) -> list[Any]:
    _, report = Machine.load(release, machine, stream, ram_size=ram)
    return report.sections


def ram_header_size(kind: str) -> int:
    return 1 + 4 + 1 + len(b"ram") + 4 + 4 if kind == "START" else 1 + 4


def outside_ram(stream: bytes, release: str, machine: str, ram: str) -> bytes:
    """The stream without the payloads of its ``ram`` sections: header, section headers,
    device sections, EOF."""
    secs = sections(stream, release, machine, ram)
    out = [stream[: secs[0].offset]]
    for s in secs:
        stop = s.offset + ram_header_size(s.kind) if s.idstr == "ram" else s.end
        out.append(stream[s.offset : stop])
    out.append(stream[secs[-1].end :])
    return b"".join(out)


def interesting_offsets(stream: bytes, release: str, machine: str, ram: str) -> list[int]:
    """Where a cut or a flipped byte meets a decision of the loader: the file header, every
    byte of the first RAM and first device section header, the edges of every other
    section header and every section's end, and the edges of RAM records (the be64, its
    flags byte, the name or fill byte, the middle and end of a page) for the first records
    of each section, every change of record kind and the last records; every byte of the
    first device section and every 31st byte of the others."""
    secs = sections(stream, release, machine, ram)
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
        found.update(range(s.offset, s.end, 1 if i == 0 else 31))
    found.add(len(stream) - 1)
    return sorted(o for o in found if 0 <= o < len(stream))


# -- loading from every kind of source -------------------------------------------------


def outcome(release: str, machine: str, source: Any, ram: str) -> tuple[Any, ...]:
    """What a load did: the refusal (class, reason, offset, section, field, message), or
    what it loaded (bytes consumed and left unread, sections never loaded, RAM digests)."""
    try:
        m, report = Machine.load(release, machine, source, ram_size=ram)
    except LoadError as e:
        return (type(e).__name__, e.reason.name, e.offset, e.section, e.field, str(e))
    return ("loaded", report.bytes_consumed, report.bytes_unread, tuple(report.not_loaded),
            tuple(sorted(m.ram.digest().items())))


def digest(outcomes: list[tuple[Any, ...]]) -> str:
    return hashlib.sha256(repr(outcomes).encode()).hexdigest()


SOURCES = {"file": file_source, "pipe": pipe_source, "socket": socket_source}


# -- the same bytes ---------------------------------------------------------------------

# sha256 of whole streams, recorded at c1fe33f: scenarios whose RAM holds only firmware.
STREAMS = {
    ("0.13", "pc", "idle", 0, "8M"): "abda1683a2dc1850f94d38b5d62b5fa78ffa97cd0f77c70e1c094c8979bc4a74",
    ("0.14", "pc", "random", 1, "8M"): "8f42f9173c06ff87723ded79f56efd6a1bbdede90680c5ab2dcc6932c849c5f1",
    ("0.14", "pc-0.13", "ide-dma", 0, "1M"): "2ce938cfc791b07dd90242527d541f823cc05fec3c5fe4b59959975043565a2b",
    ("0.15", "pc", "ide-bus-error", 0, "8M"): "f3878e3f0a6ce8b060e01a0ca77764821d23cfeb0782abfc97a62531dcb24bff",
    ("new", "pc", "random", 7, "16M"): "f7c4478b1d52222100bf08c206b6c258b45bf328c93e2245c9dae6981a64c7aa",
    ("new", "pc", "cpu-two-subsections", 0, "1M"): "09ebcefbec93c93cd528ae9b241fe71fa0bc92df9f38fc2ab970e5a17726d459",
    ("new", "pc-0.14", "collide-eof", 0, "8M"): "f3878e3f0a6ce8b060e01a0ca77764821d23cfeb0782abfc97a62531dcb24bff",
    ("1.0", "pc", "atapi-two-subsections", 0, "8M"): "2b9590fc52852ecaad876a159676bc4149365c1d4a5e3647fc08230bc100ebb9",
    ("1.0", "pc-0.15", "random", 2, "1M"): "c5dec6b546a0ac4242a2b11d15097cda98f9f1daa27d9b1b0292c6c95d6e8108",
}  # fmt: skip

# sha256 of live-ram streams outside their RAM payloads (header, section headers, devices,
# EOF), recorded at c1fe33f: the generator of the guest's pages changed, nothing else.
OUTSIDE_RAM = {
    ("0.14", "pc", "live-ram", 0, "8M"): "412fa8db3a33d6df28f2680dd20c2699dcd9aaba3a04cc058275044320ba0deb",
    ("new", "pc", "live-ram", 0, "8M"): "d9688ff014277173c1d2cc95eab54f758b27f33a5fed7936df2089c2422748d2",
    ("new", "pc-0.14", "live-ram", 5, "16M"): "412fa8db3a33d6df28f2680dd20c2699dcd9aaba3a04cc058275044320ba0deb",
    ("1.0", "pc", "live-ram", 3, "4M"): "412fa8db3a33d6df28f2680dd20c2699dcd9aaba3a04cc058275044320ba0deb",
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
    m = Machine(release, machine, ram)
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
    release, machine, _, _, ram = combo
    _, stream = saved(*combo)
    assert hashlib.sha256(outside_ram(stream, release, machine, ram)).hexdigest() == \
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

# sha256 of the outcomes of loading each stream cut at every interesting offset (404 and
# 401 of them), and with the byte flipped at every 4th, recorded at c1fe33f from bytes and
# from files.
REFUSALS = {
    ("new", "pc", "idle", 0, "1M"): (
        "555a99f6d1077eaba3c82b90d83578b4026a05fac7879cf3b14a0308b81d5b1c",
        "2750511f049a2e92d7f3e1b40c75a18ce387909dc6fe70996ec1e59b471d10d3",
    ),
    ("0.14", "pc", "random", 2, "1M"): (
        "cbaaf0627ac90bbc517e11016742940b5af6b2d3df4ddd4d9eae228d81eda4ba",
        "4148c789ffacc0926d3142070ec8ba916cf05a58aeef2c885d148052ffc85c7b",
    ),
}


def flipped(stream: bytes, offset: int) -> bytes:
    bad = bytearray(stream)
    bad[offset] ^= 0xFF
    return bytes(bad)


def outcomes(combo: tuple[Any, ...], load: Callable[[bytes], tuple[Any, ...]], *,
             flips: bool = True) -> tuple[list[Any], list[Any]]:
    release, machine, _, _, ram = combo
    _, stream = saved(*combo)
    offsets = interesting_offsets(stream, release, machine, ram)
    cuts = [load(stream[:o]) for o in offsets]
    return cuts, [load(flipped(stream, o)) for o in offsets[::4]] if flips else []


def test_refusals_read_as_a_specification() -> None:
    release, machine, ram = "new", "pc", "1M"
    _, stream = saved(release, machine, "idle", 0, ram)
    page = 2407  # the first PAGE record (a BIOS page) of the START chunk at offset 8

    def why(data: bytes) -> tuple[Any, ...]:
        return outcome(release, machine, data, ram)[1:]

    assert why(stream[:3]) == ("TRUNCATED", 0, None, None,
                               "truncated input: needed 4 byte(s), 3 left (offset 0)")
    assert why(stream[: page + 8 + 1 + 7 + 2048]) == (
        "TRUNCATED", 2423, "ram", None,
        "truncated input: needed 4096 byte(s), 2048 left (offset 2423, section ram)")
    assert why(stream[:-1]) == ("TRUNCATED", len(stream) - 1, None, None,
                                f"truncated input: needed 1 byte(s), 0 left (offset "
                                f"{len(stream) - 1})")
    assert why(flipped(stream, page + 7)) == (
        "BAD_RAM_FLAGS", page, "ram", None,
        f"unknown RAM record flags: flags 0x0f7: obsolete FULL flag 0x01 (offset {page}, "
        "section ram)")


@pytest.mark.parametrize("combo", list(REFUSALS), ids=lambda c: "-".join(map(str, c)))
def test_loads_refuse_and_accept_exactly_as_before(combo: tuple[Any, ...]) -> None:
    release, machine, _, _, ram = combo
    cuts, flips = outcomes(combo, lambda data: outcome(release, machine, data, ram))
    assert (digest(cuts), digest(flips)) == REFUSALS[combo]


@pytest.mark.parametrize("source", list(SOURCES))
@pytest.mark.parametrize("combo", list(REFUSALS), ids=lambda c: "-".join(map(str, c)))
def test_files_pipes_and_sockets_load_as_bytes_do(combo: tuple[Any, ...], source: str) -> None:
    release, machine, _, _, ram = combo

    def load(data: bytes) -> tuple[Any, ...]:
        with SOURCES[source](data) as src:
            return outcome(release, machine, src, ram)

    cuts, flips = outcomes(combo, load, flips=source == "file")
    assert digest(cuts) == REFUSALS[combo][0]
    if flips:
        assert digest(flips) == REFUSALS[combo][1]
