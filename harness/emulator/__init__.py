"""The Python emulator core: the system under test.

It models QEMU 0.13 to 1.0's savevm stream, device descriptions and loader rules, and
imports nothing from the rest of :mod:`harness`; the harness drives it as it would drive
a real emulator.
"""

from .errors import ConfigError, EmulatorError, LoadError, Reason, SaveError, TruncatedInput

__all__ = ["ConfigError", "EmulatorError", "LoadError", "Reason", "SaveError", "TruncatedInput"]
