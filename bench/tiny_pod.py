"""A very light stand-in WebUI pod for benchmarks that need many pods or many sockets.

Standard library only (socket + selectors: about 10 MB RSS, started with
`python -S`), one thread, keep-alive HTTP/1.1 and WebSocket echo:

    GET  /internal/ping, /sdapi/v1/progress, /internal/pending-tasks   the a1111 probe
    POST /sdapi/v1/options                                              outputs (ignored)
    GET  /stub/whoami      {"pod": <pod id>, "user": <X-Forwarded-User sent>}
    GET  <any> + Upgrade: websocket                                     echo, stays idle
    GET  /<file>           a file under --root, streamed (fallback upstream without nginx)

    python -S bench/tiny_pod.py --port 7860 --pod-id default-1a2b3c4d [--root DIR]
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import socket
import sys

WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
FILE_CHUNK = 256 * 1024
MAX_HEAD = 64 * 1024


def parse_args(argv: list[str]) -> dict[str, str]:
    opts = {"--host": "127.0.0.1", "--root": ""}
    it = iter(argv)
    for arg in it:
        opts[arg] = next(it)
    return opts


class Conn:
    __slots__ = ("sock", "inbuf", "outbuf", "websocket", "file", "closing")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.inbuf = bytearray()
        self.outbuf = bytearray()
        self.websocket = False
        self.file = None  # an open file still being sent
        self.closing = False


class Pod:
    def __init__(self, pod_id: str, root: str) -> None:
        self.pod_id = pod_id
        self.root = os.path.realpath(root) if root else ""
        self.sel = selectors.DefaultSelector()

    # --- I/O --------------------------------------------------------------------

    def serve(self, host: str, port: int) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((host, port))
        listener.listen(4096)
        listener.setblocking(False)
        self.sel.register(listener, selectors.EVENT_READ, None)
        while True:
            for key, events in self.sel.select():
                if key.data is None:
                    self.accept(listener)
                    continue
                conn = key.data
                if events & selectors.EVENT_READ:
                    self.read(conn)
                if events & selectors.EVENT_WRITE and conn.sock.fileno() != -1:
                    self.flush(conn)

    def accept(self, listener: socket.socket) -> None:
        for _ in range(64):
            try:
                sock, _addr = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # out of fds: leave it in the backlog
                return
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.sel.register(sock, selectors.EVENT_READ, Conn(sock))

    def close(self, conn: Conn) -> None:
        if conn.sock.fileno() == -1:
            return
        self.sel.unregister(conn.sock)
        conn.sock.close()
        if conn.file is not None:
            conn.file.close()

    def read(self, conn: Conn) -> None:
        try:
            data = conn.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self.close(conn)
            return
        conn.inbuf += data
        if conn.websocket:
            self.ws_frames(conn)
        else:
            self.http_requests(conn)
        self.flush(conn)

    def send(self, conn: Conn, data: bytes) -> None:
        conn.outbuf += data

    def flush(self, conn: Conn) -> None:
        if conn.sock.fileno() == -1:
            return
        while True:
            if not conn.outbuf and conn.file is not None:
                chunk = conn.file.read(FILE_CHUNK)
                if chunk:
                    conn.outbuf += chunk
                else:
                    conn.file.close()
                    conn.file = None
                    self.http_requests(conn)  # a request that came while the file was sent
            if not conn.outbuf:
                break
            try:
                sent = conn.sock.send(conn.outbuf)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                self.close(conn)
                return
            del conn.outbuf[:sent]
        want = selectors.EVENT_READ | (selectors.EVENT_WRITE if conn.outbuf else 0)
        if conn.closing and not conn.outbuf:
            self.close(conn)
            return
        self.sel.modify(conn.sock, want, conn)

    # --- HTTP -------------------------------------------------------------------

    def http_requests(self, conn: Conn) -> None:
        while not conn.websocket and conn.file is None:
            end = conn.inbuf.find(b"\r\n\r\n")
            if end < 0:
                if len(conn.inbuf) > MAX_HEAD:
                    conn.closing = True
                return
            head = bytes(conn.inbuf[:end]).decode("latin-1").split("\r\n")
            headers = {}
            for line in head[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            length = int(headers.get("content-length", "0") or 0)
            if len(conn.inbuf) < end + 4 + length:
                return
            del conn.inbuf[: end + 4 + length]
            method, _, rest = head[0].partition(" ")
            path = rest.rpartition(" ")[0].split("?", 1)[0]
            self.handle(conn, method, path, headers)

    def respond(
        self, conn: Conn, status: str, body: bytes, ctype: str = "application/json"
    ) -> None:
        self.send(
            conn,
            b"HTTP/1.1 " + status.encode() + b"\r\nContent-Type: " + ctype.encode()
            + b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body,
        )  # fmt: skip

    def handle(self, conn: Conn, method: str, path: str, headers: dict[str, str]) -> None:
        if headers.get("upgrade", "").lower() == "websocket":
            self.upgrade(conn, headers)
        elif path == "/internal/ping" or path == "/sdapi/v1/options":
            self.respond(conn, "200 OK", b"{}")
        elif path == "/sdapi/v1/progress":
            self.respond(conn, "200 OK", b'{"progress": 0, "state": {"job_count": 0}}')
        elif path == "/internal/pending-tasks":
            self.respond(conn, "200 OK", b'{"size": 0}')
        elif path == "/stub/whoami":
            body = {"pod": self.pod_id, "user": headers.get("x-forwarded-user")}
            self.respond(conn, "200 OK", json.dumps(body).encode())
        elif self.root and method in ("GET", "HEAD"):
            self.static(conn, method, path)
        else:
            self.respond(conn, "404 Not Found", b'{"detail": "Not Found"}')

    def static(self, conn: Conn, method: str, path: str) -> None:
        full = os.path.realpath(os.path.join(self.root, path.lstrip("/")))
        if not full.startswith(self.root + os.sep) or not os.path.isfile(full):
            self.respond(conn, "404 Not Found", b"not found\n", "text/plain")
            return
        size = os.path.getsize(full)
        self.send(conn, b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: "
                  + str(size).encode() + b"\r\n\r\n")  # fmt: skip
        if method == "GET":
            conn.file = open(full, "rb")  # noqa: SIM115 - closed when sent or on close()

    # --- WebSocket ----------------------------------------------------------------

    def upgrade(self, conn: Conn, headers: dict[str, str]) -> None:
        import base64  # only here: hashlib (OpenSSL) costs ~4 MB RSS in every pod
        import hashlib

        key = headers.get("sec-websocket-key", "").encode()
        accept = base64.b64encode(hashlib.sha1(key + WS_GUID).digest())
        self.send(conn, b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n")  # fmt: skip
        conn.websocket = True
        self.ws_frames(conn)

    def ws_frames(self, conn: Conn) -> None:
        buf = conn.inbuf
        while len(buf) >= 2:
            opcode, masked, length = buf[0] & 0x0F, buf[1] & 0x80, buf[1] & 0x7F
            pos = 2
            if length == 126:
                if len(buf) < 4:
                    return
                length, pos = int.from_bytes(buf[2:4], "big"), 4
            elif length == 127:
                if len(buf) < 10:
                    return
                length, pos = int.from_bytes(buf[2:10], "big"), 10
            mask = b""
            if masked:
                mask, pos = bytes(buf[pos : pos + 4]), pos + 4
            if len(buf) < pos + length:
                return
            payload = bytes(buf[pos : pos + length])
            del buf[: pos + length]
            if mask:
                payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
            if opcode in (1, 2):
                self.ws_send(conn, opcode, payload)
            elif opcode == 9:
                self.ws_send(conn, 10, payload)
            elif opcode == 8:
                self.ws_send(conn, 8, payload[:2])
                conn.closing = True
                return

    def ws_send(self, conn: Conn, opcode: int, payload: bytes) -> None:
        n = len(payload)
        if n < 126:
            head = bytes([0x80 | opcode, n])
        elif n < 65536:
            head = bytes([0x80 | opcode, 126]) + n.to_bytes(2, "big")
        else:
            head = bytes([0x80 | opcode, 127]) + n.to_bytes(8, "big")
        self.send(conn, head + payload)


def main() -> None:
    opts = parse_args(sys.argv[1:])
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    Pod(opts["--pod-id"], opts["--root"]).serve(opts["--host"], int(opts["--port"]))


if __name__ == "__main__":
    main()
