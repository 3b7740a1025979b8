"""Schemas of modelled endpoints: dump, diff, and a prediction of each cell's verdicts.

:func:`dump` is every section of a (release, machine) with its description tree (versions,
fields with sizes, subsections, embedded structs inline), plus what decides how the
endpoint reads a stream (peek policy, stream format, accepted file versions).

:func:`diff` compares a source's schema with a destination's and returns one
:class:`Problem` per incompatibility, with a severity:

* ``error``: the migration always fails or may silently misparse (section missing,
  version out of range, field layout changed, stream format refused, a subsection on an
  embedded struct that the destination would read as parent data);
* ``warning``: the destination refuses cleanly when the guest state sends something
  (a subsection it does not know, and the always-peek hazards: sibling subsections and
  subsections after a trailing embedded struct array, the cpu's ymmh_regs case);
* ``info``: harmless (a renamed field with the same bytes, a changed variant).

:func:`predict` turns the diff plus what a scenario actually sends (its subsections, and
parent bytes 0x05 right after an embedded struct) into the set of verdicts a cell may
have; :func:`predict_cell` does it for a matrix cell (the runner stores it as
``prediction``).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import re
import sys
from dataclasses import dataclass
from typing import Any

from .emulator import faults
from .emulator.devices.pci import PCIConfig, read_only_difference
from .emulator.errors import SaveCrash
from .emulator.machine import NICS, VGAS, Machine
from .emulator.releases import RELEASES
from .emulator.vmstate import Description, Struct, StructArray

__all__ = [
    "SCHEMA_DUMP",
    "Prediction",
    "Problem",
    "configure_parser",
    "diff",
    "dump",
    "load_schema",
    "predict",
    "predict_cell",
    "scenario_facts",
]

SCHEMA_DUMP = "migmatrix/schema/2"  # 2: RAM blocks, PCI config spaces, NIC and VGA
_OLDER_DUMPS = ("migmatrix/schema/1",)  # read; the checks of what they lack are skipped
SEVERITIES = ("error", "warning", "info")
_MISPARSE = ("corrupted", "truncated", "rejected")


# ---------------------------------------------------------------------------- dump


def describe_tree(desc: Description) -> dict[str, Any]:
    """``Description.describe()`` with embedded struct descriptions inline."""
    out = desc.describe()
    fields = []
    for f, info in zip(desc.fields, out["fields"], strict=True):
        if isinstance(f, (Struct, StructArray)):
            info = {**info, "struct": describe_tree(f.desc), "embedded": True}
        fields.append(info)
    out["fields"] = fields
    out["subsections"] = [describe_tree(s.desc) for s in desc.subsections]
    out["size"] = _fixed_size(out)
    return out


def _fixed_size(tree: dict[str, Any]) -> int | None:
    """Bytes of the fields at the description's own version, None if variable."""
    total = 0
    for f in _present(tree, tree["version_id"]):
        if "struct" in f:
            inner = f["struct"].get("size")
            if inner is None:
                return None
            total += inner * int(f.get("count") or 1)
        elif f.get("size") is None or f.get("conditional"):
            return None
        else:
            total += int(f["size"])
    return total


def dump(release: str, machine: str = "pc", nic: str | None = None,
         vga: str = "cirrus") -> dict[str, Any]:
    """The schema of ``release``/``machine`` started with the NIC ``nic`` (None: the
    release's) and the display ``vga``, as plain JSON-able data."""
    m = Machine(release, machine, 4096 * 4, nic=nic, vga=vga)
    rel = m.release
    sections = []
    for h in m.handlers():
        entry: dict[str, Any] = {"idstr": h.idstr, "instance_id": h.instance_id,
                                 "version_id": h.version_id, "live": bool(h.live)}
        if getattr(h, "alias_id", None) is not None:
            entry["alias_id"] = h.alias_id
        if getattr(h, "compat", None) is not None:
            entry["compat"] = list(h.compat)
        if getattr(h, "desc", None) is not None:
            entry["description"] = describe_tree(h.desc)
            pci = _pci_function(h.desc, h.obj)
            if pci is not None:
                entry["pci"] = pci
        sections.append(entry)
    return {
        "schema": SCHEMA_DUMP,
        "release": rel.name,
        "machine": m.machine_type.name,
        "endpoint": f"{rel.name}/{machine}",
        "peek": rel.peek.value,
        "stream_format": m.stream_format,
        "accepted_versions": sorted(rel.accepted_versions),
        "format_per_machine": rel.format_per_machine,
        "variants": dict(rel.variants),
        "nic": m.nic,
        "vga": m.vga,
        # RAM blocks by name and length (pc.ram's is the endpoint's RAM size: left out)
        "ram": {"version": m.ram.handler.version_id,
                "blocks": [{"name": b.idstr, "length": None if b.idstr == "pc.ram"
                            else len(b)} for b in m.ram]},
        "sections": sections,
    }


def _pci_function(desc: Description, obj: Any) -> dict[str, Any] | None:
    """The power-on config space of a section's PCI function and the masks its load
    compares with (hex): the bytes a guest cannot change, which a destination whose own
    differ refuses, whatever the scenario."""
    for f in desc.fields:
        if isinstance(f, Struct) and any(isinstance(x, PCIConfig) for x in f.desc.fields):
            dev = f.get(obj)
            return {"path": f.path, "config": bytes(dev.config).hex(),
                    "cmask": bytes(dev.cmask).hex(), "wmask": bytes(dev.wmask).hex(),
                    "w1cmask": bytes(dev.w1cmask).hex()}
    return None


def load_schema(spec: str, nic: str | None = None, vga: str = "cirrus") -> dict[str, Any]:
    """A schema from an endpoint ``R/M`` (or ``R``, started with ``nic`` and ``vga``) or
    from a dump file."""
    if os.path.exists(spec) or spec.endswith(".json"):
        try:
            with open(spec, encoding="utf-8") as f:
                data = json.load(f)
        except ValueError as e:  # not UTF-8, not JSON
            raise ValueError(f"{spec}: not a schema dump ({SCHEMA_DUMP}): {e}") from None
        if not isinstance(data, dict) or data.get("schema") not in (SCHEMA_DUMP,
                                                                     *_OLDER_DUMPS):
            raise ValueError(f"{spec}: not a schema dump ({SCHEMA_DUMP})")
        if data["schema"] != SCHEMA_DUMP:
            print(f"migmatrix: {spec} is a {data['schema']} dump: it has no RAM blocks or "
                  "PCI config spaces, so those are not compared", file=sys.stderr)
        return data
    release, _, machine = spec.partition("/")
    return dump(release, machine or "pc", nic, vga)


# ---------------------------------------------------------------------------- diff


@dataclass(frozen=True)
class Problem:
    severity: str  # error | warning | info
    kind: str
    where: str
    message: str
    subsection: str | None = None
    order: int = -1  # where the stream reaches it: its section's place in sending order

    def to_dict(self) -> dict[str, Any]:
        return {"severity": self.severity, "kind": self.kind, "where": self.where,
                "message": self.message, "subsection": self.subsection, "order": self.order}

    def line(self) -> str:
        return f"{self.severity:<7} {self.kind:<22} {self.where}: {self.message}"


def _present(tree: dict[str, Any], version: int) -> list[dict[str, Any]]:
    """Fields read or written at ``version`` (conditional fields included)."""
    return [f for f in tree["fields"]
            if f.get("conditional") or int(f.get("version_id") or 0) <= version]


def _layout(f: dict[str, Any]) -> tuple[Any, ...]:
    if "struct" in f:
        return ("struct", f["struct"]["name"], f.get("count"))
    return (f.get("kind"), f.get("size"))


def _fate(dst_level: dict[str, Any] | None, name: str, embedded: bool, dst: dict[str, Any],
          after_struct_array: bool) -> tuple[str, str]:
    """What the destination does with subsection ``name`` at a level: ``ok``,
    ``refused`` (clean, ENOENT or an unknown type byte) or ``misparse`` (silent)."""
    peek = dst["peek"]
    sentinel = dst["stream_format"] == 4
    known = [s["name"] for s in (dst_level or {}).get("subsections", [])]
    level_name = (dst_level or {}).get("name", "?")
    if peek == "always-peek" and after_struct_array and not sentinel:
        return "refused", (f"the last field is an embedded struct array: under always-peek "
                           f"its element's own (empty) subsection list is searched first "
                           f"and {name!r} is not found (ENOENT)")
    if name in known:
        return "ok", ""
    if peek == "peek-if-defined" and not known:
        if embedded:
            return "misparse", (f"{level_name} defines no subsections there and "
                                f"peek-if-defined never looks: the subsection header is "
                                f"read as the parent's next fields (silent misparse)")
        return "refused", "read as an unknown section type 0x05 (EINVAL)"
    if peek == "prefix-match" and not name.startswith(level_name):
        if embedded:
            return "misparse", (f"{name!r} does not start with {level_name!r}: prefix-match "
                                f"leaves it to the parent as data (silent misparse)")
        return "refused", "read as an unknown section type 0x05 (EINVAL)"
    return "refused", (f"{level_name} defines {', '.join(known) or 'no subsections'}: "
                       f"unknown name, clean refusal (ENOENT)")


def _find_section(sections: list[dict[str, Any]], idstr: str, instance: int
                  ) -> dict[str, Any] | None:
    """The destination section a header names, as QEMU's find_se matches it: its own
    instance or its alias, or (a qdev section with a device path) its bare compat name."""
    for d in sections:
        alias = d.get("alias_id")
        if d["idstr"] == idstr and instance in (d["instance_id"], alias):
            return d
        compat = d.get("compat")
        if compat and idstr in d["idstr"] and compat[0] == idstr and instance in (compat[1],
                                                                                 alias):
            return d
    return None


class _Differ:
    def __init__(self, src: dict[str, Any], dst: dict[str, Any]) -> None:
        self.src, self.dst = src, dst
        self.problems: list[Problem] = []
        # Sending order: the live sections' first passes, then every device in turn.
        sent = sorted(src["sections"], key=lambda s: not s["live"])
        self.place = {id(s): k for k, s in enumerate(sent)}
        self.order = -1  # the header's

    def add(self, severity: str, kind: str, where: str, message: str,
            subsection: str | None = None) -> None:
        self.problems.append(Problem(severity, kind, where, message, subsection, self.order))

    def run(self) -> list[Problem]:
        src, dst = self.src, self.dst
        fmt = src["stream_format"]
        if fmt not in dst["accepted_versions"]:
            self.add("error", "stream-format", "header",
                     f"the source writes file version {fmt}; the destination accepts "
                     f"{', '.join(map(str, dst['accepted_versions']))} (unsupported version)")
        elif dst["format_per_machine"] and fmt != dst["stream_format"]:
            self.add("error", "stream-format", "header",
                     f"the source writes file version {fmt}; machine {dst['machine']} "
                     f"requires {dst['stream_format']} (mismatching savevm format)")
        for key in sorted(set(src.get("variants", {})) | set(dst.get("variants", {}))):
            a, b = src.get("variants", {}).get(key), dst.get("variants", {}).get(key)
            if a != b:
                self.add("info", "variant", key, f"{a} -> {b}")
        matched: set[int] = set()
        for s in src["sections"]:
            self.order = self.place[id(s)]
            where = s["idstr"] if not s["instance_id"] else f"{s['idstr']}@{s['instance_id']:#x}"
            d = _find_section(dst["sections"], s["idstr"], s["instance_id"])
            if d is not None:
                matched.add(id(d))
            if d is None:
                self.add("error", "section-missing", where,
                         "the destination has no such section or instance (unknown section)")
                continue
            if s["version_id"] > d["version_id"]:
                self.add("error", "version-too-new", where,
                         f"stream version {s['version_id']} > destination's {d['version_id']}")
                continue
            st, dt = s.get("description"), d.get("description")
            if st is None or dt is None:
                continue
            if s["version_id"] < dt["minimum_version_id_old"]:
                self.add("error", "version-too-old", where,
                         f"stream version {s['version_id']} < destination's minimum "
                         f"{dt['minimum_version_id_old']}")
                continue
            if s["version_id"] < dt["minimum_version_id"]:
                self.add("info", "load-state-old", where,
                         f"stream version {s['version_id']} < {dt['minimum_version_id']}: "
                         "loaded by the old-version hook")
            self.level(where, st, dt, s["version_id"], s["version_id"], embedded=False)
            self.pci(where, s.get("pci"), d.get("pci"))
        self.order = next((self.place[id(s)] for s in src["sections"] if s["idstr"] == "ram"),
                          -1)
        self.ram_blocks(src.get("ram"), dst.get("ram"))
        self.order = len(self.place)
        for d in dst["sections"]:
            if id(d) not in matched:
                where = d["idstr"] if not d["instance_id"] else f"{d['idstr']}@{d['instance_id']:#x}"
                self.add("info", "section-not-sent", where,
                         "the source never sends it: the destination keeps its reset state")
        return self.problems

    def ram_blocks(self, sr: dict[str, Any] | None, dr: dict[str, Any] | None) -> None:
        """Version 4 lists the source's blocks by name and length: a destination without
        one of them, or with another length, refuses the stream (it may have more)."""
        if sr is None or dr is None or sr["version"] < 4 or dr["version"] < 4:
            return
        mine = {b["name"]: b["length"] for b in dr["blocks"]}
        for b in sr["blocks"]:
            if b["name"] not in mine:
                self.add("error", "ram-block-missing", f"ram/{b['name']}",
                         "the destination has no such RAM block (unknown RAM block)")
            elif b["length"] != mine[b["name"]]:
                self.add("error", "ram-block-size", f"ram/{b['name']}",
                         f"block of {b['length']} bytes, the destination's "
                         f"{mine[b['name']]} (RAM size mismatch)")

    def pci(self, where: str, sp: dict[str, Any] | None, dp: dict[str, Any] | None) -> None:
        """A PCI function whose read-only config bits differ is refused on every load."""
        if sp is None or dp is None:
            return
        problem = read_only_difference(*(bytes.fromhex(x) for x in (
            sp["config"], dp["config"], dp["cmask"], dp["wmask"], dp["w1cmask"])))
        if problem:
            self.add("error", "pci-read-only", f"{where}/{dp['path']}/config",
                     f"{problem} (invalid value)")

    def level(self, where: str, st: dict[str, Any], dt: dict[str, Any], sv: int, dv: int,
              *, embedded: bool, in_subsection: bool = False) -> None:
        sf, df = _present(st, sv), _present(dt, dv)
        self.fields(where, sf, df, in_subsection)
        by_name = {f["name"]: f for f in df}
        for f in sf:
            g = by_name.get(f["name"])
            if g is not None and "struct" in f and "struct" in g:
                sub = f"{where}/{f['name'].replace('.', '/')}" + ("[]" if f.get("count") else "")
                self.level(sub, f["struct"], g["struct"], f["struct"]["version_id"],
                           g["struct"]["version_id"], embedded=True)
        # Subsections the source may send at this level.
        after_array = bool(df) and "struct" in df[-1] and bool(df[-1].get("count"))
        src_subs = st.get("subsections", [])
        dst_subs = {s["name"]: s for s in dt.get("subsections", [])}
        for s in src_subs:
            fate, why = _fate(dt, s["name"], embedded, self.dst, after_array and bool(sf)
                              and "struct" in sf[-1] and bool(sf[-1].get("count")))
            if fate == "misparse":
                self.add("error", "subsection-misparse", where, f"{s['name']!r}: {why}",
                         s["name"])
            elif fate == "refused":
                kind = ("subsection-after-array" if "embedded struct array" in why
                        else "subsection-unknown")
                self.add("warning", kind, where, f"{s['name']!r} (when sent): {why}",
                         s["name"])
            else:
                d = dst_subs[s["name"]]
                if s["version_id"] > d["version_id"]:
                    self.add("warning", "subsection-version", where,
                             f"{s['name']!r} v{s['version_id']} > destination's "
                             f"v{d['version_id']} (when sent: refused)", s["name"])
                else:
                    self.level(f"{where}[{s['name']}]", s, d, s["version_id"], s["version_id"],
                               embedded=embedded, in_subsection=True)
        if self.dst["peek"] == "always-peek" and len(src_subs) >= 2:
            names = ", ".join(s["name"] for s in src_subs)
            self.add("warning", "subsection-siblings", where,
                     f"{names}: when two are sent together, always-peek searches the first "
                     f"one's (empty) list for the second: ENOENT")

    def fields(self, where: str, sf: list[dict[str, Any]], df: list[dict[str, Any]],
               in_subsection: bool) -> None:
        when = " (when the subsection is sent)" if in_subsection else ""
        if [_layout(f) for f in sf] == [_layout(f) for f in df]:
            for a, b in zip(sf, df, strict=True):
                if a["name"] != b["name"]:
                    self.add("info", "field-renamed", f"{where}/{a['name']}",
                             f"now {b['name']!r}; same position and size")
            return
        sn, dn = [f["name"] for f in sf], [f["name"] for f in df]
        s_by, d_by = {f["name"]: f for f in sf}, {f["name"]: f for f in df}
        for name in sn:
            if name not in d_by:
                self.add("error", "field-removed", f"{where}/{name}",
                         f"the source sends it ({s_by[name].get('size')} bytes), the "
                         f"destination does not read it{when}")
        for name in dn:
            if name not in s_by:
                self.add("error", "field-added", f"{where}/{name}",
                         f"the destination reads it ({d_by[name].get('size')} bytes), the "
                         f"source never sends it{when}")
        for name in sn:
            if name in d_by and _layout(s_by[name]) != _layout(d_by[name]):
                self.add("error", "field-resized", f"{where}/{name}",
                         f"{_layout(s_by[name])} -> {_layout(d_by[name])}{when}")
        common_s = [n for n in sn if n in d_by]
        common_d = [n for n in dn if n in s_by]
        if common_s != common_d:
            self.add("error", "field-reordered", where,
                     f"order {common_s} -> {common_d}{when}")


def diff(src: dict[str, Any], dst: dict[str, Any]) -> list[Problem]:
    """Every problem of migrating from schema ``src`` to schema ``dst``."""
    return _Differ(src, dst).run()


# ------------------------------------------------------------------------ predict


@dataclass(frozen=True)
class Prediction:
    verdicts: frozenset[str]
    reason: str

    def to_dict(self) -> dict[str, Any]:
        order = ("pass", "rejected", "corrupted", "truncated", "crashed")
        return {"verdicts": [v for v in order if v in self.verdicts], "reason": self.reason}


_INDEX = re.compile(r"\[\d+\]")


@functools.lru_cache(maxsize=256)
def _cached_facts(release: str, machine: str, ram_size: int, scenario: str,
                  seed: int, nic: str | None, vga: str, bug: str | None) -> dict[str, Any]:
    from .analyze import writer_analysis
    from .scenarios import saved_scenario

    # The same save and decode as the cell's own (each is kept for the next user).
    _, stream = saved_scenario(release, machine, ram_size, scenario, seed, nic=nic, vga=vga)
    a = writer_analysis(stream, release, machine)
    marks = [x for x in getattr(a, "tracer_marks", []) if x.kind != "struct"]
    structs = [x for x in getattr(a, "tracer_marks", []) if x.kind == "struct"]
    subs = [{"offset": x.offset, "path": x.path, "name": x.value}
            for x in marks if x.kind == "subsection"]
    starts = {x.offset: x for x in marks}
    collisions = []
    for s in structs:
        nxt = starts.get(s.end)
        if nxt is not None and nxt.kind == "field" and stream[s.end:s.end + 1] == b"\x05":
            collisions.append({"offset": s.end, "path": s.path,
                               "next": stream[s.end:s.end + 64].hex()})
    values = {x.path: x.value for x in marks if x.kind == "field" and isinstance(x.value, int)}
    return {"subsections": subs, "collisions": collisions, "values": values}


def scenario_facts(release: str, machine: str, scenario: str, seed: int = 0,
                   ram_size: int = 8 << 20, *, nic: str | None = None,
                   vga: str = "cirrus") -> dict[str, Any]:
    """What the source's stream of a scenario holds that matters to a destination: the
    subsections sent (offset, path, name) and parent bytes 0x05 right after an embedded
    struct element (collisions). Computed by saving and analysing the stream (cached)."""
    active = faults.active()  # a seeded bug changes what the source saves
    return _cached_facts(release, machine, ram_size, scenario, seed, nic, vga,
                         active.name if active else None)


def _level_of(schema: dict[str, Any], path: str) -> tuple[dict[str, Any] | None, bool, bool]:
    """The description at a concrete stream path (``idstr/bus[0]/ifs[1]``), whether it is
    embedded, and whether its last present field is an embedded struct array."""
    for s in schema["sections"]:
        idstr = s["idstr"]
        if path != idstr and not path.startswith(idstr + "/"):
            continue
        tree = s.get("description")
        if tree is None:
            return None, False, False
        rest = path[len(idstr) + 1:] if path != idstr else ""
        embedded = False
        while rest:
            match = None
            for f in tree["fields"]:
                if "struct" not in f:
                    continue
                fp = f["name"].replace(".", "/")
                pat = re.escape(fp) + (r"\[\d+\]" if f.get("count") else "")
                m = re.match(pat + r"(/|$)", rest)
                if m and (match is None or m.end() > match[2]):  # the longest name wins
                    match = (f, rest[m.end():], m.end())
            if match is None:
                return None, embedded, False
            tree, rest = match[0]["struct"], match[1]
            embedded = True
        pf = _present(tree, tree["version_id"])
        after = bool(pf) and "struct" in pf[-1] and bool(pf[-1].get("count"))
        return tree, embedded, after
    return None, False, False


def predict(src: dict[str, Any] | str, dst: dict[str, Any] | str,
            facts: dict[str, Any] | None = None, *, subsections: Any = None,
            ram_sizes: tuple[int, int] | None = None,
            problems: list[Problem] | None = None) -> Prediction:
    """The verdicts a cell from ``src`` to ``dst`` may have.

    ``facts`` is :func:`scenario_facts` (subsections sent and 0x05 collisions, with
    offsets); without it, ``subsections`` (names, e.g. a scenario's ``requires``) are
    placed wherever the source's schema defines them. ``problems``: ``diff(src, dst)``
    when the caller has it.
    """
    src = load_schema(src) if isinstance(src, str) else src
    dst = load_schema(dst) if isinstance(dst, str) else dst
    if problems is None:
        problems = diff(src, dst)
    # Unconditional problems decide alone (format, sections, versions, field layout).
    hard = [p for p in problems if p.severity == "error" and p.subsection is None
            and "when the subsection" not in p.message]
    if ram_sizes and ram_sizes[0] != ram_sizes[1]:
        return Prediction(frozenset({"rejected"}), "RAM sizes differ: RAM size mismatch")
    refusing = ("stream-format", "section-missing", "version-too-new", "version-too-old",
                "pci-read-only", "ram-block-missing", "ram-block-size")
    if hard:
        # The first the stream reaches decides: a refusal there, or a misreading after
        # which the destination may never reach a later one (a 0x00 read as EOF).
        first = min(p.order for p in hard)
        there = [p for p in hard if p.order == first]
        p = next((p for p in there if p.kind in refusing), None)
        if p is not None:
            return Prediction(frozenset({"rejected"}), f"{p.where}: {p.message}")
        p = there[0]
        return Prediction(frozenset(_MISPARSE), f"{p.where}: {p.message} (desynchronised)")
    events: list[tuple[int, str, str]] = []  # (offset, outcome, why)
    if facts is None:
        facts = {"subsections": _static_subsections(src, subsections or ()),
                 "collisions": []}
    by_parent: dict[str, list[dict[str, Any]]] = {}
    for s in facts["subsections"]:
        by_parent.setdefault(s["path"], []).append(s)
    for path, subs in by_parent.items():
        level, embedded, after = _level_of(dst, path)
        for i, s in enumerate(subs):
            if dst["peek"] == "always-peek" and i > 0:
                events.append((s["offset"], "refused",
                               f"{path}: {s['name']!r} is a sibling of {subs[0]['name']!r}: "
                               f"always-peek searches the first one's empty list (ENOENT)"))
                continue
            fate, why = _fate(level, s["name"], embedded, dst, after)
            if fate != "ok":
                events.append((s["offset"], fate, f"{path}: {s['name']!r}: {why}"))
                continue
            known = {x["name"]: x for x in (level or {}).get("subsections", [])}
            srcv = {x["name"]: x for x in (_level_of(src, path)[0] or {}).get(
                "subsections", [])}.get(s["name"])
            if srcv and srcv["version_id"] > known[s["name"]]["version_id"]:
                events.append((s["offset"], "refused", f"{path}: {s['name']!r} too new"))
                continue
            dies = next((f for f in known[s["name"]]["fields"] if f.get("load_dies")), None)
            if dies is not None:  # a field list without its end (RHEL 6.1's gesn_state)
                events.append((s["offset"], "crashed",
                               f"{path}: {s['name']!r}: the destination's field list has no "
                               f"end marker and its load takes {dies['what']} as a field: "
                               f"{dies['load_dies']}"))
    if dst["stream_format"] != 4:
        for c in facts["collisions"]:
            level, _, _ = _level_of(dst, c["path"])
            names = [x["name"] for x in (level or {}).get("subsections", [])]
            why = f"{c['path']}: the parent's next byte is 0x05"
            if dst["peek"] == "always-peek":
                events.append((c["offset"], "refused", why + ", taken as a subsection (ENOENT)"))
            elif dst["peek"] == "peek-if-defined" and names:
                events.append((c["offset"], "refused", why + f"; {level['name']} defines "
                               "subsections, so it peeks (ENOENT)"))  # type: ignore[index]
            elif dst["peek"] == "prefix-match" and level is not None:
                raw = bytes.fromhex(c["next"])
                prefix = level["name"].encode("latin-1")
                if len(raw) >= 2 and raw[1] >= len(prefix) + 1 and raw[2:].startswith(prefix):
                    events.append((c["offset"], "refused", why + " and the bytes match the "
                                   "prefix heuristic (ENOENT)"))
    for (key, a_val, b_val), (suffix, test, why) in _VARIANT_HAZARDS.items():
        if src.get("variants", {}).get(key) == a_val and dst.get("variants", {}).get(key) == b_val:
            hit = [p for p, v in (facts.get("values") or {}).items()
                   if re.search(suffix, p) and test(v)]
            if hit:
                events.append((1 << 62, "meaning", f"{hit[0]}: {why}"))
    for (key, value), (section, why) in _LOAD_HAZARDS.items():
        if dst.get("variants", {}).get(key) == value and all(
                any(s["idstr"].endswith(section) for s in side["sections"])
                for side in (src, dst)):
            events.append((1 << 62, "meaning", f"{key}: {why}"))
    if not events:
        notes = [p for p in problems if p.severity == "warning"]
        extra = f" ({len(notes)} warning(s) do not apply to this state)" if notes else ""
        return Prediction(frozenset({"pass"}), "nothing the destination misreads is sent"
                          + extra)
    events.sort()
    offset, fate, why = events[0]
    if fate == "meaning":
        return Prediction(frozenset({"pass", "corrupted"}), why)
    if fate == "refused":
        return Prediction(frozenset({"rejected"}), f"at offset {offset}: {why}")
    if fate == "crashed":
        return Prediction(frozenset({"crashed"}), f"at offset {offset}: {why}")
    return Prediction(frozenset(_MISPARSE), f"at offset {offset}: {why}")


# Release variants whose load of a section changes guest state whatever the stream says,
# when the source sends that section: (variant, destination value) -> (section idstr
# ending, why).
_LOAD_HAZARDS: dict[tuple[str, str], tuple[str, str]] = {
    ("cirrus_vga.outer_post_load", "inner-on-wrapper"): ("/cirrus_vga", (
        "every load of the VGA into this release sets palette bytes 232-235 to 0xff (the "
        "inner post_load runs on the PCI wrapper): corrupted unless the source's palette "
        "holds 0xff there")),
}


# Release variants whose meaning of the same bytes differs, and the source values that
# make the difference visible: (variant, source value, destination value) ->
# (field path pattern, test on the source's value, why).
_VARIANT_HAZARDS: dict[tuple[str, str, str], tuple[str, Any, str]] = {
    ("bmdma.status", "inline", "compat"): (
        r"bmdma\[\d\]/status$", lambda v: bool(v & 0x60),
        "status bits 0x60 set (DMA-capable, or a retry flag): the destination's post_load "
        "takes them for retry flags RETRY_READ/RETRY_FLUSH and moves them to the bus "
        "error status"),
}


def _static_subsections(src: dict[str, Any], names: Any) -> list[dict[str, Any]]:
    """Subsections by name placed at every level of the source that defines them."""
    wanted = set(names)
    out: list[dict[str, Any]] = []

    def walk(tree: dict[str, Any], path: str) -> None:
        for f in _present(tree, tree["version_id"]):
            if "struct" in f:
                fp = f"{path}/{f['name'].replace('.', '/')}"
                for i in range(int(f.get("count") or 0) or 1):
                    walk(f["struct"], f"{fp}[{i}]" if f.get("count") else fp)
        for s in tree.get("subsections", []):
            if s["name"] in wanted:
                out.append({"offset": len(out), "path": path, "name": s["name"]})

    for s in src["sections"]:
        if s.get("description"):
            walk(s["description"], s["idstr"])
    return out


def _endpoint_parts(ep: Any) -> tuple[str, str, int, str | None, str]:
    """Release, machine type, RAM size, NIC (None: the release's) and VGA of an endpoint
    (a matrix endpoint or its results.json form)."""
    get = ep.get if isinstance(ep, dict) else (lambda k: getattr(ep, k, None))
    return (str(get("release")), str(get("machine")), int(get("ram_size") or 8 << 20),
            get("nic"), get("vga") or "cirrus")


@functools.lru_cache(maxsize=64)
def _cached_dump(release: str, machine: str, nic: str | None, vga: str) -> dict[str, Any]:
    return dump(release, machine, nic, vga)


@functools.lru_cache(maxsize=256)
def _cached_diff(src: tuple[str, str, str | None, str], dst: tuple[str, str, str | None, str]
                 ) -> list[Problem]:
    return diff(_cached_dump(*src), _cached_dump(*dst))


def predict_cell(cell: Any) -> dict[str, Any]:
    """``{"verdicts": [...], "reason": str}`` for a matrix cell (or a results cell)."""
    get = (lambda k: cell[k]) if isinstance(cell, dict) else (lambda k: getattr(cell, k))
    sr, sm, ss, snic, svga = _endpoint_parts(get("source"))
    dr, dm, ds, dnic, dvga = _endpoint_parts(get("destination"))
    try:
        seed = get("seed") or 0
        facts = scenario_facts(sr, sm, get("scenario"), int(seed), ss, nic=snic, vga=svga)
        src, dst = (sr, sm, snic, svga), (dr, dm, dnic, dvga)
        p = predict(_cached_dump(*src), _cached_dump(*dst), facts, ram_sizes=(ss, ds),
                    problems=_cached_diff(src, dst))
    except SaveCrash as e:  # the source's release dies saving the state: no stream
        return {"verdicts": ["crashed"], "reason": f"the source dies saving it: {e}"}
    except Exception as e:  # a prediction must never break a run
        return {"verdicts": [], "reason": f"no prediction: {type(e).__name__}: {e}"}
    return p.to_dict()


# ---------------------------------------------------------------------------- CLI


def _cmd_dump(args: argparse.Namespace) -> int:
    data = dump(args.release, args.machine, args.nic, args.vga)
    text = json.dumps(data, indent=1)
    if args.output and args.output != "-":
        with open(args.output, "w", encoding="utf-8") as f:
            f.write(text + "\n")
    else:
        print(text)
    return 0


def _cmd_diff(args: argparse.Namespace) -> int:
    try:
        src = load_schema(args.src, args.nic, args.vga)
        dst = load_schema(args.dst, args.nic, args.vga)
    except (OSError, ValueError) as e:
        print(f"migmatrix schema diff: {e}", file=sys.stderr)
        return 2
    problems = diff(src, dst)
    shown = [p for p in problems if args.all or p.severity != "info"]
    if args.json:
        print(json.dumps({"source": src["endpoint"], "destination": dst["endpoint"],
                          "problems": [p.to_dict() for p in problems]}, indent=1))
    else:
        for p in shown:
            print(p.line())
        counts = {s: sum(p.severity == s for p in problems) for s in SEVERITIES}
        print(f"{src['endpoint']} -> {dst['endpoint']}: {counts['error']} error(s), "
              f"{counts['warning']} warning(s), {counts['info']} info", file=sys.stderr)
    return 1 if any(p.severity == "error" for p in problems) else 0


def _device_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--nic", choices=sorted(NICS),
                   help="the endpoints' -net nic model (default: the release's own)")
    p.add_argument("--vga", choices=sorted(VGAS), default="cirrus",
                   help="the endpoints' -vga (default cirrus)")


def configure_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``schema dump`` and ``schema diff`` to the ``migmatrix`` subcommands."""
    s = subparsers.add_parser("schema", help="dump or diff the device descriptions")
    sub = s.add_subparsers(dest="schema_command", required=True)
    d = sub.add_parser("dump", help="JSON of every description of an endpoint")
    d.add_argument("--release", required=True, choices=list(RELEASES))
    d.add_argument("--machine", default="pc")
    _device_options(d)
    d.add_argument("-o", "--output", help="file (default: stdout)")
    d.set_defaults(func=_cmd_dump)
    f = sub.add_parser("diff", help="problems of migrating SRC -> DST; exit 1 if any is an error")
    f.add_argument("src", help="endpoint R/M or a dump file")
    f.add_argument("dst", help="endpoint R/M or a dump file")
    _device_options(f)
    f.add_argument("--json", action="store_true")
    f.add_argument("--all", action="store_true", help="also show info lines")
    f.set_defaults(func=_cmd_diff)
    return s

