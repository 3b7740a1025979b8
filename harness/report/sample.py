"""Fake but realistic results, for tests and for previewing the report without a run.

`sample_results()` builds 3 endpoints x 15 scenarios (135 cells) with every verdict, error
offsets, field diffs, annotated byte windows and known issues, shaped like the QEMU 0.14 /
1.0 subsection story of spec/wire-format.md. `hostile=True` adds a scenario whose idstr,
field path, message, known-issue note and link are markup, to check that the report
escapes everything that came from a stream. Deterministic: same output on every call.
"""

from __future__ import annotations

import hashlib
import shlex
import struct
from typing import Any

from .results import SCHEMA, summarize

__all__ = ["HOSTILE", "ENDPOINTS", "SCENARIOS", "sample_results", "make_cell"]

HOSTILE = ("<script>alert(1)</script>", '"><img src=x onerror=alert(1)>')

ENDPOINTS = ("0.14/pc", "new/pc-0.14", "new/pc")
SCENARIOS = (
    "idle", "ide-pio", "ide-dma", "ide-bus-error", "ide-mult-sectors", "fdc-seek",
    "fdc-media-changed", "rtl8139-rx", "rtl8139-tx", "rtc-alarm", "pit-channel2",
    "cpu-halted", "pic-irr", "ram-dirty", "random:7",
)

# Which device section each scenario exercises: (idstr, version, fields, subsection).
_SECTIONS: dict[str, tuple[str, int, list[tuple[str, int]], str | None]] = {
    "ide": ("ide", 3, [("bus[0]/cmd", 1), ("bus[0]/unit", 1), ("bus[0]/error_status", 1),
                       ("bus[0]/ifs[0]/mult_sectors", 4), ("bus[0]/ifs[0]/status", 1)],
            "ide_drive/pio_state"),
    "fdc": ("fdc", 2, [("sra", 1), ("srb", 1), ("dor", 1), ("drives[0]/head", 1),
                       ("drives[0]/track", 1)], "fdrive/media_changed"),
    "rtl8139": ("rtl8139", 4, [("phys", 6), ("mult", 8), ("RxBuf", 4), ("RxBufPtr", 4)],
                "rtl8139/hotplug_ready"),
    "rtc": ("mc146818rtc", 2, [("cmos_data", 16), ("cmos_index", 1)], "mc146818rtc/irq_reinject"),
    "pit": ("i8254", 2, [("channels[2]/count", 4), ("channels[2]/mode", 1)], None),
    "cpu": ("cpu", 12, [("regs[0]", 8), ("eip", 8), ("halted", 4)], "cpu/async_pf_msr"),
    "pic": ("i8259", 1, [("last_irr", 1), ("irr", 1), ("imr", 1), ("isr", 1)], None),
    "ram": ("ram", 4, [("block/pc.ram/page", 8)], None),
}
_SCENARIO_DEVICE = {
    "idle": "pic", "ide-pio": "ide", "ide-dma": "ide", "ide-bus-error": "ide",
    "ide-mult-sectors": "ide", "fdc-seek": "fdc", "fdc-media-changed": "fdc",
    "rtl8139-rx": "rtl8139", "rtl8139-tx": "rtl8139", "rtc-alarm": "rtc",
    "pit-channel2": "pit", "cpu-halted": "cpu", "pic-irr": "pic", "ram-dirty": "ram",
    "random": "ide",
}


def _rand(*parts: Any) -> int:
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:8], "big")


def _window(section: str, version: int, fields: list[tuple[str, int]], subsection: str | None,
            base: int, seed: int) -> tuple[dict[str, Any], dict[str, int]]:
    """Bytes of one section as QEMU 0.14 frames it, with marks; and where each part starts."""
    buf = bytearray()
    marks: list[dict[str, Any]] = []
    where: dict[str, int] = {}
    pre = bytes((_rand(seed, "pre", i) & 0xFF) for i in range(20))  # tail of previous section
    buf += pre
    sec_start = base + len(buf)
    header = bytes([0x04]) + struct.pack(">I", 3) + bytes([len(section)]) + section.encode(
        "utf-8", "replace") + struct.pack(">II", 0, version)
    buf += header
    for name, size in fields:
        off = base + len(buf)
        value = _rand(seed, name) % (1 << (8 * min(size, 4)))
        buf += value.to_bytes(size, "big") if size <= 4 else (
            value.to_bytes(4, "big") + bytes(size - 4))
        marks.append({"offset": off, "end": off + size, "label": f"{section}/{name}",
                      "kind": "field"})
        where[name] = off
    if subsection:
        off = base + len(buf)
        sub = bytes([0x05, len(subsection)]) + subsection.encode("utf-8", "replace") + struct.pack(
            ">I", 1) + bytes([_rand(seed, "sub") & 0xFF])
        buf += sub
        marks.append({"offset": off, "end": off + len(sub), "label": subsection,
                      "kind": "subsection"})
        where["subsection"] = off
    off = base + len(buf)
    buf += b"\x00"  # end of the field list
    marks.append({"offset": off, "end": off + 1, "label": "end of section", "kind": "sentinel"})
    where["sentinel"] = off
    marks.insert(0, {"offset": sec_start, "end": base + len(buf),
                     "label": f"'{section}' id 3 v{version}", "kind": "section"})
    buf += bytes((_rand(seed, "post", i) & 0xFF) for i in range(18))
    return {"start": base, "hex": buf.hex(), "marks": marks}, where


def _endpoint(name: str) -> dict[str, str]:
    release, machine = name.split("/", 1)
    return {"endpoint": name, "release": release, "machine": machine}


def _rule(src: str, dst: str) -> tuple[list[str], str]:
    if src == dst:
        return ["pass"], f"rule 1: source={src} destination={src} scenario=* -> pass"
    table = {
        ("0.14/pc", "new/pc-0.14"): (["pass"], "rule 2"),
        ("new/pc-0.14", "0.14/pc"): (["pass"], "rule 3"),
        ("new/pc", "0.14/pc"): (["rejected", "pass"], "rule 4"),
        ("new/pc", "new/pc-0.14"): (["rejected"], "rule 5"),
        ("0.14/pc", "new/pc"): (["pass", "rejected"], "rule 6"),
        ("new/pc-0.14", "new/pc"): (["pass", "rejected"], "rule 7"),
    }
    expected, name = table.get((src, dst), (["pass"], "rule 9"))
    return expected, f"{name}: source={src} destination={dst} scenario=* -> {'|'.join(expected)}"


def make_cell(src: str, dst: str, scenario_key: str, **over: Any) -> dict[str, Any]:
    """One cell in the results schema; keyword arguments override any top-level key."""
    scenario, _, seed_text = scenario_key.partition(":")
    seed = int(seed_text) if seed_text else 0
    cid = f"{src}->{dst}[{scenario_key}]"
    expected, rule = _rule(src, dst)
    sr, sm = src.split("/", 1)
    dr, dm = dst.split("/", 1)
    stream = f"/tmp/migmatrix/{sr}-{sm}-{scenario}-{seed}.mig"
    cell: dict[str, Any] = {
        "id": cid,
        "source": _endpoint(src),
        "destination": _endpoint(dst),
        "scenario": scenario,
        "seed": seed,
        "verdict": "pass",
        "expected": expected,
        "expected_rule": rule,
        "ok": True,
        "known_issue": None,
        "unexpected_pass": False,
        "detail": {"message": "", "reason": None, "errno": None, "offset": None,
                   "section": None, "field": None, "diff": [], "diff_total": 0,
                   "bytes_unread": 0, "not_loaded": [], "window": None},
        "stream_bytes": 1024 * 1024 + _rand(cid) % 65536,
        "duration_s": round(0.05 + (_rand(cid, "t") % 400) / 1000, 3),
        "commands": {
            "save": shlex.join(["migmatrix", "save", "--release", sr, "--machine", sm,
                                "--scenario", scenario, "--seed", str(seed), "-o", stream]),
            "load": shlex.join(["migmatrix", "load", "--release", dr, "--machine", dm,
                                stream, "--dump-state"]),
            "run": shlex.join(["migmatrix", "run", "--matrix", "matrix/default.toml",
                               "--cell", cid]),
        },
    }
    detail = over.pop("detail", None)
    if detail:
        cell["detail"].update(detail)
    cell.update(over)
    cell["ok"] = over.get("ok", cell["verdict"] in cell["expected"] or (
        cell["known_issue"] is not None and cell["verdict"] != "pass"))
    return cell


def _failure(src: str, dst: str, key: str, verdict: str, *, part: str = "subsection",
             reason: str | None = None, message: str = "", diff: list | None = None,
             diff_total: int | None = None, section_name: str | None = None,
             field_label: str | None = None, errno: str | None = None,
             **over: Any) -> dict[str, Any]:
    scenario = key.partition(":")[0]
    idstr, version, fields, sub = _SECTIONS[_SCENARIO_DEVICE[scenario]]
    if section_name is not None:
        idstr = section_name
    base = 0x3A0 + (_rand(src, dst, key) % 0x400) * 16
    window, where = _window(idstr, version, fields, sub, base, _rand(key))
    offset = where.get(part, where["sentinel"])
    field = field_label or (f"{idstr}/{part}" if part in dict(fields) else
                            (sub if part == "subsection" else None))
    window["marks"].append({"offset": offset, "end": offset + 1,
                            "label": f"{reason or verdict} here", "kind": "error"})
    diff = diff or []
    detail = {
        "message": message, "reason": reason, "errno": errno, "offset": offset, "section": idstr,
        "field": field, "diff": diff,
        "diff_total": diff_total if diff_total is not None else len(diff), "window": window,
    }
    if verdict == "truncated":
        detail["bytes_unread"] = 4096 + _rand(key) % 4096
        detail["not_loaded"] = ["fdc", "mc146818rtc", "i8254", "ram"]
    return make_cell(src, dst, key, verdict=verdict, detail=detail, **over)


def _add_cause(cell: dict[str, Any]) -> None:
    """The first divergence, as the drivers record it (harness.drivers.inprocess.cell_cause):
    the subsection header's 0x05 read as the parent's next field, and a field only the
    destination defines holding what the stream put there."""
    detail = cell["detail"]
    window = detail["window"]
    sub = next(m for m in window["marks"] if m["kind"] == "subsection")
    at = sub["offset"]
    before = next(m for m in window["marks"] if m["kind"] == "field")
    cause_window = {"start": window["start"], "hex": window["hex"],
                    "marks": [m for m in window["marks"] if m["kind"] != "error"]
                    + [{"offset": at, "end": at + 1, "kind": "error",
                        "label": "read by new/pc-0.14 as field ide/bus[1]/cmd = 5"}]}
    detail["cause"] = {
        "offset": at,
        "summary": f"at offset {at} (0x{at:x}) the writer meant subsection "
                   f"'{sub['label']}' after ide/bus[0]; the destination reads field "
                   "ide/bus[1]/cmd = 5 (0x5)",
        "rows": [
            {"offset": before["offset"], "bytes": "00", "writer": f"field {before['label']}",
             "destination": f"field {before['label']}", "diverged": False},
            {"offset": at, "bytes": "05", "writer": f"subsection '{sub['label']}'",
             "destination": "field ide/bus[1]/cmd = 5 (0x5)", "diverged": True},
            {"offset": at + 1, "bytes": "13", "writer": "",
             "destination": "field ide/bus[1]/unit = 19 (0x13)", "diverged": True},
        ],
        "window": cause_window,
    }
    detail["one_sided"] = [{"path": "ide/bus[0]/retry_unit", "source": None,
                            "destination": 1, "only_in": "destination"}]


def _outcome(src: str, dst: str, key: str) -> dict[str, Any]:
    """The story of the fake matrix: which cell does what."""
    scen = key.partition(":")[0]
    if (src, dst) == ("0.14/pc", "new/pc-0.14"):
        if key == "ide-bus-error":
            cell = _failure(
                src, dst, key, "corrupted", part="subsection",
                message="destination state differs from the source on 3 fields",
                field_label="ide/bus[0]/error_status",
                diff=[{"path": "ide/bus[0]/error_status", "source": 4, "destination": 0},
                      {"path": "ide/bus[0]/ifs[0]/status", "source": 65, "destination": 5},
                      {"path": "ide/bus[0]/ifs[0]/pio_state", "source": {"pos": 512,
                       "end": 512}, "destination": None}],
                diff_total=3)
            _add_cause(cell)
            return cell
        if key == "fdc-media-changed":
            return _failure(
                src, dst, key, "truncated", part="subsection", reason="early_eof",
                message="loader took subsection byte 0x05 for the parent's next field and "
                        "stopped at EOF after section fdc",
                diff=[{"path": "fdc/drives[0]/media_changed", "source": 1, "destination": 0}],
                diff_total=1,
                known_issue={"text": "0.14 peeks at 0x05 after an embedded struct "
                                     "(spec/wire-format.md, ambiguity 2)",
                             "link": "https://example.org/migmatrix/issues/12"})
    if (src, dst) == ("new/pc-0.14", "0.14/pc") and key == "rtl8139-rx":
        return _failure(src, dst, key, "crashed", part="RxBufPtr", reason=None,
                        message="IndexError: rx ring index 65535 out of range (endpoint exit 1)",
                        errno="EPIPE")
    if (src, dst) == ("new/pc", "0.14/pc"):
        if key == "pit-channel2":
            return make_cell(src, dst, key, verdict="timeout", detail={
                "message": "no outcome within 30 s (query-migrate still 'active')"})
        if scen in ("idle", "pic-irr", "ram-dirty"):
            return make_cell(src, dst, key)
        _, _, _, sub = _SECTIONS[_SCENARIO_DEVICE[scen]]
        return _failure(src, dst, key, "rejected", part="subsection" if sub else "sentinel",
                        reason="unknown_subsection" if sub else "too_new",
                        message=(f"Unknown subsection '{sub}' in section "
                                 f"'{_SECTIONS[_SCENARIO_DEVICE[scen]][0]}'") if sub else
                        "section version 3 is too new (max 2)",
                        errno="EINVAL")
    if (src, dst) == ("new/pc", "new/pc-0.14"):
        if key == "ram-dirty":
            return make_cell(src, dst, key, verdict="error", detail={
                "message": "driver inprocess: destination endpoint did not start: "
                           "OSError: [Errno 98] Address already in use"})
        return _failure(src, dst, key, "rejected", part="sentinel", reason="too_new",
                        message="machine type pc-0.14 cannot load sections of pc (version "
                                "too new)", errno="EINVAL")
    if (src, dst) == ("0.14/pc", "new/pc") and key == "rtc-alarm":
        return make_cell(src, dst, key, known_issue={
            "text": "rtc irq_reinject subsection was dropped by new/pc", "link": None},
            unexpected_pass=True, ok=True)
    if (src, dst) == ("new/pc-0.14", "new/pc") and key == "cpu-halted":
        return _failure(src, dst, key, "corrupted", part="halted",
                        message="destination state differs on 1 field",
                        diff=[{"path": "cpu/halted", "source": 1, "destination": 0}],
                        known_issue={"text": "halted flag not migrated for pc-0.14 "
                                             "(tracked upstream)", "link": None})
    return make_cell(src, dst, key)


def _hostile_cells() -> list[dict[str, Any]]:
    a, b = HOSTILE
    cells = []
    for src, dst in (("0.14/pc", "new/pc-0.14"), ("new/pc", "new/pc")):
        cell = _failure(
            src, dst, "pic-irr", "corrupted", part="irr", reason=f"bad_{a}",
            section_name=f"i8259{b}", field_label=f"{a}/{b}",
            message=f"field {b} of {a} differs",
            diff=[{"path": f"i8259/{a}", "source": b, "destination": a}],
            known_issue={"text": f"note {a}", "link": f"javascript:alert(1){b}"},
            ok=False,
        )
        cell["scenario"] = a
        cell["id"] = f"{src}->{dst}[{a}]"
        cell["expected_rule"] = f"rule {b}"
        cell["commands"]["run"] = f"migmatrix run --cell '{a}{b}'"
        cells.append(cell)
    return cells


def sample_results(hostile: bool = False) -> dict[str, Any]:
    """A complete results object: 3 endpoints x 15 scenarios, optionally plus hostile cells."""
    cells = [_outcome(src, dst, key)
             for src in ENDPOINTS for dst in ENDPOINTS for key in SCENARIOS]
    scenarios = [s.partition(":")[0] for s in SCENARIOS]
    if hostile:
        cells += _hostile_cells()
        scenarios.append(HOSTILE[0])
    duration = round(sum(c["duration_s"] for c in cells), 3)
    return {
        "schema": SCHEMA,
        "matrix": "default",
        "matrix_file": "matrix/default.toml",
        "driver": "inprocess",
        "host": "ci-runner-7",
        "python": "3.11.7",
        "migmatrix_version": "0.1.0",
        "started": "2024-05-14T09:30:00+00:00",
        "finished": "2024-05-14T09:30:41+00:00",
        "duration_s": duration,
        "endpoints": list(ENDPOINTS),
        "scenarios": scenarios,
        "shard": None,
        "total_cells": len(cells),
        "cells": cells,
        "summary": summarize(cells),
    }
