"""The real QEMU builds of 2010-2011 (and RHEL 6's qemu-kvm) as endpoint binaries.

The builds come as bundles, ``qemu-SET.tar.xz``, each unpacking to ``qemu-SET/`` with
``bin/qemu-system-x86_64``, ``share/qemu/`` (that tree's firmware) and ``BUILDINFO``.
A matrix names them by the emulator core's release names (``qemu-0.14/pc`` lines up with
``0.14/pc``); :data:`BUNDLE_SETS` maps a release to its bundle.

Where the builds come from, first match wins:

1. a directory of ``qemu-SET/`` trees the user built (``MIGMATRIX_QEMU_HISTORIC`` or a
   matrix's ``historic_dir``; ``containers/qemu-historic/build.sh`` makes such trees);
2. the bundles (``MIGMATRIX_QEMU_BUNDLES``, else ``../shared/qemu-historic`` beside the
   checkout, else ``/work/shared/qemu-historic``), unpacked once into a cache directory
   outside the repository (``MIGMATRIX_CACHE``, else ``$XDG_CACHE_HOME/migmatrix``, else
   ``~/.cache/migmatrix``), keyed by the bundle's size and modification time so that a new
   bundle is unpacked again. Concurrent unpackers (pytest-xdist workers) take a file lock;
   a tree appears only complete (unpacked beside it, then renamed).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "BUNDLE_SETS",
    "HistoricBuild",
    "HistoricUnavailable",
    "bundles_dir",
    "cache_dir",
    "find_build",
    "historic_problem",
    "nic_args",
    "runtime_args",
    "vga_args",
]

# The emulator core's release name -> the bundle's set name (qemu-SET).
BUNDLE_SETS: dict[str, str] = {
    "0.13": "0.13",
    "0.14": "0.14",
    "0.15": "0.15",
    "new": "genstats",
    "1.0": "1.0",
    "rhel6.1": "rhel6.1",
    "rhel6.2": "rhel6.2",
}



def nic_args(nic: str, default_nic: str) -> list[str]:
    """The model's NIC cold-plugged. Without -net options QEMU builds its default NIC
    (e1000, rtl8139 on RHEL 6) with user networking; ``-net nic,model=X -net user`` is
    the same machine."""
    if nic == "none":
        return ["-net", "none"]
    if nic != default_nic:
        return ["-net", f"nic,model={nic}", "-net", "user"]
    return []


def vga_args(vga: str) -> list[str]:
    """The model's display adapter (``-vga``; cirrus is QEMU's default)."""
    return ["-vga", vga] if vga != "cirrus" else []


def runtime_args(build: HistoricBuild) -> list[str]:
    """What a build needs on every command line here: RHEL 6's keeps KVM support, which a
    host with /dev/kvm would use, and its default CPU model (cpu64-rhel6) is defined by the
    bundle's config file ("Unknown cpu model" without it)."""
    if build.set.startswith("rhel"):
        return ["-no-kvm", "-readconfig", str(build.datadir / "cpu-x86_64.conf")]
    return []


BINARY = "bin/qemu-system-x86_64"
DATADIR = "share/qemu"
_REPO = Path(__file__).resolve().parents[2]


class HistoricUnavailable(Exception):
    """A historic build cannot be found or unpacked: which release and why."""


@dataclass(frozen=True)
class HistoricBuild:
    """One unpacked build: ``root`` is its ``qemu-SET/`` tree."""

    release: str
    set: str
    root: Path

    @property
    def binary(self) -> Path:
        return self.root / BINARY

    @property
    def datadir(self) -> Path:
        return self.root / DATADIR

    def buildinfo(self) -> dict[str, str]:
        """``BUILDINFO`` as a dict (ref, commit, built, configure, ...); empty if absent."""
        path = self.root / "BUILDINFO"
        out: dict[str, str] = {}
        if path.exists():
            for line in path.read_text(errors="replace").splitlines():
                key, sep, value = line.partition(":")
                if sep:
                    out[key.strip()] = value.strip()
        return out


def _env_path(name: str) -> Path | None:
    value = os.environ.get(name)
    return Path(value).expanduser() if value else None


def bundles_dir() -> Path | None:
    """Where the ``qemu-SET.tar.xz`` bundles are, or ``None``."""
    given = _env_path("MIGMATRIX_QEMU_BUNDLES")
    if given is not None:
        return given
    for candidate in (_REPO.parent / "shared" / "qemu-historic",
                      Path("/work/shared/qemu-historic")):
        if candidate.is_dir():
            return candidate
    return None


def cache_dir() -> Path:
    """The cache the bundles are unpacked into (never inside the repository)."""
    given = _env_path("MIGMATRIX_CACHE")
    if given is not None:
        return given
    xdg = _env_path("XDG_CACHE_HOME")
    return (xdg if xdg is not None else Path.home() / ".cache") / "migmatrix"


def _set_of(release: str) -> str:
    try:
        return BUNDLE_SETS[release]
    except KeyError:
        known = ", ".join(BUNDLE_SETS)
        raise HistoricUnavailable(f"no historic build for release {release!r} "
                                  f"(known: {known})") from None


def _check_tree(release: str, root: Path, where: str) -> HistoricBuild:
    build = HistoricBuild(release, _set_of(release), root)
    if not os.access(build.binary, os.X_OK):
        raise HistoricUnavailable(f"{where}: {build.binary} is missing or not executable")
    if not build.datadir.is_dir():
        raise HistoricUnavailable(f"{where}: {build.datadir} (the firmware) is missing")
    return build


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _unpack(bundle: Path, dest: Path) -> None:
    """Unpack ``bundle`` so that ``dest`` (``.../qemu-SET``) appears complete or not at all."""
    tmp = Path(tempfile.mkdtemp(prefix=".unpack-", dir=dest.parent))
    try:
        with tarfile.open(bundle) as tar:
            tar.extractall(tmp, filter="data")
        unpacked = tmp / dest.name
        if not unpacked.is_dir():
            raise HistoricUnavailable(f"{bundle}: does not unpack to {dest.name}/")
        # filter="data" drops the executable bits of nothing, but be explicit: the
        # binary must run.
        binary = unpacked / BINARY
        if binary.exists():
            binary.chmod(binary.stat().st_mode | 0o111)
        os.rename(unpacked, dest)
    except (tarfile.TarError, OSError, EOFError) as e:
        raise HistoricUnavailable(f"{bundle}: cannot unpack: {e}") from e
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def find_build(release: str, *, builds_dir: str | Path | None = None) -> HistoricBuild:
    """The build of ``release``: from ``builds_dir`` (or ``MIGMATRIX_QEMU_HISTORIC``) when
    given, else from the bundles, unpacked into the cache on first use."""
    set_name = _set_of(release)
    given = Path(builds_dir).expanduser() if builds_dir else _env_path("MIGMATRIX_QEMU_HISTORIC")
    if given is not None:
        return _check_tree(release, given / f"qemu-{set_name}", f"builds in {given}")
    bundles = bundles_dir()
    if bundles is None:
        raise HistoricUnavailable(
            "no bundles of the historic builds: set MIGMATRIX_QEMU_BUNDLES to the folder "
            "of qemu-SET.tar.xz, or MIGMATRIX_QEMU_HISTORIC to a folder of qemu-SET/ "
            "trees (containers/qemu-historic/build.sh builds them)")
    bundle = bundles / f"qemu-{set_name}.tar.xz"
    try:
        st = bundle.stat()
    except OSError as e:
        raise HistoricUnavailable(f"{bundle}: {e.strerror}") from None
    key = f"{set_name}-{st.st_size:x}-{int(st.st_mtime):x}"
    home = cache_dir() / "qemu-historic" / key
    dest = home / f"qemu-{set_name}"
    if not dest.is_dir():
        with _locked(home.parent / f"{key}.lock"):
            if not dest.is_dir():
                home.mkdir(parents=True, exist_ok=True)
                _unpack(bundle, dest)
    return _check_tree(release, dest, f"the cache {home}")


def historic_problem(release: str, *, builds_dir: str | Path | None = None) -> str | None:
    """Why the build of ``release`` cannot run here, or ``None``."""
    try:
        find_build(release, builds_dir=builds_dir)
    except HistoricUnavailable as e:
        return str(e)
    return None
