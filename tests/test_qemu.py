"""Real QEMU endpoints: the boot image, the qemu driver's verdicts with QEMU's own
messages, live migration of a guest that dirties memory, and the comparison.

Needs qemu-system-x86_64 (Debian's qemu-system-x86). Without it the tests that run QEMU
skip, saying why; in CI (``CI=true``) they fail instead.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from harness.drivers.qemu import QemuDriver, qemu_argv, qemu_problem
from harness.matrix import MatrixError, load_matrix
from harness.qemu import bootimage
from harness.qemu.compare import Ignored, StreamState, compare
from harness.verdict import Verdict, classify

from .ci import require

REPO = Path(__file__).resolve().parents[1]
CI_MATRIX = REPO / "matrix" / "qemu-ci.toml"


@pytest.fixture(scope="module")
def qemu() -> None:
    require(qemu_problem(), "real-QEMU tests")


def cell(cell_id: str):  # noqa: ANN201
    cells = {c.id: c for c in load_matrix(CI_MATRIX).cells()}
    return cells[cell_id]


def run(cell_id: str):  # noqa: ANN201
    with QemuDriver() as driver:
        return driver.run_cell(cell(cell_id))


# -- the boot image ----------------------------------------------------------------------


def test_the_boot_sector_is_one_sector_with_the_boot_signature() -> None:
    sector = bootimage.boot_sector(bootimage.top_for(64 << 20))
    assert len(sector) == 512 and sector[-2:] == b"\x55\xaa"
    assert sector[0] == 0xFA  # cli
    with pytest.raises(ValueError):
        bootimage.top_for(2 << 20)


def test_page_counters_may_form_one_step_only() -> None:
    assert bootimage.check_counters([7] * 10) is None
    assert bootimage.check_counters([8] * 3 + [7] * 7) is None
    assert bootimage.check_counters([0] * 3 + [255] * 7) is None  # wraps at 256
    assert "2 steps" in bootimage.check_counters([8, 7, 7, 6])  # a page missed its copy
    assert "only equal or one less" in bootimage.check_counters([7, 9])


def test_the_boot_image_boots_under_tcg(qemu: None, tmp_path: Path) -> None:
    image = bootimage.write_image(tmp_path / "boot.img", 64 << 20)
    serial = tmp_path / "serial.txt"
    proc = subprocess.Popen(
        ["qemu-system-x86_64", "-M", "pc-i440fx-7.2", "-nodefaults", "-display", "none",
         "-accel", "tcg", "-m", "64M", "-drive", f"file={image},format=raw,if=ide",
         "-serial", f"file:{serial}"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and (not serial.exists() or serial.stat().st_size < 3):
            time.sleep(0.05)
    finally:
        proc.kill()
        proc.wait()
    text = serial.read_bytes()
    assert text.startswith(bootimage.BOOTED + bootimage.PASS + bootimage.PASS), text[:20]


# -- verdicts ----------------------------------------------------------------------------


def test_same_binary_and_machine_type_passes_field_by_field(qemu: None) -> None:
    outcome = run("7.2/pc-i440fx-7.2->7.2/pc-i440fx-7.2[boot-idle]")
    assert classify(outcome) is Verdict.PASS, outcome.message
    comparison = outcome.extra["comparison"]
    assert comparison["compared_fields"] > 500 and comparison["compared_pages"] > 16000
    assert outcome.extra["machine_types"] == {"source": "pc-i440fx-7.2",
                                              "destination": "pc-i440fx-7.2"}


def test_another_machine_type_is_rejected_with_qemus_message(qemu: None) -> None:
    outcome = run("7.2/pc-i440fx-7.2->7.2/pc-i440fx-6.2[boot-idle]")
    assert classify(outcome) is Verdict.REJECTED
    assert "Machine type received is 'pc-i440fx-7.2' and local is 'pc-i440fx-6.2'" in \
        outcome.message
    assert outcome.extra["destination_exit"] == "exited with status 1"


def test_without_the_configuration_section_the_device_level_failure_shows(qemu: None) -> None:
    outcome = run("7.2/pc-i440fx-7.2+nocfg->7.2/pc-i440fx-6.2+nocfg[boot-idle]")
    assert classify(outcome) is Verdict.REJECTED
    assert "Missing section footer for 0000:00:01.3/piix4_pm" in outcome.message
    assert outcome.load_error is not None
    assert outcome.load_error["section"] == "0000:00:01.3/piix4_pm"


def test_a_live_guest_that_dirties_memory_comes_back_exactly(qemu: None) -> None:
    outcome = run("7.2/pc-i440fx-7.2->7.2/pc-i440fx-7.2[guest-dirty]")
    assert classify(outcome) is Verdict.PASS, (outcome.message, outcome.diff)
    migration = outcome.extra["migration"]
    assert migration["dirty_sync_count"] >= 3  # RAM went out in several passes
    assert migration["transferred"] > 2 * (64 << 20)  # pages were sent again
    assert outcome.extra["guest_pages_checked"] == (
        bootimage.top_for(64 << 20) - bootimage.START) // bootimage.PAGE


@pytest.mark.parametrize("transport", ["tcp", "exec"])
def test_every_transport_gives_the_same_verdict(qemu: None, transport: str) -> None:
    # In qemu-ci.toml q35 listens on tcp, the 6.2+nocfg endpoint reads a file (exec).
    cell_id = {"tcp": "7.2/pc-q35-7.2->7.2/pc-q35-7.2[boot-idle]",
               "exec": "7.2/pc-i440fx-6.2+nocfg->7.2/pc-i440fx-6.2+nocfg[guest-dirty]"}
    outcome = run(cell_id[transport])
    assert outcome.extra["transport"] == transport
    assert classify(outcome) is Verdict.PASS, (outcome.message, outcome.diff)


# -- the comparison ----------------------------------------------------------------------


def state(devices: dict, ram: dict | None = None) -> StreamState:
    return StreamState("x", "pc", devices, ram or {})


def test_the_comparison_reports_every_differing_field_and_page() -> None:
    a = state({"serial": {"lsr": 96, "scr": 1}}, {"pc.ram": {0: (b"a", 0), 4096: (b"b", 1)}})
    b = state({"serial": {"lsr": 96, "scr": 2}}, {"pc.ram": {0: (b"a", 0), 4096: (b"c", 2)}})
    result = compare(a, b)
    assert [d["path"] for d in result.diffs] == ["serial/scr", "ram/pc.ram"]
    assert "1 page(s) differ: [0x1000]" in result.diffs[1]["source"]


def test_ignored_fields_are_counted_and_conditional() -> None:
    rule = Ignored("*/ide", "bmdma[[]*[]]/migration_retry_*", "leftover",
                   unless="bus[{n}]/error_status")
    quiet = {"bmdma[0]/migration_retry_unit": 1}
    pending = {"bmdma[0]/migration_retry_unit": 1, "bus[0]/error_status": 8}
    assert rule.matches("0000:00:01.1/ide", "bmdma[0]/migration_retry_unit", quiet)
    assert not rule.matches("0000:00:01.1/ide", "bmdma[0]/migration_retry_unit", pending)
    result = compare(state({"0000:00:01.1/ide": pending}),
                     state({"0000:00:01.1/ide": {**pending, "bmdma[0]/migration_retry_unit": 0}}),
                     (rule,))
    assert [d["path"] for d in result.diffs] == ["0000:00:01.1/ide/bmdma[0]/migration_retry_unit"]


def test_byte_ranges_of_one_buffer_combine_and_the_rest_is_still_compared() -> None:
    """The RTC's clock bytes are ignored in several ranges of cmos_data; a guest-set byte
    between them (an alarm register) still counts."""
    from harness.qemu.compare import HISTORIC_IGNORED

    cmos = bytes(range(0x20, 0x40))
    clock_moved = bytearray(cmos)
    clock_moved[0x00] ^= 1  # seconds
    clock_moved[0x09] ^= 1  # year
    clock_moved[0x0C] ^= 0x10  # register C: update ended
    src = state({"mc146818rtc@0x70": {"cmos_data": cmos}})
    assert compare(src, state({"mc146818rtc@0x70": {"cmos_data": bytes(clock_moved)}}),
                   HISTORIC_IGNORED).diffs == []
    alarm = bytearray(clock_moved)
    alarm[0x01] ^= 1  # the seconds alarm the guest set
    result = compare(src, state({"mc146818rtc@0x70": {"cmos_data": bytes(alarm)}}),
                     HISTORIC_IGNORED)
    assert [d["path"] for d in result.diffs] == ["mc146818rtc@0x70/cmos_data"]
    assert sum(n for k, n in result.ignored.items() if "cmos_data" in k) >= 5


def test_argv_uses_tcg_and_the_guest_clock_unless_told(tmp_path: Path) -> None:
    ep = cell("7.2/pc-i440fx-7.2->7.2/pc-i440fx-7.2[boot-idle]").source
    argv = qemu_argv(ep, "source", tmp_path, incoming=False, runs_guest=False)
    assert argv[:3] == ["qemu-system-x86_64", "-M", "pc-i440fx-7.2"]
    assert ["-accel", "tcg"] == argv[argv.index("-accel"):argv.index("-accel") + 2]
    assert "-incoming" not in argv and "clock=vm" in argv


# -- matrix files ------------------------------------------------------------------------


def test_qemu_matrices_load_and_every_cell_runs_under_the_qemu_driver() -> None:
    from harness.runner import driver_for

    for name in ("qemu.toml", "qemu-ci.toml", "qemu-versions.toml"):
        m = load_matrix(REPO / "matrix" / name)
        cells = m.cells()
        assert cells and all(driver_for(c, "inprocess") == "qemu" for c in cells)
        assert {c.scenario for c in cells} == {"boot-idle", "guest-dirty"}


def test_mixed_kinds_are_excluded_with_a_reason(tmp_path: Path) -> None:
    path = tmp_path / "m.toml"
    path.write_text('[[endpoint]]\nname = "new/pc"\n[[endpoint]]\nname = "7.2/pc"\n'
                    'kind = "qemu"\n[scenarios]\ninclude = ["idle", "boot-idle"]\n')
    m = load_matrix(path)
    ids = {c.id for c in m.cells()}
    assert ids == {"new/pc->new/pc[idle]", "7.2/pc->7.2/pc[boot-idle]"}
    reasons = dict(m.excluded)
    assert "cannot migrate to a qemu endpoint" in reasons["new/pc->7.2/pc[idle]"]
    assert "for qemu endpoints" in reasons["new/pc->new/pc[boot-idle]"]


def test_a_bad_qemu_endpoint_names_the_key(tmp_path: Path) -> None:
    path = tmp_path / "m.toml"
    path.write_text('[[endpoint]]\nname = "7.2/pc"\nkind = "qemu"\ntransport = "rdma"\n')
    with pytest.raises(MatrixError, match=r"endpoint\[0\]\.transport"):
        load_matrix(path)


# -- across QEMU versions, in containers -------------------------------------------------

VERSIONS = REPO / "matrix" / "qemu-versions.toml"


def images_problem() -> str | None:
    try:
        import docker
    except ImportError:
        return "the docker SDK for Python is not installed"
    try:
        client = docker.from_env(timeout=10)
        client.ping()
    except Exception as e:
        return f"no Docker engine at {os.environ.get('DOCKER_HOST', 'the default socket')} " \
               f"({type(e).__name__}); containers/start-dockerd.sh --no-images"
    try:
        for image in ("migmatrix-qemu:bullseye", "migmatrix-qemu:trixie"):
            try:
                client.images.get(image)
            except Exception:
                return f"image {image} not built: run containers/qemu/build.sh"
    finally:
        client.close()
    return None


@pytest.fixture(scope="module")
def qemu_images(qemu: None) -> None:
    require(images_problem(), "cross-version QEMU tests")


@pytest.mark.parametrize(("cell_id", "verdict", "message"), [
    ("7.2/pc-i440fx-7.2->10.0/pc-i440fx-7.2[guest-dirty]", Verdict.PASS, ""),
    ("5.2/pc-i440fx-5.2->7.2/pc-i440fx-5.2[boot-idle]", Verdict.PASS, ""),
    ("10.0/pc-i440fx-10.0->7.2/pc-i440fx-7.2[boot-idle]", Verdict.REJECTED,
     "Machine type received is 'pc-i440fx-10.0' and local is 'pc-i440fx-7.2'"),
])
def test_across_qemu_versions_in_containers(qemu_images: None, cell_id: str,
                                            verdict: Verdict, message: str) -> None:
    cells = {c.id: c for c in load_matrix(VERSIONS).cells()}
    with QemuDriver() as driver:
        outcome = driver.run_cell(cells[cell_id])
    assert classify(outcome) is verdict, (outcome.message, outcome.diff)
    assert message in outcome.message
