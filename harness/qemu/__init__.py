"""Real QEMU binaries as matrix endpoints: the guest image the project builds
(:mod:`.bootimage`), the scenario catalogue for QEMU endpoints (:mod:`.scenarios`) and the
comparison of two QEMU streams, device fields and RAM (:mod:`.compare`). The driver that
runs them is :mod:`harness.drivers.qemu`.

Nothing here imports the emulator core.
"""
