"""fleet/backends/relay.py, the doorway into a sandboxed WebUI, run as the local backend
runs it: a real process handed a listening socket, relaying to a real server it starts.

What a relay must do for HTTP, WebSockets and uploads alike: carry bytes both ways
unchanged, let a half-close through (a client that shuts its sending side still gets
its answer), hold back a fast sender when the other side reads slowly (bounded
memory), refuse while the WebUI does not listen yet, leave no descriptor behind,
and live exactly as long as the WebUI.
"""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.support.procs import free_port, wait_for

RELAY = Path(__file__).resolve().parents[2] / "fleet" / "backends" / "relay.py"

#: The stand-in WebUI: per connection, a first line says what to do.
#:   "echo\n"     then everything back until EOF, then close
#:   "count\n"    read to EOF, answer the byte count and sha256, close
#:   "send N\n"   send N bytes of a known pattern, close
SERVER = textwrap.dedent(
    """
    import hashlib, socket, sys, threading, time
    time.sleep(float(sys.argv[2]))  # a WebUI that takes a while to listen
    srv = socket.create_server(("127.0.0.1", int(sys.argv[1])))
    def serve(c):
        f = c.makefile("rb")
        what = f.readline().split() or [b"none"]  # a readiness probe says nothing
        if what[0] == b"echo":
            while data := f.read1(65536):
                c.sendall(data)
        elif what[0] == b"count":
            h, n = hashlib.sha256(), 0
            while data := f.read1(65536):
                h.update(data); n += len(data)
            c.sendall(f"{n} {h.hexdigest()}".encode())
        elif what[0] == b"send":
            left, block = int(what[1]), bytes(range(256)) * 256
            while left > 0:
                c.sendall(block[: min(left, len(block))]); left -= len(block)
        c.close()
    while True:
        c, _ = srv.accept()
        threading.Thread(target=serve, args=(c,), daemon=True).start()
    """
)


class Relay:
    def __init__(self, tmp: Path, delay: float = 0.0) -> None:
        self.port = free_port()  # the broker's side
        inner = free_port()  # the WebUI's (no sandbox here: the relay's own behaviour)
        listener = socket.create_server(("127.0.0.1", self.port))
        script = tmp / "server.py"
        script.write_text(SERVER)
        self.proc = subprocess.Popen(
            [sys.executable, "-I", str(RELAY), "--fd", str(listener.fileno()),
             "--port", str(inner), "--", sys.executable, str(script), str(inner), str(delay)],
            pass_fds=(listener.fileno(),),
        )  # fmt: skip
        listener.close()  # the relay holds its own copy, as local.py does
        self.inner = inner

    def connect(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=10)

    def ready(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.inner), timeout=1):
                return True
        except OSError:
            return False

    def fds(self) -> int:
        return psutil.Process(self.proc.pid).num_fds()


@pytest.fixture
def relay(tmp_path: Path) -> Iterator[Relay]:
    r = Relay(tmp_path)
    wait_for(r.ready, 10, what="the WebUI behind the relay")
    yield r
    _stop(r)


def _stop(r: Relay) -> None:
    if r.proc.poll() is None:
        r.proc.send_signal(signal.SIGTERM)
        try:
            r.proc.wait(10)
        except subprocess.TimeoutExpired:
            r.proc.kill()
            r.proc.wait()


def _read_all(sock: socket.socket) -> bytes:
    out = bytearray()
    while data := sock.recv(65536):
        out += data
    return bytes(out)


def test_bytes_go_both_ways_unchanged_and_a_half_close_gets_its_answer(relay: Relay) -> None:
    body = os.urandom(3 * 1024 * 1024 + 17)
    with relay.connect() as s:
        s.sendall(b"count\n" + body)
        s.shutdown(socket.SHUT_WR)  # the answer must still come back
        assert _read_all(s).decode() == f"{len(body)} {hashlib.sha256(body).hexdigest()}"
    with relay.connect() as s:
        s.sendall(b"echo\nhello, sandbox")
        s.shutdown(socket.SHUT_WR)
        assert _read_all(s) == b"hello, sandbox"


def test_a_slow_reader_holds_back_a_fast_sender(relay: Relay) -> None:
    """64 MiB from the WebUI to a client that reads nothing for a while: the relay
    stops reading from the WebUI instead of buffering it all."""
    size = 64 * 1024 * 1024
    rss = psutil.Process(relay.proc.pid).memory_info().rss
    with relay.connect() as s:
        s.sendall(b"send %d\n" % size)
        time.sleep(1.5)  # the WebUI sends as fast as it can; nobody reads
        grown = psutil.Process(relay.proc.pid).memory_info().rss - rss
        got = _read_all(s)
    assert grown < 16 * 1024 * 1024, f"the relay grew by {grown >> 20} MiB"
    block = bytes(range(256)) * 256
    assert len(got) == size and got[: len(block)] == block and got[-len(block) :] == block


def test_many_connections_leave_no_descriptor_behind(relay: Relay) -> None:
    before = relay.fds()
    errors: list[BaseException] = []

    def one(i: int) -> None:
        try:
            with relay.connect() as s:
                s.sendall(b"echo\n%d" % i)
                s.shutdown(socket.SHUT_WR)
                assert _read_all(s) == b"%d" % i
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(200)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors, errors[:3]
    # A client that goes away without a word, mid-answer, frees its two ends too.
    for _ in range(20):
        s = relay.connect()
        s.sendall(b"send 10000000\n")
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        s.close()  # RST
    wait_for(lambda: relay.fds() <= before, 10, what=f"descriptors back to {before}")


def test_before_the_webui_listens_a_connection_is_refused_not_held(tmp_path: Path) -> None:
    r = Relay(tmp_path, delay=3.0)
    try:
        started = time.monotonic()
        with r.connect() as s:
            s.sendall(b"echo\nx")
            try:
                data = s.recv(10)
            except ConnectionResetError:
                data = b""
        assert data == b"" and time.monotonic() - started < 2.5
        wait_for(r.ready, 10, what="the WebUI behind the relay")
        with r.connect() as s:
            s.sendall(b"echo\nnow")
            s.shutdown(socket.SHUT_WR)
            assert _read_all(s) == b"now"
    finally:
        _stop(r)


def test_the_relay_lives_as_long_as_the_webui(relay: Relay) -> None:
    webui = [
        c for c in psutil.Process(relay.proc.pid).children() if "server.py" in " ".join(c.cmdline())
    ]
    assert len(webui) == 1
    relay.proc.send_signal(signal.SIGTERM)  # passed on to the WebUI, which dies of it
    assert relay.proc.wait(10) == 128 + signal.SIGTERM
    assert not webui[0].is_running() or webui[0].status() == psutil.STATUS_ZOMBIE
