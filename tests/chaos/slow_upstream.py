"""A misbehaving WebUI for the fault tests: plain asyncio, no imports from the project.

    python slow_upstream.py --port 8123 --pod-id pod-a

GET /ready      200 at once (the readiness probe)
GET /whoami     200 {"pod", "user"} at once
GET /hang       reads the request, then never answers (the socket stays open)
GET /trickle    ?every=S&count=N (1, 60): headers with Content-Length N, then one byte every S seconds
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, pod: str) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            path = lines[0].split(" ")[1] if " " in lines[0] else "/"
            headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
            user = next((v for k, v in headers.items() if k.lower() == "x-forwarded-user"), None)
            path, _, query = path.partition("?")
            params = dict(p.partition("=")[::2] for p in query.split("&") if p)
            if path == "/hang":
                await asyncio.Event().wait()  # until the client gives up and the task is cancelled
            if path == "/trickle":
                count, every = int(params.get("count", 60)), float(params.get("every", 1))
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n")
                writer.write(b"Content-Length: %d\r\n\r\n" % count)
                for _ in range(count):
                    await writer.drain()
                    await asyncio.sleep(every)
                    writer.write(b".")
                await writer.drain()
                continue
            body = json.dumps({"pod": pod, "user": user}).encode()
            status = b"200 OK" if path in ("/ready", "/whoami") else b"404 Not Found"
            writer.write(
                b"HTTP/1.1 "
                + status
                + b"\r\nContent-Type: application/json\r\n"
                + b"Content-Length: "
                + str(len(body)).encode()
                + b"\r\n\r\n"
                + body
            )
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
        pass
    finally:
        writer.close()


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--pod-id", required=True)
    args = parser.parse_args()
    server = await asyncio.start_server(
        lambda r, w: handle(r, w, args.pod_id), "127.0.0.1", args.port
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


if __name__ == "__main__":
    asyncio.run(main())
