"""The two i8257 DMA controllers: "dma" v1 instances 0 and 1, four embedded channels each,
held against the real builds' payloads."""

from __future__ import annotations

import doctest
import random
import struct

import pytest

from harness.emulator.devices import dma as dma_module
from harness.emulator.devices.dma import DMA, dma_description, dma_regs_description
from harness.emulator.releases import Release, get_release
from harness.emulator.vmstate import dump_state

from . import devtools
from .devtools import RUN_IDS, RUNS, payload, stream
from .realqemu import (
    RealBuilds,
    historic,  # noqa: F401 - the fixture
    model_payloads,
    resave,
)

CHANNEL = struct.Struct(">iiHH5B")  # 17 bytes


def load(release: Release, fmt: int, data: bytes) -> DMA:
    return devtools.load(DMA, release, fmt, data)


def state(dev: DMA) -> list[dict]:
    desc = dma_description(dev.release)
    return [dump_state(desc, c) for c in dev.controllers]


def distinct(dev: DMA) -> DMA:
    for n, c in enumerate(dev.controllers):
        c.command, c.mask, c.flip_flop = 0x04, 0x0A + n, 1
        for i, ch in enumerate(c.regs):
            v = 0x10 * (n * 4 + i)
            ch.now = [v + 1, v + 2]
            ch.base = [v + 3, v + 4]
            ch.mode, ch.page, ch.pageh, ch.dack, ch.eop = v + 5, v + 6, v + 7, v + 8, v + 9
    return dev


def distinct_bytes(n: int, end: bytes) -> bytes:
    out = struct.pack(">BBBi", 0x04, 0x0A + n, 1, n)
    for i in range(4):
        v = 0x10 * (n * 4 + i)
        out += CHANNEL.pack(v + 1, v + 2, v + 3, v + 4, *range(v + 5, v + 10)) + end
    return out


def test_descriptions():
    r = get_release("0.15")
    desc = dma_description(r)
    assert (desc.name, desc.version_id, desc.minimum_version_id) == ("dma", 1, 1)
    assert desc.load_state_old is None and desc.subsections == ()
    regs = desc.fields[-1]
    assert (regs.name, regs.count, regs.version_id) == ("regs", 4, 1)
    assert regs.desc is dma_regs_description(r)
    assert sum(f.size for f in regs.desc.fields) == CHANNEL.size == 17
    sections = DMA(r).sections()
    assert [(s.idstr, s.instance_id, s.version_id) for s in sections] == [
        ("dma", 0, 1),
        ("dma", 1, 1),
    ]


@pytest.mark.parametrize("name,fmt", RUNS, ids=RUN_IDS)
def test_golden_bytes(name, fmt):
    """Instance 0 then instance 1; format 4 adds one 0x06 after each channel."""
    end = b"\x06" if fmt == 4 else b""
    data = payload(distinct(DMA(get_release(name))), fmt)
    assert data == distinct_bytes(0, end) + distinct_bytes(1, end)
    assert len(data) == 2 * (75 if fmt == 3 else 79)


def test_power_on_state():
    """dma_init2 then the master clear: every channel masked, nothing programmed; the
    16-bit controller (instance 1) has dshift 1."""
    ctrl8, ctrl16 = DMA(get_release("0.14")).controllers
    assert (ctrl8.command, ctrl8.mask, ctrl8.flip_flop, ctrl8.dshift) == (0, 0xFF, 0, 0)
    assert ctrl16.dshift == 1 and ctrl16.mask == 0xFF
    assert all(ch.now == [0, 0] and ch.base == [0, 0] and ch.mode == 0 for ch in ctrl8.regs)


@pytest.mark.parametrize("seed", range(20))
def test_randomize_stays_within_what_port_writes_reach(seed):
    dev = DMA(get_release("1.0"))
    dev.randomize(random.Random(seed))
    for ncont, c in enumerate(dev.controllers):
        assert c.dshift == ncont and c.command in (0, 4) and c.flip_flop in (0, 1)
        for ichan, ch in enumerate(c.regs):
            assert ch.mode & 3 == ichan and ch.pageh == ch.dack == ch.eop == 0
            assert ch.now[0] == ch.base[0] << ncont
            assert 0 <= ch.now[1] <= (ch.base[1] + 1) << ncont


@pytest.mark.parametrize("name,fmt", RUNS, ids=RUN_IDS)
@pytest.mark.parametrize("seed", [None, *range(6)])
def test_round_trip(name, fmt, seed):
    r = get_release(name)
    src = DMA(r)
    if seed is not None:
        src.randomize(random.Random(seed))
    assert state(load(r, fmt, stream(src, fmt))) == state(src)


def test_dshift_is_taken_from_the_stream():
    """A plain INT32: instance 0 loaded from instance 1's bytes becomes 16-bit."""
    r = get_release("0.14")
    data = model_payloads(DMA(r), 3)[("dma", 1)]
    dev = DMA(r)
    assert resave(dev, 3, ("dma", 0), data) == data
    assert dev.controllers[0].dshift == 1


def test_module_doctests():
    assert doctest.testmod(dma_module).failed == 0


# -- against the real builds -----------------------------------------------------------


class TestRealBuilds(RealBuilds):
    device = DMA
