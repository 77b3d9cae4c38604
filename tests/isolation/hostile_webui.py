"""A WebUI whose user runs hostile code: the stand-in WebUI plus GET /attack.

It serves everything the stand-in serves (so the broker starts, probes and
claims it as any WebUI), and /attack runs, from inside this process, what an
A1111 extension or a ComfyUI custom node could run: read the broker's secrets
from the environment and the data dir, talk to Redis, reach a neighbour
WebUI, use the broker as a trusted proxy, read and write another user's
images, read other processes' command lines and environments.

The targets come in the request's JSON body (the test knows them; an attacker
would guess or scan). The answer is one line per attack: "ok: ..." when the
attack worked, "refused: ..." when it did not.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "webui-image" / "stub"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import webui_stub
from attacks import attacks


async def attack(request: web.Request) -> web.Response:
    targets = await request.json()
    results = await asyncio.to_thread(attacks, targets)
    return web.json_response(results, dumps=lambda o: json.dumps(o, indent=1))


def main() -> None:
    args = webui_stub.parse_args()
    app = webui_stub.build_app(args)
    app.router.add_post("/attack", attack)
    web.run_app(app, host=args.host, port=args.port, print=None, shutdown_timeout=0.2)


if __name__ == "__main__":
    main()
