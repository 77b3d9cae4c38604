"""The tests' Redis servers survive a port taken between picking it and binding it:
with two test workers, other files open loopback ports all the time."""

from __future__ import annotations

import socket
from pathlib import Path

from tests.redis.servers import plain_server
from tests.support.procs import RedisServer


def hold(port: int) -> socket.socket:
    """The port bound, as a client's outgoing connection holds one: not listening (a
    connect is refused) and without SO_REUSEADDR (so nobody else can bind it)."""
    s = socket.socket()
    s.bind(("127.0.0.1", port))
    return s


def test_a_server_whose_port_is_taken_starts_on_another(tmp_path: Path) -> None:
    server = plain_server(tmp_path / "plain")
    taken = server.port
    with hold(taken):
        server.start()
    try:
        assert server.port != taken
        assert server._listening()
    finally:
        server.stop()


def test_the_shared_server_moves_off_a_taken_port_but_a_restart_keeps_its_own(
    tmp_path: Path,
) -> None:
    server = RedisServer(tmp_path / "shared")
    taken = server.port
    with hold(taken):
        server.start()
    try:
        assert server.port != taken and server._pings()
        server.stop()
        server.start()  # a restart: the same port, as the tests that restart Redis expect
        assert server._pings()
    finally:
        server.stop()
