"""A WebUI that speaks broken HTTP on purpose (standard library only).

    python raw_pod.py --port PORT

/ok answers 200; /cl-te sends Content-Length with Transfer-Encoding, /dup-cl two
Content-Lengths, /switch a 101 to a plain GET, /refuse a 403 to anything (a
WebSocket handshake included) on a connection it keeps open.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib

ANSWERS = {
    b"/ok": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    b"/cl-te": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"5\r\nhello\r\n0\r\n\r\n",
    b"/dup-cl": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok!",
    b"/switch": b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
    b"/refuse": b"HTTP/1.1 403 Forbidden\r\nContent-Length: 2\r\n\r\nno",
}
NOT_FOUND = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"


async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            path = head.split(b" ", 2)[1].split(b"?")[0]
            writer.write(ANSWERS.get(path, NOT_FOUND))
            await writer.drain()
    writer.close()


async def main(port: int) -> None:
    server = await asyncio.start_server(serve, "127.0.0.1", port)
    await server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--pod-id", default="")
    asyncio.run(main(parser.parse_args().port))
