"""Hostile input for the layers around the core: the analyzer and the QMP endpoint.

:mod:`harness.fuzz` holds the emulator core's loader to its contract; this module does
the same for two more surfaces that read input from outside:

- the analyzer on QEMU-format streams whose VMDESCRIPTION JSON (and configuration
  section) is mutated: :func:`qemu_format_stream` builds a small stream in QEMU's format
  from a description (so no QEMU binary is needed), :class:`DescriptionMutator` changes one
  to three values of its JSON (types, ranges, nesting, sizes, lengths), and
  :func:`check_analyze` runs :func:`harness.analyze.analyze` on the result under a time
  and memory limit: it must return an analysis, never raise;
- the QMP server on mutated messages: :func:`qmp_messages` makes commands with arguments
  of every wrong type and hostile values (deep nesting, NUL bytes, ports out of range,
  unknown keys), which the endpoint must answer with a reply or a QMP error each, on one
  connection that stays open, without wedging its migration state.

Every case that once failed is kept in ``tests/test_fuzz_surfaces.py``.
"""

from __future__ import annotations

import copy
import json
import random
import resource
import struct
import time
import traceback
from typing import Any

from .drivers.inprocess import CellTimeout, time_limit
from .fuzz import CheckResult

__all__ = [
    "SAMPLE_DESCRIPTION",
    "DescriptionMutator",
    "check_analyze",
    "qemu_format_stream",
    "qmp_messages",
    "with_description",
]

# A description shaped as QEMU 7.2 writes them: plain fields, an array, a struct array,
# a subsection, a second instance, and RAM.
SAMPLE_DESCRIPTION: dict[str, Any] = {
    "page_size": 4096,
    "devices": [
        {"name": "timer", "instance_id": 0, "vmsd_name": "timer", "version": 2,
         "fields": [{"name": "cpu_ticks_offset", "type": "int64", "size": 8},
                    {"name": "cpu_clock_offset", "type": "int64", "size": 8}]},
        {"name": "dev", "instance_id": 0, "vmsd_name": "dev", "version": 3,
         "fields": [{"name": "regs", "type": "uint8", "size": 1, "array_len": 4},
                    {"name": "cmd", "type": "uint16", "size": 2},
                    {"name": "buf", "type": "buffer", "size": 16},
                    {"name": "ch", "type": "struct", "size": 6, "array_len": 2,
                     "struct": {"vmsd_name": "dev/ch", "version": 1,
                                "fields": [{"name": "a", "type": "uint32", "size": 4},
                                           {"name": "b", "type": "uint16", "size": 2}]}}],
         "subsections": [{"vmsd_name": "dev/extra", "version": 1,
                          "fields": [{"name": "flag", "type": "bool", "size": 1}]}]},
        {"name": "dev", "instance_id": 1, "vmsd_name": "dev2", "version": 1,
         "fields": [{"name": "x", "type": "uint32", "size": 4}]},
    ],
}


def _payload(vmsd: dict[str, Any], rng: random.Random) -> bytes:
    out = bytearray()
    for f in vmsd.get("fields", []):
        n = f.get("array_len") or 1
        if "struct" in f:
            for _ in range(n):
                out += _payload(f["struct"], rng)
        else:
            out += rng.randbytes(f.get("size", 0) * n)
    for s in vmsd.get("subsections", []):
        name = s["vmsd_name"].encode()
        out += bytes((0x05, len(name))) + name + struct.pack(">I", s.get("version", 1))
        out += _payload(s, rng)
    return bytes(out)


def qemu_format_stream(desc: dict[str, Any] = SAMPLE_DESCRIPTION, *, seed: int = 0,
                       machine: bytes = b"pc-i440fx-7.2", pages: int = 4) -> bytes:
    """A stream in QEMU 7.2's format that ``desc`` describes: header, configuration
    section, a RAM START (MEM_SIZE, ``pages`` pages, zero pages) and END, one FULL
    section per device with its footer, EOF, then the VMDESCRIPTION of ``desc``."""
    rng = random.Random(seed)
    out = bytearray(b"QEVM" + struct.pack(">I", 3))
    out += b"\x07" + struct.pack(">I", len(machine)) + machine
    ram = 16 * 4096
    sid = 0
    body = struct.pack(">Q", ram | 0x04) + bytes((6,)) + b"pc.ram" + struct.pack(">Q", ram)
    body += struct.pack(">Q", 0 | 0x08) + bytes((6,)) + b"pc.ram" + rng.randbytes(4096)
    for i in range(1, pages):
        body += struct.pack(">Q", (i * 4096) | 0x28) + rng.randbytes(4096)
    for i in range(pages, 16):
        body += struct.pack(">Q", (i * 4096) | 0x22) + b"\x00"
    body += struct.pack(">Q", 0x10)
    out += b"\x01" + struct.pack(">I", sid) + bytes((3,)) + b"ram" + struct.pack(">II", 0, 4)
    out += body + b"\x7e" + struct.pack(">I", sid)
    out += b"\x03" + struct.pack(">I", sid) + struct.pack(">Q", 0x10) + b"\x7e"
    out += struct.pack(">I", sid)
    for dev in desc["devices"]:
        sid += 1
        name = dev["name"].encode()
        out += b"\x04" + struct.pack(">I", sid) + bytes((len(name),)) + name
        out += struct.pack(">II", dev.get("instance_id", 0), dev.get("version", 1))
        out += _payload(dev, rng) + b"\x7e" + struct.pack(">I", sid)
    out += b"\x00"
    return with_description(bytes(out), json.dumps(desc).encode())


def with_description(stream_to_eof: bytes, text: bytes) -> bytes:
    """``stream_to_eof`` (ending with its EOF byte) with ``text`` as its VMDESCRIPTION."""
    return stream_to_eof + b"\x06" + struct.pack(">I", len(text) & 0xFFFFFFFF) + text


def _nodes(doc: Any, most_depth: int = 64) -> list[tuple[Any, ...]]:
    """Paths of the values inside ``doc`` (objects by key, arrays by index), not below
    ``most_depth`` (a mutant may already hold a deeply nested value)."""
    out: list[tuple[Any, ...]] = []
    todo: list[tuple[Any, tuple[Any, ...]]] = [(doc, ())]
    while todo:
        value, path = todo.pop()
        out.append(path)
        if len(path) >= most_depth:
            continue
        if isinstance(value, dict):
            todo.extend((v, (*path, k)) for k, v in value.items())
        elif isinstance(value, list):
            todo.extend((v, (*path, i)) for i, v in enumerate(value))
    return out


def _deep(depth: int, leaf: Any = 0) -> Any:
    value: Any = leaf
    for i in range(depth):
        value = [value] if i % 2 else {"struct": value}
    return value


class DescriptionMutator:
    """Changes one to three values of a VMDESCRIPTION document, as an attacker would:
    wrong types, out-of-range and huge integers, nesting, missing members, struct arrays
    of 10^12 elements, declared sizes of gigabytes."""

    HOSTILE: tuple[Any, ...] = (
        None, True, False, -1, 0, 1, 255, 256, 2**31, 2**32, 2**32 + 1, 2**63, 2**64,
        10**12, 10**30, -(2**63), 1.5, float("inf"), "", "x", "\x00", "uint32", "struct",
        [], [0], {}, {"name": 5}, "a" * 300,
    )
    KEYS = ("name", "instance_id", "vmsd_name", "version", "fields", "subsections", "type",
            "size", "array_len", "index", "struct", "page_size", "devices")

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def value(self) -> Any:
        rng = self.rng
        roll = rng.random()
        if roll < 0.6:  # a copy: a later mutation may append to a list it returned
            return copy.deepcopy(rng.choice(self.HOSTILE))
        if roll < 0.7:
            return _deep(rng.choice((10, 40, 1000, 5000)))
        if roll < 0.8:
            return {"name": "f", "type": "struct", "size": 0, "array_len": 10**12,
                    "struct": {"vmsd_name": "empty", "fields": []}}
        if roll < 0.9:
            return rng.randrange(-(2**70), 2**70)
        return copy.deepcopy(rng.choice(SAMPLE_DESCRIPTION["devices"]))

    def mutate(self, doc: Any) -> Any:
        doc = copy.deepcopy(doc)
        for _ in range(self.rng.randint(1, 3)):
            nodes = _nodes(doc)
            path = self.rng.choice(nodes)
            if not path:
                doc = self.value()
                continue
            parent = doc
            for step in path[:-1]:
                parent = parent[step]
            key = path[-1]
            roll = self.rng.random()
            if roll < 0.15 and isinstance(parent, dict):
                del parent[key]
            elif roll < 0.3 and isinstance(parent, dict):
                parent[self.rng.choice(self.KEYS)] = self.value()
            elif roll < 0.4 and isinstance(parent, list):
                parent.append(self.value())
            else:
                parent[key] = self.value()
        return doc

    def text(self, doc: Any) -> bytes:
        """The mutant's JSON; now and then raw bytes a serializer would never write."""
        rng = self.rng
        try:
            text = json.dumps(doc).encode()
        except (ValueError, RecursionError):
            text = b"{}"
        roll = rng.random()
        if roll < 0.05:
            return text[: rng.randrange(len(text) + 1)]
        if roll < 0.08:
            return b"[" * rng.choice((1000, 100_000)) + b"]" * rng.randrange(3)
        if roll < 0.1:
            return text + bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        return text


def check_analyze(data: bytes, *, limit: float = 5.0, as_destination: str | None = None
                  ) -> CheckResult:
    """Analyze ``data`` and say how it ended: ``ok`` (an analysis, whatever it found),
    ``other`` (an exception escaped: a bug) or ``timeout``. ``extra["rss_mib"]`` is the
    process's peak RSS so far."""
    from .analyze import analyze

    t0 = time.perf_counter()
    try:
        with time_limit(limit):
            a = analyze(data, as_destination=as_destination)
            json.dumps(a.to_dict(), default=str)
    except CellTimeout:
        return CheckResult("timeout", time.perf_counter() - t0, f"no outcome within {limit} s")
    except Exception as e:  # the analyzer must turn every input into an analysis
        return CheckResult("other", time.perf_counter() - t0, f"{type(e).__name__}: {e}",
                           extra={"traceback": traceback.format_exc()})
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    reason = (a.error or {}).get("reason")
    return CheckResult("ok", time.perf_counter() - t0, reason=reason,
                       extra={"rss_mib": rss, "crashed": reason == "crashed"})


# -- QMP messages ---------------------------------------------------------------------------

QMP_COMMANDS: dict[str, dict[str, Any]] = {
    "query-status": {}, "query-version": {}, "query-commands": {}, "query-migrate": {},
    "stop": {}, "cont": {}, "x-query-load": {},
    "migrate": {"uri": "tcp:127.0.0.1:1"},
    "migrate-incoming": {"uri": "tcp:127.0.0.1:0"},
    "x-guest-run": {"program": "idle", "seed": 0},
    "x-query-ram-pages": {"block": "pc.bios"},
    "qmp_capabilities": {"enable": []},
}


def qmp_messages(rng: random.Random, scratch: str) -> bytes:
    """One hostile QMP message (bytes, no trailing newline needed): a known command with
    mutated arguments, a malformed envelope, deep nesting, or raw garbage. Migration URIs
    point only into ``scratch`` or at closed local ports (never ``exec:``)."""
    values: list[Any] = [None, True, 5, -1, 2**64, 1.5, "", "x\x00y", [], {}, [1, "a"],
                         {"a": {"b": []}}, "a" * 10_000]
    uris = [f"file:{scratch}/out\x00x", f"unix:{scratch}/s\x00ck", "tcp:127.0.0.1:99999",
            "tcp:127.0.0.1:-1", "tcp:[::1", "tcp:host", "tcp::", f"file:{scratch}/no/such/f",
            f"unix:{scratch}/" + "d" * 300, "tcp:127.0.0.1:1", "rdma:x", "fd:3", "file:",
            f"file:{scratch}/f", "unix:", "tcp:256.1.1.1:5", ""]
    roll = rng.random()
    if roll < 0.05:
        depth = rng.choice((100, 1000, 200_000))
        return b"[" * depth + b"]" * depth
    if roll < 0.08:
        return rng.randbytes(rng.randint(1, 64)).replace(b"{", b"(").replace(b"[", b"(")
    name = rng.choice([*QMP_COMMANDS, "no-such-command", "", 5, None])
    args: Any = dict(QMP_COMMANDS.get(name, {})) if isinstance(name, str) else {}
    for _ in range(rng.randint(0, 3)):
        key = rng.choice([*args, "uri", "enable", "seed", "block", "program", "bogus"] or ["x"])
        if key == "uri" and rng.random() < 0.7:
            args[key] = rng.choice(uris)
        else:
            args[key] = rng.choice(values)
    msg: dict[str, Any] = {"execute": name, "arguments": args}
    roll = rng.random()
    if roll < 0.1:
        msg["arguments"] = rng.choice(values)
    elif roll < 0.15:
        msg["id"] = rng.choice(values)
    elif roll < 0.2:
        msg[rng.choice(("exec-oob", "extra", "control"))] = rng.choice(values)
    elif roll < 0.25:
        del msg["execute"]
    return json.dumps(msg).encode()
