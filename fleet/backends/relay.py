"""The doorway into a sandboxed WebUI: run inside the sandbox, standard library only.

A sandboxed WebUI has a network of its own (a bubblewrap network namespace
holding nothing but its own loopback), so nobody outside can reach the port
it listens on, and it can reach nothing outside: not the broker, not Redis,
not another WebUI. The broker gets in through a listening socket it made in
its own network and handed to this process as file descriptor `--fd`: a
socket keeps the namespace it was made in, so connections the broker opens
to that port arrive here, and this relays each of them to the WebUI on the
sandbox's loopback. Everything else about the socket stays the broker's: the
WebUI's code can at most answer the broker's own requests to it, which it
does anyway.

This process starts the WebUI (the command after `--`), passes it SIGTERM
and SIGINT, and exits with its status, so the pod lives as long as the WebUI.

    python3 -I relay.py --fd 3 --port 7860 -- COMMAND...
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import socket
import sys

CHUNK = 256 * 1024


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while chunk := await reader.read(CHUNK):
            writer.write(chunk)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()  # a half-close goes through: the other way may go on
    except (ConnectionError, OSError):
        writer.transport.abort()


async def _relay(port: int, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
    try:
        webui_r, webui_w = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        client_w.transport.abort()  # not listening yet: the broker's probe sees a refusal
        return
    for w in (client_w, webui_w):
        sock = w.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        await asyncio.gather(_pump(client_r, webui_w), _pump(webui_r, client_w))
    finally:
        for w in (client_w, webui_w):
            w.close()


async def _main(fd: int, port: int, command: list[str]) -> int:
    listener = socket.socket(fileno=fd)
    listener.setblocking(False)
    # The WebUI gets none of our descriptors (close_fds), the listener least of all.
    webui = await asyncio.create_subprocess_exec(*command, close_fds=True)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, _forward, webui, signum)
    connections: set[asyncio.Task[None]] = set()

    def accepted(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> asyncio.Task[None]:
        task = asyncio.ensure_future(_relay(port, r, w))
        connections.add(task)
        task.add_done_callback(connections.discard)
        return task

    server = await asyncio.start_server(accepted, sock=listener, limit=CHUNK)
    status = await webui.wait()
    server.close()
    for task in list(connections):
        task.cancel()
    return status if status >= 0 else 128 - status


def _forward(webui: asyncio.subprocess.Process, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        webui.send_signal(signum)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="relay")
    parser.add_argument("--fd", type=int, required=True, help="the broker's listening socket")
    parser.add_argument("--port", type=int, required=True, help="the WebUI's port in here")
    parser.add_argument("command", nargs="+")
    args = parser.parse_args(argv)
    return asyncio.run(_main(args.fd, args.port, args.command))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
