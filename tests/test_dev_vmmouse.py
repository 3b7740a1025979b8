"""The VMware mouse: "vmmouse" v0, 4105 flat bytes, held against the real builds' payloads."""

from __future__ import annotations

import doctest
import random
import struct

import pytest

from harness.emulator.devices import vmmouse as vmmouse_module
from harness.emulator.devices.vmmouse import QUEUE_SIZE, VMMouse, vmmouse_description
from harness.emulator.errors import LoadError, Reason
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

KEY = ("vmmouse", 0)


def load(release: Release, fmt: int, data: bytes) -> VMMouse:
    return devtools.load(VMMouse, release, fmt, data)


def state(dev: VMMouse) -> dict:
    return dump_state(vmmouse_description(dev.release), dev)


def test_description():
    desc = vmmouse_description(get_release("0.13"))
    assert (desc.name, desc.version_id, desc.minimum_version_id) == ("vmmouse", 0, 0)
    assert [f.name for f in desc.fields] == ["queue_size", "queue", "nb_queue", "status",
                                            "absolute"]  # fmt: skip
    assert desc.fields[0].kind == "i32" and desc.subsections == ()
    (section,) = VMMouse(get_release("1.0")).sections()
    assert (section.idstr, section.instance_id, section.version_id) == ("vmmouse", 0, 0)


@pytest.mark.parametrize("name,fmt", RUNS, ids=RUN_IDS)
def test_golden_bytes(name, fmt):
    """Flat: the same 4105 bytes in both formats."""
    dev = VMMouse(get_release(name))
    dev.queue = list(range(QUEUE_SIZE))
    dev.nb_queue, dev.status, dev.absolute = 0x0102, 0, 1
    want = struct.pack(f">i{QUEUE_SIZE}IHHB", QUEUE_SIZE, *range(QUEUE_SIZE), 0x0102, 0, 1)
    assert payload(dev, fmt) == want and len(want) == 4105


def test_power_on_state():
    dev = VMMouse(get_release("0.14"))
    assert (dev.queue_size, dev.nb_queue, dev.status, dev.absolute) == (1024, 0, 0xFFFF, 0)
    assert not any(dev.queue)


def test_another_queue_size_is_refused():
    r = get_release("0.15")
    data = bytearray(model_payloads(VMMouse(r), 3)[KEY])
    data[0:4] = struct.pack(">i", 512)
    with pytest.raises(LoadError) as info:
        resave(VMMouse(r), 3, KEY, bytes(data))
    assert info.value.reason is Reason.EQUAL_MISMATCH
    assert (info.value.field, info.value.offset) == ("queue_size", 0)


@pytest.mark.parametrize("seed", range(20))
def test_randomize_stays_within_what_a_driver_reaches(seed):
    dev = VMMouse(get_release("1.0"))
    dev.randomize(random.Random(seed))
    assert dev.status in (0, 0xFFFF) and dev.absolute in (0, 1)
    assert 0 <= dev.nb_queue <= QUEUE_SIZE and (dev.status == 0 or dev.nb_queue == 0)
    assert all(0 <= w < 1 << 32 for w in dev.queue)


@pytest.mark.parametrize("name,fmt", RUNS, ids=RUN_IDS)
@pytest.mark.parametrize("seed", [None, *range(4)])
def test_round_trip(name, fmt, seed):
    r = get_release(name)
    src = VMMouse(r)
    if seed is not None:
        src.randomize(random.Random(seed))
    assert state(load(r, fmt, stream(src, fmt))) == state(src)


def test_module_doctests():
    assert doctest.testmod(vmmouse_module).failed == 0


# -- against the real builds -----------------------------------------------------------


class TestRealBuilds(RealBuilds):
    device = VMMouse

    seed = 5

    def wanted(self, dev: VMMouse) -> bool:
        """Enabled with events queued: the real post_load installs its mouse handler."""
        return dev.status == 0 and dev.nb_queue >= 8
