"""Hostile QMP messages against a real endpoint process: every message gets a reply or a
QMP error on a connection that stays open, nothing is left behind on disk, and no request
wedges the migration state (found by fuzzing the monitor; each case is one that once
dropped the client or the migration)."""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from harness import fuzz_surfaces
from harness.emulator.endpoint.qmp import JSONStreamer

from .test_endpoint import Proc, RawClient, wait_migration


@pytest.fixture
def endpoint(tmp_path: Path) -> Iterator[Callable[..., Proc]]:
    """Starts endpoint processes of 0.14/pc (``endpoint(name, *args)``); all stopped after."""
    procs: list[Proc] = []

    def start(name: str, *args: str) -> Proc:
        procs.append(Proc(tmp_path, name, "--release", "0.14", *args))
        return procs[-1]

    yield start
    for p in procs:
        p.close()


def negotiated(proc) -> RawClient:
    c = proc.raw()
    c.recv()
    assert c.execute("qmp_capabilities") == {"return": {}}
    return c


def assert_alive(c: RawClient) -> None:
    assert c.execute("query-status")["return"]["status"] in ("running", "prelaunch",
                                                              "inmigrate", "postmigrate")


@pytest.mark.parametrize("arguments", [{"enable": 5}, {"enable": [5]}, {"enable": "oob"},
                                       {"enable": None}])
def test_capabilities_with_a_mistyped_enable_is_an_error_not_a_hangup(endpoint, arguments
                                                                     ) -> None:
    c = endpoint("src").raw()
    c.recv()
    reply = c.execute("qmp_capabilities", arguments)
    assert reply["error"]["class"] == "GenericError" and "enable" in reply["error"]["desc"]
    assert c.execute("qmp_capabilities") == {"return": {}}


def test_json_nested_200000_deep_is_a_parse_error_and_the_connection_stays(endpoint) -> None:
    c = negotiated(endpoint("src"))
    c.send(b"[" * 200_000 + b"]" * 200_000)
    reply = c.recv()
    assert reply["error"]["class"] == "GenericError"
    assert "nesting" in reply["error"]["desc"]
    assert_alive(c)


@pytest.mark.parametrize("uri", ["tcp:127.0.0.1:99999", "tcp:127.0.0.1:-1"])
def test_a_port_out_of_range_is_refused_with_a_qmp_error(endpoint, uri) -> None:
    dst = negotiated(endpoint("dst", "--incoming", "defer"))
    reply = dst.execute("migrate-incoming", {"uri": uri})
    assert "outside 0..65535" in reply["error"]["desc"]
    assert dst.execute("migrate-incoming", {"uri": "tcp:127.0.0.1:0"}) == {"return": {}}
    src = negotiated(endpoint("src"))
    assert "outside 0..65535" in src.execute("migrate", {"uri": uri})["error"]["desc"]
    assert_alive(src)


def test_a_nul_in_a_unix_path_is_refused_and_leaves_no_socket(endpoint, tmp_path: Path) -> None:
    dst = negotiated(endpoint("dst", "--incoming", "defer"))
    before = set(os.listdir(tmp_path))
    reply = dst.execute("migrate-incoming", {"uri": f"unix:{tmp_path}/mig\x00rest"})
    assert "NUL" in reply["error"]["desc"]
    assert set(os.listdir(tmp_path)) == before  # no stray socket named "mig"
    assert dst.execute("migrate-incoming", {"uri": f"unix:{tmp_path}/mig.sock"}) == {
        "return": {}}


def test_migrate_incoming_never_deletes_a_file_that_is_not_a_socket(endpoint, tmp_path: Path
                                                                    ) -> None:
    precious = tmp_path / "precious.txt"
    precious.write_text("keep me")
    dst = negotiated(endpoint("dst", "--incoming", "defer"))
    reply = dst.execute("migrate-incoming", {"uri": f"unix:{precious}"})
    assert "Failed to bind" in reply["error"]["desc"]
    assert precious.read_text() == "keep me"


@pytest.mark.parametrize("uri", ["file:{tmp}/out\x00x", "file:{tmp}/no/such/dir/f",
                                 "tcp:127.0.0.1:99999", "unix:{tmp}/none.sock"])
def test_a_failed_migrate_leaves_the_source_able_to_migrate_again(endpoint, tmp_path: Path,
                                                                  uri: str) -> None:
    src = endpoint("src")
    mon = src.qmp()
    c = negotiated(src)
    reply = c.execute("migrate", {"uri": uri.format(tmp=tmp_path)})
    if "return" in reply:  # refused later, by the migration thread
        assert wait_migration(mon)["status"] == "failed"
    assert c.execute("query-migrate")["return"].get("status") in (None, "failed")
    out = tmp_path / "good.mig"
    assert c.execute("migrate", {"uri": f"file:{out}"}) == {"return": {}}
    assert wait_migration(mon)["status"] == "completed"
    assert out.stat().st_size > 0


def test_a_nul_in_x_tee_is_refused(endpoint, tmp_path: Path) -> None:
    c = negotiated(endpoint("src"))
    reply = c.execute("migrate", {"uri": f"file:{tmp_path}/a", "x-tee": "b\x00c"})
    assert "x-tee" in reply["error"]["desc"]
    assert c.execute("query-migrate")["return"] == {}


def test_the_streamer_turns_deep_nesting_into_an_error() -> None:
    out = list(JSONStreamer().feed(b"[" * 100_000 + b"]" * 100_000 + b'{"a": 1}'))
    assert isinstance(out[0], ValueError) and out[1] == {"a": 1}


def test_mutated_messages_each_get_one_reply_on_one_connection(endpoint, tmp_path: Path) -> None:
    """A bounded run of harness.fuzz_surfaces.qmp_messages (bench/fuzz.py --surface qmp
    runs 100,000)."""
    proc = endpoint("dst", "--incoming", "defer")
    c = negotiated(proc)
    rng = random.Random(15)
    for _ in range(300):
        msg = fuzz_surfaces.qmp_messages(rng, str(tmp_path))
        c.send(msg + b"\n")
        while True:
            reply = c.recv()
            if "event" not in reply:
                break
        assert "return" in reply or "error" in reply, (msg[:200], reply)
    assert proc.proc.poll() is None
    assert_alive(c)
