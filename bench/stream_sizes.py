"""Size of an idle stream per endpoint (default 8 MiB of RAM) and of its device sections.

    python bench/stream_sizes.py [--ram 8M] [--nic e1000|rtl8139|none]

With ``--ram 64M`` and the default NIC the figures are the real builds' idle streams
(tests/test_conformance.py holds them section by section).
"""

from __future__ import annotations

import argparse

from harness.emulator.guest import run_program
from harness.emulator.machine import Machine
from harness.emulator.releases import RELEASES


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ram", default="8M")
    p.add_argument("--nic", default="e1000", choices=["e1000", "rtl8139", "none"])
    args = p.parse_args()
    print(f"{'endpoint':14} {'format':>6} {'idle stream':>12} {'devices only':>13}")
    for release in RELEASES.values():
        for mt in release.machines:
            m = Machine(release, mt.name, args.ram, args.nic)
            run_program(m, "idle")
            stream = m.save()
            ram_end = _ram_end(release.name, mt.name, stream, args.ram, args.nic)
            print(f"{release.name + '/' + mt.name:14} {mt.stream_format:>6} {len(stream):>12,} "
                  f"{len(stream) - ram_end:>13,}")


def _ram_end(release: str, machine: str, stream: bytes, ram: str, nic: str) -> int:
    _, report = Machine.load(release, machine, stream, ram_size=ram, nic=nic)
    ram_sections = [s for s in report.sections if s.idstr == "ram"]
    return ram_sections[-1].end


if __name__ == "__main__":
    main()
