"""An analysis as text for people: one line per element, then the divergence."""

from __future__ import annotations

from .elements import Analysis, Element, short
from .ram import RAM_KINDS

# typing.TYPE_CHECKING without importing typing, which the analyzer's start pays for
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["render_text"]


def render_text(a: Analysis, *, max_elements: int | None = None) -> str:
    """The analysis for people: one line per element, then the divergence if any."""
    lines = [f"stream {a.input}: {a.bytes_read} bytes, file version {a.file_version}, "
             f"{a.format}"]
    if a.writer:
        w = a.writer
        if "endpoint" in w:
            how = "inferred; " if w.get("inferred") else ""
            nic = f"NIC {w['nic']}; " if w.get("nic") else ""
            if w.get("vga") not in (None, "cirrus"):
                nic += f"VGA {w['vga']}; "
            lines.append(f"decoded as {w['endpoint']} ({how}{nic}its loader peeks "
                         f"{w.get('peek')}; read here with {w.get('read_with')})")
            for t in w.get("tried", []):
                lines.append(f"  tried {t['endpoint']}: "
                             + ("decodes the whole stream" if t["decodes"] else t["error"])
                             + (f" ({t['note']})" if t.get("note") else ""))
    if a.qemu:
        q = a.qemu
        lines.append("QEMU stream: " + ", ".join(f"{k} {v}" for k, v in q.items()
                                                   if not isinstance(v, dict))
                     + (f", VMDESCRIPTION of {q['vmdescription']['devices']} device(s) at "
                        f"{q['vmdescription']['offset']}" if isinstance(
                            q.get("vmdescription"), dict) else ""))
    lines.append(f"{'offset':>10} {'size':>8}  {'kind':<13} element")
    shown = a.elements if max_elements is None else a.elements[:max_elements]
    for e in shown:
        depth = e.path.count("/") if e.kind in ("field", "struct", "subsection",
                                                 "sentinel") else 0
        text = _element_text(e)
        lines.append(f"{e.offset:>10} {e.size:>8}  {e.kind:<13} {'  ' * depth}{text}")
    if max_elements is not None and len(a.elements) > max_elements:
        lines.append(f"... {len(a.elements) - max_elements} more element(s)")
    if a.omitted_elements:
        lines.append(f"... and {sum(a.omitted_elements.values())} element(s) past the first "
                     f"{len(a.elements)} counted, not listed: " + ", ".join(
                         f"{n} {k}" for k, n in a.omitted_elements.items()))
    if a.omitted_sections:
        lines.append("section records counted, not listed: " + ", ".join(
            f"{n} {k}" for k, n in a.omitted_sections.items()))
    if a.ram and a.ram.get("blocks"):
        lines.append("RAM by block:")
        for b in a.ram["blocks"]:
            kinds = ", ".join(f"{b[k]} {k}" for k in RAM_KINDS if k in b)
            lines.append(f"  {b['name']:<28} {b['length']:>12} bytes  {kinds}"
                         + ("" if b["listed"] else "  (not in the MEM_SIZE list)"))
    for n in a.notes:
        lines.append(f"note: {n}")
    if a.error:
        lines.append(f"stopped: {a.error['message']}")
    elif a.eof_offset is not None:
        lines.append(f"EOF at offset {a.eof_offset}"
                     + (f"; {a.trailing_bytes} byte(s) after it" if a.trailing_bytes else ""))
    if a.divergence:
        lines += _divergence_text(a.divergence)
    return "\n".join(lines) + "\n"


def _element_text(e: Element) -> str:
    if e.kind == "field":
        return f"{e.path} = {short(e.value, 48)}"
    if e.kind == "struct":
        return f"{e.path} {{{e.value or ''}}}".rstrip(" {}") + (" (struct)" if True else "")
    if e.kind == "subsection":
        return f"subsection {e.value!r} in {e.path}" + (f" ({e.detail})" if e.detail else "")
    if e.kind == "sentinel":
        return f"sentinel 0x{e.value:02x} after {e.path}"
    if e.kind in ("section", "header", "configuration", "ram", "footer", "command",
                  "vmdescription", "trailing", "error"):
        return e.detail or str(e.value or "")
    if e.kind == "eof":
        return "EOF"
    return f"{e.path} {e.value if e.value is not None else ''}".strip()


def _divergence_text(d: dict[str, Any]) -> list[str]:
    if "error" in d:
        return [f"as destination: {d['error']}"]
    out = ["", f"as destination {d['destination']}: {d['outcome']['status']}: "
               f"{d['outcome'].get('message', '')}"]
    if not d.get("diverges"):
        out.append(f"  {d['summary']}")
        return out
    out.append(f"  first divergence: {d['summary']}")
    rows = d.get("side_by_side") or []
    if rows:
        out.append(f"  {'offset':>10}  {'bytes':<26} {'writer meant':<46} destination reads")
        for row in rows:
            mark = ">" if row["diverged"] else " "
            out.append(f"{mark} {row['offset']:>10}  {row['bytes']:<26} "
                       f"{row['writer'][:46]:<46} {row['destination']}")
    for rn in d.get("renamed", [])[:5]:
        out.append(f"  note: same bytes, other name at {rn['offset']}: {rn['writer']} -> "
                   f"{rn['destination']}")
    return out
