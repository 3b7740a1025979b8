"""User-mode networking ("slirp" v3; instance 0): present only with ``-net user``.

An old-style section (register_savevm, no vmsd), the same in every modelled release
(slirp/slirp.c slirp_state_save/slirp_state_load): a list of guestfwd sockets, each
tagged with the byte 42 and ended by a 0 byte; ``ip_id`` (v2); then the 16 BOOTP/DHCP
leases (v3), each a u16 ``allocated`` and the client's MAC address. A machine with no
guestfwd rule has no such socket, so its list is the end byte alone: 131 bytes idle.

The model has no guestfwd rules: a destination that meets a socket record refuses it,
as QEMU does once the socket's forward rule is not found (-EINVAL).
"""

from __future__ import annotations

import functools
import random
from typing import Any

from ..releases import Release
from ..savevm import DeviceSection
from ..stream import StreamReader, StreamWriter
from ..vmstate import Buffer, Description, Field, WireRules, invalid, u16
from . import Device, State

__all__ = ["BOOTP_CLIENTS", "GuestfwdSockets", "Slirp", "slirp_description"]

BOOTP_CLIENTS = 16  # NB_BOOTP_CLIENTS
SOCKET_TAG = 42
GUEST_MAC = bytes.fromhex("525400123456")  # QEMU's default NIC address


class GuestfwdSockets(Field):
    """The tagged list of guestfwd sockets: always empty in the model (one 0 byte)."""

    kind = "slirp_sockets"
    size = None

    def __init__(self, name: str = "sockets") -> None:
        super().__init__(name, attr="__sockets__")

    def _save(self, w: StreamWriter, obj: Any, rules: WireRules) -> None:
        w.u8(0)

    def _load(self, r: StreamReader, obj: Any, rules: WireRules) -> Any:
        tag = r.read_u8()
        if tag:
            raise invalid(f"a guestfwd socket record (tag {tag}): this machine has no "
                          "guestfwd rule for it")
        return None

    def dump(self, obj: Any, prefix: str, out: dict[str, Any]) -> None:
        pass


@functools.cache
def slirp_description(release: Release) -> Description:
    """ "slirp" v3: the socket list, ``ip_id`` (v2), the BOOTP leases (v3)."""
    fields: list[Field] = [GuestfwdSockets(), u16("ip_id", version_id=2)]
    for i in range(BOOTP_CLIENTS):
        fields.append(u16(f"bootp_clients[{i}].allocated", version_id=3))
        fields.append(Buffer(f"bootp_clients[{i}].macaddr", 6, version_id=3))
    return Description("slirp", 3, fields)


class Slirp(Device):
    """The user-mode network stack: no lease handed out, no packet sent yet."""

    key = "slirp"

    def reset(self) -> None:
        self.ip_id = 0
        self.bootp_clients = [State(allocated=0, macaddr=bytes(6)) for _ in range(BOOTP_CLIENTS)]

    def sections(self) -> list[DeviceSection]:
        return [DeviceSection("slirp", 0, slirp_description(self.release), self)]

    def lease(self, mac: bytes = GUEST_MAC) -> None:
        """The guest's DHCP client got the first address (10.0.2.15)."""
        client = self.bootp_clients[0]
        client.allocated, client.macaddr = 1, bytes(mac)

    def randomize(self, rng: random.Random) -> None:
        self.ip_id = rng.randrange(1 << 16)
        if rng.randrange(2):
            self.lease(bytes([0x52, 0x54, 0]) + rng.randbytes(3))
