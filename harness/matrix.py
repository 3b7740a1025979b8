"""Matrix files: endpoints x endpoints x scenarios -> cells, with their expectations.

A matrix file (TOML) names its endpoints (``release/machine`` plus options: RAM, ``nic``,
``vga``; a ``+TAG`` after the name tells apart two endpoints of one machine type with
other options, as in ``0.14/pc+matched``), the
scenarios (with seeds where they take one), ordered expectation rules over pairs with
wildcards (the first rule that matches a cell sets its expected verdicts), and
``known_issue`` notes on cells. See ``matrix/default.toml`` for a commented example.
A malformed file raises :class:`MatrixError` naming the file, the key and what was
expected.

The matrices of ``matrix/`` ship with the package (a wheel holds them as
``harness/matrices/``): :func:`resolve_matrix` finds one by name (``default``), so that
``migmatrix run --matrix default`` works from any directory; a path still works.
"""

from __future__ import annotations

import fnmatch
import functools
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .emulator.errors import ConfigError
from .emulator.machine import DEFAULT_RAM_SIZE, NICS, VGAS, parse_size
from .emulator.releases import RELEASES, parse_endpoint
from .scenarios import catalogue, lookup
from .shards import shard_of
from .verdict import NEVER_ACCEPTABLE, Verdict

__all__ = ["Cell", "Endpoint", "KnownIssue", "Matrix", "MatrixError", "Rule", "load_matrix",
           "matrix_ref", "resolve_matrix", "shipped_matrices"]

DEFAULT_TIME_LIMIT = 60.0
QEMU_DEFAULT_RAM = 64 << 20
QEMU_TRANSPORTS = ("unix", "tcp", "exec")
KINDS = ("emulator", "qemu")
MIXED_PAIRS = ("all", "mirror", "none")
DEFAULTS_KEYS = frozenset({"ram", "nic", "time_limit", "driver", "binary", "transport", "historic_dir",
                           "mixed_pairs"})
SCENARIOS_KEYS = frozenset({"include", "seeds"})

# Where the shipped matrices are: inside an installed wheel, and in a source checkout
# (an editable install, or running from the tree).
_PACKAGE = Path(__file__).resolve().parent
MATRIX_DIRS = (_PACKAGE / "matrices", _PACKAGE.parent / "matrix")


class MatrixError(Exception):
    """A matrix file that cannot be used: which file, which key, what was expected."""

    def __init__(self, path: str | Path, key: str, expected: str) -> None:
        self.path, self.key, self.expected = str(path), key, expected
        super().__init__(f"{path}: {key}: {expected}")


@dataclass(frozen=True)
class Endpoint:
    name: str  # "0.14/pc"
    release: str
    machine: str
    ram_size: int = DEFAULT_RAM_SIZE
    options: tuple[tuple[str, Any], ...] = ()
    # -net: e1000 | rtl8139 | none; "" is the release's own NIC, as without -net options
    # (e1000; rtl8139 on RHEL 6), as a matrix file's default is.
    nic: str = ""
    vga: str = "cirrus"  # -vga: cirrus | none
    # A real QEMU endpoint (kind "qemu"): the binary (a path or a name on PATH) or a
    # container image holding one, and extra command-line arguments.
    kind: str = "emulator"
    binary: str | None = None
    image: str | None = None
    args: tuple[str, ...] = ()
    transport: str = "unix"  # how a QEMU destination listens: unix, tcp or exec (a file)
    # A real build of a modelled release (``qemu-0.14/pc``: ``release`` is the model's
    # name, the build comes from harness.qemu.historic, or from ``historic_dir``).
    historic: bool = False
    historic_dir: str | None = None

    def __post_init__(self) -> None:
        if not self.nic:
            release = RELEASES.get(self.release)  # today's QEMU: no NIC option of ours
            object.__setattr__(self, "nic", release.default_nic if release else "e1000")

    @property
    def catalogue(self) -> str:
        """Which scenario catalogue applies: ``emulator``, ``qemu`` or ``historic``."""
        return "historic" if self.historic else self.kind

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "endpoint": self.name,
            "release": self.release,
            "machine": self.machine,
            "ram_size": self.ram_size,
        }
        if self.kind == "emulator" or self.historic:
            out.update(nic=self.nic, vga=self.vga)
        if self.kind != "emulator":
            out.update(kind=self.kind, binary=self.binary, image=self.image,
                       args=list(self.args), transport=self.transport)
        if self.historic:
            out.update(historic=True, historic_dir=self.historic_dir)
        return out


Patterns = tuple[str, ...]  # globs; a value matches when any of them does


def _match(value: str, patterns: Patterns) -> bool:
    return any(fnmatch.fnmatchcase(value, p) for p in patterns)


def _show(patterns: Patterns) -> str:
    return ",".join(patterns)


@dataclass(frozen=True)
class Rule:
    index: int
    source: Patterns
    destination: Patterns
    scenario: Patterns
    verdicts: tuple[str, ...]
    note: str = ""

    def matches(self, source: str, destination: str, scenario: str) -> bool:
        return (
            _match(source, self.source)
            and _match(destination, self.destination)
            and _match(scenario, self.scenario)
        )

    def describe(self) -> str:
        text = (
            f"rule {self.index}: source={_show(self.source)} "
            f"destination={_show(self.destination)} scenario={_show(self.scenario)} "
            f"-> {'|'.join(self.verdicts)}"
        )
        return f"{text} ({self.note})" if self.note else text


@dataclass(frozen=True)
class KnownIssue:
    source: Patterns
    destination: Patterns
    scenario: Patterns
    text: str
    link: str | None = None

    def matches(self, source: str, destination: str, scenario: str) -> bool:
        return (
            _match(source, self.source)
            and _match(destination, self.destination)
            and _match(scenario, self.scenario)
        )

    def to_dict(self) -> dict[str, Any]:
        return {"text": self.text, "link": self.link}


@dataclass(frozen=True)
class Cell:
    source: Endpoint
    destination: Endpoint
    scenario: str
    seed: int
    expected: tuple[str, ...]
    rule: str
    known_issue: KnownIssue | None = None
    time_limit: float = DEFAULT_TIME_LIMIT

    @property
    def id(self) -> str:
        tag = f"{self.scenario}:{self.seed}" if lookup(self.scenario).seeded else self.scenario
        return f"{self.source.name}->{self.destination.name}[{tag}]"


@dataclass
class Matrix:
    name: str
    path: str
    description: str
    endpoints: list[Endpoint]
    scenarios: list[tuple[str, tuple[int, ...]]]
    rules: list[Rule]
    known_issues: list[KnownIssue]
    time_limit: float = DEFAULT_TIME_LIMIT
    driver: str = "inprocess"
    excluded: list[tuple[str, str]] = field(default_factory=list)
    # Which model <-> real pairs a matrix with both runs: "all", "mirror" (a model endpoint
    # faces only the real build of its own release and machine type) or "none".
    mixed_pairs: str = "all"

    def cells(self, *, shard: tuple[int, int] | None = None) -> list[Cell]:
        """Every cell, in a stable order; with ``shard=(i, n)`` the i-th of n slices."""
        out: list[Cell] = []
        self.excluded = []
        for src in self.endpoints:
            for dst in self.endpoints:
                for scenario, seeds in self.scenarios:
                    why = self._why_not_mixed(src, dst) or why_excluded(src, dst, scenario)
                    for seed in seeds:
                        cell = self._cell(src, dst, scenario, seed)
                        if why:
                            self.excluded.append((cell.id, why))
                            continue
                        out.append(cell)
        if shard is not None:
            index, count = shard
            out = [c for c in out if shard_of(c.id, count) == index]
        return out

    def _why_not_mixed(self, src: Endpoint, dst: Endpoint) -> str | None:
        if src.historic == dst.historic or "emulator" not in (src.kind, dst.kind):
            return None
        if self.mixed_pairs == "none":
            return "mixed_pairs = \"none\": model and real endpoints do not face each other"
        if self.mixed_pairs == "mirror" and (src.release, src.machine, src.ram_size, src.nic,
                                             src.vga) != \
                (dst.release, dst.machine, dst.ram_size, dst.nic, dst.vga):
            return ("mixed_pairs = \"mirror\": a model endpoint faces only the real build of "
                    "its own release and machine type, with the same NIC and VGA")
        return None

    def _cell(self, src: Endpoint, dst: Endpoint, scenario: str, seed: int) -> Cell:
        # A scenario pattern may also name one seed: "random:2".
        tag = f"{scenario}:{seed}"
        for rule in self.rules:
            if rule.matches(src.name, dst.name, scenario) or rule.matches(src.name, dst.name, tag):
                expected, rule_text = rule.verdicts, rule.describe()
                break
        else:
            expected, rule_text = ("pass",), "no rule matched: pass expected"
        issue = next(
            (
                k for k in self.known_issues
                if k.matches(src.name, dst.name, scenario) or k.matches(src.name, dst.name, tag)
            ),
            None,
        )
        return Cell(src, dst, scenario, seed, expected, rule_text, issue, self.time_limit)


def why_excluded(src: Endpoint, dst: Endpoint, scenario: str) -> str | None:
    """Why the pair cannot run ``scenario``, or ``None``. Model endpoints talk to each
    other and to real builds of the releases they model; today's QEMU only to itself."""
    from .emulator.releases import get_release

    cats = {src.catalogue, dst.catalogue}
    if "qemu" in cats and cats != {"qemu"}:
        return f"a {src.catalogue} endpoint cannot migrate to a {dst.catalogue} endpoint"
    if "historic" in cats:
        from .qemu.historic_scenarios import why_not_historic  # (and asyncio: only here)

        why = why_not_historic(scenario)
        if why:
            return f"no real guest reaches it: {why}"
    if "emulator" in cats:
        entry = catalogue("emulator").get(scenario)
        if entry is None:
            owner = "qemu" if scenario in catalogue("qemu") else "real historic"
            return f"the scenario is for {owner} endpoints: the model has no recipe for it"
    if src.catalogue == "emulator":
        missing = entry.missing_on(get_release(src.release))
        if missing:
            return f"{src.release} cannot express it: no {', '.join(sorted(missing))}"
    elif src.catalogue == "qemu" and scenario not in catalogue("qemu"):
        return "a scenario of the model; real QEMU endpoints have their own"
    return None


# -- loading ---------------------------------------------------------------------------


def _get(table: dict[str, Any], key: str, kind: type | tuple[type, ...], path: Path,
         where: str, default: Any = ...) -> Any:
    if key not in table:
        if default is ...:
            raise MatrixError(path, f"{where}{key}", "is required")
        return default
    value = table[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise MatrixError(path, f"{where}{key}", f"expected {names}, got {value!r}")
    return value


def _patterns(table: dict[str, Any], key: str, path: Path, where: str) -> Patterns:
    value = table.get(key, "*")
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise MatrixError(path, f"{where}{key}", "expected a glob or a non-empty list of globs")
    return tuple(value)


def _verdicts(value: Any, path: Path, key: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value:
        raise MatrixError(path, key, "expected a verdict or a non-empty list of verdicts")
    known = {v.value for v in Verdict}
    for v in value:
        if v not in known:
            raise MatrixError(path, key, f"unknown verdict {v!r} (known: {', '.join(sorted(known))})")
        if Verdict(v) in NEVER_ACCEPTABLE:
            raise MatrixError(
                path, key,
                f"{v!r} is never acceptable; record the cell as a known_issue instead",
            )
    return tuple(value)


def _check_keys(table: Any, known: set[str], path: Path, where: str) -> None:
    if not isinstance(table, dict):
        raise MatrixError(path, where.rstrip("."), "expected a table")
    for key in table:
        if key not in known:
            raise MatrixError(path, f"{where}{key}", f"unknown key (known: {', '.join(sorted(known))})")


def shipped_matrices() -> dict[str, Path]:
    """The matrices that come with migmatrix, by name (``default``, ``history``, ...)."""
    found: dict[str, Path] = {}
    for folder in MATRIX_DIRS:
        if folder.is_dir():
            for p in sorted(folder.glob("*.toml")):
                found.setdefault(p.stem, p)
    return found


def resolve_matrix(ref: str | Path) -> Path:
    """A matrix file from ``--matrix``: an existing path, else a shipped matrix by name
    (``default`` or ``default.toml``). Raises :class:`MatrixError` naming both."""
    path = Path(ref)
    if path.exists():
        return path
    shipped = shipped_matrices()
    name = path.name.removesuffix(".toml")
    if path.parent == Path(".") and name in shipped:
        return shipped[name]
    raise MatrixError(path, "(file)", "no such file, and no shipped matrix of that name "
                      f"(shipped: {', '.join(shipped) or 'none'})")


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise MatrixError(path, "(file)", "no such file") from None
    except OSError as e:
        raise MatrixError(path, "(file)", f"a readable file ({e.strerror or e})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise MatrixError(path, "(file)", f"not UTF-8 text: byte 0x{raw[e.start]:02x} at "
                          f"offset {e.start}") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise MatrixError(path, "(syntax)", f"valid TOML ({e})") from None


def _time_limit(defaults: dict[str, Any], path: Path) -> float:
    value = float(_get(defaults, "time_limit", (int, float), path, "defaults.",
                       DEFAULT_TIME_LIMIT))
    if not math.isfinite(value) or value <= 0:
        raise MatrixError(path, "defaults.time_limit",
                          f"a positive number of seconds, got {value:g}")
    return value


def _driver(defaults: dict[str, Any], path: Path) -> str:
    from .drivers import DRIVERS  # the registry; drivers import this module at their top

    driver = _get(defaults, "driver", str, path, "defaults.", "inprocess")
    if driver not in DRIVERS:
        raise MatrixError(path, "defaults.driver",
                          f"one of {', '.join(DRIVERS)}, got {driver!r}")
    return driver


@functools.lru_cache(maxsize=16)
def matrix_ref(path: str | Path) -> str:
    """How to name a matrix on a command line: its name if it is a shipped one (the same
    file, or a copy of it: a checkout's matrix/ beside an installed package)."""
    p = Path(path)
    shipped = shipped_matrices().get(p.stem)
    try:
        if shipped is not None and shipped.read_bytes() == p.read_bytes():
            return p.stem
    except OSError:
        pass
    return str(path)


def load_matrix(ref: str | Path) -> Matrix:
    """The matrix at ``ref``: a path, or the name of a shipped matrix."""
    path = resolve_matrix(ref)
    data = _read_toml(path)

    known_top = {"name", "description", "defaults", "endpoint", "scenarios", "expect",
                 "known_issue"}  # fmt: skip
    for key in data:
        if key not in known_top:
            raise MatrixError(path, key, f"unknown key (known: {', '.join(sorted(known_top))})")

    name = _get(data, "name", str, path, "", path.stem)
    description = _get(data, "description", str, path, "", "")
    defaults = _get(data, "defaults", dict, path, "", {})
    _check_keys(defaults, DEFAULTS_KEYS, path, "defaults.")
    time_limit = _time_limit(defaults, path)
    driver = _driver(defaults, path)
    mixed_pairs = _get(defaults, "mixed_pairs", str, path, "defaults.", "all")
    if mixed_pairs not in MIXED_PAIRS:
        raise MatrixError(path, "defaults.mixed_pairs",
                          f"one of {', '.join(MIXED_PAIRS)}, got {mixed_pairs!r}")
    default_ram = _get(defaults, "ram", (str, int), path, "defaults.", DEFAULT_RAM_SIZE)
    default_nic = _get(defaults, "nic", str, path, "defaults.", None)
    default_vga = _get(defaults, "vga", str, path, "defaults.", "cirrus")

    endpoints: list[Endpoint] = []
    raw_endpoints = _get(data, "endpoint", list, path, "")
    if not raw_endpoints:
        raise MatrixError(path, "endpoint", "at least one [[endpoint]]")
    for i, ep in enumerate(raw_endpoints):
        where = f"endpoint[{i}]."
        if not isinstance(ep, dict):
            raise MatrixError(path, f"endpoint[{i}]", "expected a table")
        kind = _get(ep, "kind", str, path, where, "emulator")
        if kind not in KINDS:
            raise MatrixError(path, f"{where}kind", f"one of {', '.join(KINDS)}, got {kind!r}")
        if kind == "qemu":
            endpoints.append(_qemu_endpoint(ep, path, where, defaults))
            continue
        if "driver" in ep:
            raise MatrixError(path, f"{where}driver", "no per-endpoint driver: a run has one "
                              "driver ([defaults] driver, or --driver)")
        _check_keys(ep, {"name", "ram", "kind", "nic", "vga"}, path, where)
        ep_name = _get(ep, "name", str, path, where)
        try:
            release, machine = parse_endpoint(ep_name.partition("+")[0])
            ram = parse_size(_get(ep, "ram", (str, int), path, where, default_ram))
        except ConfigError as e:
            raise MatrixError(path, f"{where}name", str(e)) from None
        nic, vga = _devices(ep, path, where, default_nic, default_vga, release.default_nic)
        endpoints.append(Endpoint(ep_name, release.name,
                                  ep_name.partition("+")[0].partition("/")[2], ram,
                                  nic=nic, vga=vga))
    names = [e.name for e in endpoints]
    if len(set(names)) != len(names):
        raise MatrixError(path, "endpoint", "endpoint names must be unique")

    # The catalogues of the endpoint kinds in this matrix: "*" in an emulator matrix
    # means every emulator scenario, in a QEMU matrix every QEMU scenario.
    SCENARIOS: dict[str, Any] = {}
    for kind in dict.fromkeys(e.catalogue for e in endpoints):
        for scenario_name, entry in catalogue(kind).items():
            SCENARIOS.setdefault(scenario_name, entry)
    sc = _get(data, "scenarios", dict, path, "", {})
    _check_keys(sc, SCENARIOS_KEYS, path, "scenarios.")
    include = _get(sc, "include", list, path, "scenarios.", ["*"])
    seeds_table = _get(sc, "seeds", dict, path, "scenarios.", {})
    scenarios: list[tuple[str, tuple[int, ...]]] = []
    for pattern in include:
        matched = [s for s in SCENARIOS if fnmatch.fnmatchcase(s, str(pattern))]
        if not matched:
            raise MatrixError(
                path, "scenarios.include", f"{pattern!r} matches no scenario "
                f"(known: {', '.join(SCENARIOS)})",
            )
        for s in matched:
            if s not in (n for n, _ in scenarios):
                seeds = seeds_table.get(s, [0])
                if not isinstance(seeds, list) or not all(isinstance(x, int) for x in seeds):
                    raise MatrixError(path, f"scenarios.seeds.{s}", "expected a list of integers")
                scenarios.append((s, tuple(seeds) if SCENARIOS[s].seeded else (0,)))
    for s in seeds_table:
        if s not in SCENARIOS:
            raise MatrixError(path, f"scenarios.seeds.{s}", "an unknown scenario")

    rules: list[Rule] = []
    for i, raw in enumerate(_get(data, "expect", list, path, "", [])):
        where = f"expect[{i}]."
        _check_keys(raw, {"source", "destination", "scenario", "verdicts", "note"}, path, where)
        rules.append(
            Rule(
                i + 1,
                _patterns(raw, "source", path, where),
                _patterns(raw, "destination", path, where),
                _patterns(raw, "scenario", path, where),
                _verdicts(raw.get("verdicts"), path, f"{where}verdicts"),
                _get(raw, "note", str, path, where, ""),
            )
        )

    issues: list[KnownIssue] = []
    for i, raw in enumerate(_get(data, "known_issue", list, path, "", [])):
        where = f"known_issue[{i}]."
        _check_keys(raw, {"source", "destination", "scenario", "text", "link"}, path, where)
        issue = KnownIssue(
            _patterns(raw, "source", path, where),
            _patterns(raw, "destination", path, where),
            _patterns(raw, "scenario", path, where),
            _get(raw, "text", str, path, where),
            _get(raw, "link", str, path, where, None),
        )
        for pattern in issue.scenario:
            if not any(fnmatch.fnmatchcase(s, pattern.partition(":")[0]) for s in SCENARIOS):
                raise MatrixError(path, f"{where}scenario", f"{pattern!r} matches no scenario")
        issues.append(issue)

    return Matrix(name, str(path), description, endpoints, scenarios, rules, issues,
                  time_limit, driver, mixed_pairs=mixed_pairs)


def _devices(ep: dict[str, Any], path: Path, where: str, default_nic: str | None,
             default_vga: str, release_nic: str) -> tuple[str, str]:
    """An endpoint's ``nic`` (default: the release's, as without -net options) and ``vga``."""
    nic = _get(ep, "nic", str, path, where, default_nic) or release_nic
    if nic not in NICS:
        raise MatrixError(path, f"{where}nic", f"one of {', '.join(NICS)}, got {nic!r}")
    vga = _get(ep, "vga", str, path, where, default_vga)
    if vga not in VGAS:
        raise MatrixError(path, f"{where}vga", f"one of {', '.join(VGAS)}, got {vga!r}")
    return nic, vga


def _qemu_endpoint(ep: dict[str, Any], path: Path, where: str,
                   defaults: dict[str, Any]) -> Endpoint:
    """``[[endpoint]] kind = "qemu"``: ``name = "LABEL/MACHINE"``, ``binary`` (default
    qemu-system-x86_64) or ``image`` (a container image holding it), ``machine`` (default:
    the part of the name after the first ``/``), ``args``, ``ram``, ``transport``.

    A label ``qemu-RELEASE`` naming a release the emulator core models (``qemu-0.14``,
    ``qemu-new``, ``qemu-1.0``, ...) is the real build of that release
    (:mod:`harness.qemu.historic`); ``historic_dir`` (here or in ``[defaults]``) names a
    folder of the user's own ``qemu-SET/`` builds instead of the bundles."""
    from .qemu.historic import BUNDLE_SETS

    _check_keys(ep, {"name", "kind", "binary", "image", "machine", "args", "ram",
                     "transport", "historic_dir", "nic", "vga"}, path, where)
    name = _get(ep, "name", str, path, where)
    label, slash, rest = name.partition("/")
    if not label or not slash or not rest:
        raise MatrixError(path, f"{where}name", f"expected LABEL/MACHINE, got {name!r}")
    machine = _get(ep, "machine", str, path, where, rest.partition("+")[0])
    args = _get(ep, "args", list, path, where, [])
    if not all(isinstance(a, str) for a in args):
        raise MatrixError(path, f"{where}args", "expected a list of strings")
    try:
        ram = parse_size(_get(ep, "ram", (str, int), path, where,
                              _get(defaults, "ram", (str, int), path, "defaults.",
                                   QEMU_DEFAULT_RAM)))
    except ConfigError as e:
        raise MatrixError(path, f"{where}ram", str(e)) from None
    release = label.removeprefix("qemu-")
    if label.startswith("qemu-") and release in BUNDLE_SETS:
        for key in ("binary", "image", "transport"):
            if key in ep:
                raise MatrixError(path, f"{where}{key}", "not for a historic build (the "
                                  "build comes from the bundles or historic_dir; the stream "
                                  "always goes through this process over unix sockets)")
        historic_dir = _get(ep, "historic_dir", str, path, where,
                            _get(defaults, "historic_dir", str, path, "defaults.", None))
        if historic_dir is not None and not Path(historic_dir).is_absolute():
            historic_dir = str((path.parent / historic_dir).resolve())
        from .emulator.releases import get_release

        nic, vga = _devices(ep, path, where, _get(defaults, "nic", str, path, "defaults.", None),
                            _get(defaults, "vga", str, path, "defaults.", "cirrus"),
                            get_release(release).default_nic)
        return Endpoint(name, release, machine, ram, (), kind="qemu", args=tuple(args),
                        historic=True, historic_dir=historic_dir, nic=nic, vga=vga)
    for key in ("historic_dir", "nic", "vga"):
        if key in ep:
            raise MatrixError(path, f"{where}{key}", "only for historic builds (labels "
                              f"qemu-{'/qemu-'.join(BUNDLE_SETS)}); pass args instead")
    image = _get(ep, "image", str, path, where, None)
    binary = _get(ep, "binary", str, path, where,
                  _get(defaults, "binary", str, path, "defaults.", "qemu-system-x86_64"))
    transport = _get(ep, "transport", str, path, where,
                     _get(defaults, "transport", str, path, "defaults.", "unix"))
    if transport not in QEMU_TRANSPORTS:
        raise MatrixError(path, f"{where}transport",
                          f"one of {', '.join(QEMU_TRANSPORTS)}, got {transport!r}")
    return Endpoint(name, label, machine, ram, (), kind="qemu", binary=binary, image=image,
                    args=tuple(args), transport=transport)
