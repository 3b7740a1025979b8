"""Finding and unpacking the historic QEMU builds (harness.qemu.historic)."""

from __future__ import annotations

import io
import os
import subprocess
import tarfile
import threading
from pathlib import Path

import pytest

from harness.qemu import historic
from harness.qemu.historic import HistoricUnavailable, find_build

from .ci import require


def _bundle(folder: Path, set_name: str, *, binary: bool = True) -> Path:
    """A tiny bundle of the real layout whose 'binary' is a shell script."""
    path = folder / f"qemu-{set_name}.tar.xz"
    with tarfile.open(path, "w:xz") as tar:
        def add(name: str, data: bytes, mode: int = 0o644) -> None:
            info = tarfile.TarInfo(f"qemu-{set_name}/{name}")
            info.size, info.mode = len(data), mode
            tar.addfile(info, io.BytesIO(data))
        if binary:
            add("bin/qemu-system-x86_64", b"#!/bin/sh\necho fake\n", 0o755)
        add("share/qemu/bios.bin", b"\0" * 16)
        add("BUILDINFO", f"set: {set_name}\nref: v-{set_name}\n".encode())
    return path


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    bundles = tmp_path / "bundles"
    bundles.mkdir()
    monkeypatch.setenv("MIGMATRIX_QEMU_BUNDLES", str(bundles))
    monkeypatch.setenv("MIGMATRIX_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("MIGMATRIX_QEMU_HISTORIC", raising=False)
    return bundles


def test_unpacks_once_into_the_cache_and_runs(env: Path, tmp_path: Path) -> None:
    _bundle(env, "0.14")
    build = find_build("0.14")
    assert build.set == "0.14" and build.root.name == "qemu-0.14"
    assert tmp_path / "cache" in build.root.parents
    assert subprocess.run([build.binary], capture_output=True).stdout == b"fake\n"
    assert build.buildinfo()["ref"] == "v-0.14"
    stamp = build.binary.stat().st_mtime_ns
    assert find_build("0.14").binary.stat().st_mtime_ns == stamp  # not unpacked again


def test_model_release_names_map_to_bundle_sets(env: Path) -> None:
    _bundle(env, "genstats")
    assert find_build("new").root.name == "qemu-genstats"


def test_a_new_bundle_is_unpacked_again(env: Path) -> None:
    _bundle(env, "0.15")
    old = find_build("0.15").root
    os.utime(env / "qemu-0.15.tar.xz", (1, 1))
    new = find_build("0.15").root
    assert new != old and new.is_dir()


def test_concurrent_unpackers_see_one_complete_tree(env: Path) -> None:
    _bundle(env, "1.0")
    roots: list[Path] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            roots.append(find_build("1.0").root)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(set(roots)) == 1
    assert not [p for p in roots[0].parent.iterdir() if p.name.startswith(".unpack-")]


def test_user_builds_win_over_the_bundles(env: Path, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    own = tmp_path / "own"
    with tarfile.open(_bundle(tmp_path, "0.13")) as tar:
        tar.extractall(own, filter="data")
    assert find_build("0.13", builds_dir=own).root == own / "qemu-0.13"
    monkeypatch.setenv("MIGMATRIX_QEMU_HISTORIC", str(own))
    assert find_build("0.13").root == own / "qemu-0.13"
    with pytest.raises(HistoricUnavailable, match=r"qemu-0.14/bin/qemu-system-x86_64 is missing"):
        find_build("0.14")


@pytest.mark.parametrize("release,message", [
    ("0.12", "no historic build for release '0.12'"),
    ("0.14", r"qemu-0.14.tar.xz: No such file"),
])
def test_clear_errors(env: Path, release: str, message: str) -> None:
    with pytest.raises(HistoricUnavailable, match=message):
        find_build(release)
    assert historic.historic_problem(release) is not None


def test_a_bundle_without_the_binary_is_refused(env: Path) -> None:
    _bundle(env, "rhel6.1", binary=False)
    with pytest.raises(HistoricUnavailable, match="missing or not executable"):
        find_build("rhel6.1")


def test_the_real_bundles_unpack_and_name_their_source() -> None:
    """The shipped bundles: every release the model has is there, and each names the
    commit it was built from."""
    require(None if historic.bundles_dir() else "no bundles found", "historic bundles")
    for release, set_name in historic.BUNDLE_SETS.items():
        build = find_build(release)
        assert build.buildinfo()["set"] == set_name
        assert build.buildinfo()["commit"]


def test_a_real_guests_scenario_names_its_drives_for_the_model_that_reads_its_streams() -> None:
    """A refusal in a real 'booted' cell is shown with the writer's marks: the model
    machine that decodes the stream is given the scenario's disk (once a KeyError)."""
    from harness.drivers.inprocess import stream_window
    from harness.emulator.machine import Machine
    from harness.matrix import Cell, Endpoint
    from harness.scenarios import media_of

    assert media_of("booted") == {"hda"} and media_of("live-ram", historic=True) == {"hda"}
    assert media_of("live-ram") == frozenset()  # the model's live-ram needs no disk
    assert media_of("fdc-media-changed") == {"fda"} and media_of("idle") == frozenset()
    src = Endpoint("qemu-0.14/pc", "0.14", "pc", 2 << 20, kind="qemu", historic=True)
    cell = Cell(src, src, "booted", 0, ("pass",), "test")
    stream = Machine("0.14", "pc", 2 << 20, media={"hda"}).save()
    window = stream_window(cell, stream, stream.index(b"mc146818rtc") + 20, "here")
    assert [m for m in window["marks"] if m["kind"] != "error"]  # the writer's marks
