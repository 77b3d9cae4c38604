"""Run the simulated cluster as its own process.

    python -m tests.kubeapi --nodes 4 --time-scale 60 --start-delay 60,120 \\
        --kubeconfig /tmp/kubesim.yaml \\
        --runner "{python} webui-image/stub/webui_stub.py --host {ip} --port {port} --pod-id {name}"

It prints `kubesim listening on URL` once ready, serves until SIGINT/SIGTERM,
and takes failures over HTTP: `POST URL/_sim/<action>` (see admin.py).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shlex
import signal
from pathlib import Path

from .processes import ProcessRunner
from .sim import KubeSim


def _span(text: str) -> tuple[float, float]:
    low, _, high = text.partition(",")
    return float(low), float(high or low)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tests.kubeapi", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--nodes", type=int, default=1)
    parser.add_argument("--gpus-per-node", type=int, default=1)
    parser.add_argument(
        "--start-delay", type=_span, default=(0.0, 0.0), help="simulated seconds, A or A,B"
    )
    parser.add_argument(
        "--ready-delay", type=_span, default=(0.0, 0.0), help="simulated seconds, A or A,B"
    )
    parser.add_argument("--time-scale", type=float, default=1.0)
    parser.add_argument("--token", default="kubesim-token")
    parser.add_argument(
        "--anonymous",
        action="store_true",
        help="also accept requests without a token (kubectl sends none over plain http)",
    )
    parser.add_argument("--kubeconfig", type=Path, help="write a kubeconfig here")
    parser.add_argument("--namespace", default="default", help="the kubeconfig's namespace")
    parser.add_argument(
        "--runner", help="command template run for each pod ({ip} {port} {name} ...)"
    )
    parser.add_argument("--ready-path", help="HTTP path that makes a runner pod Ready")
    parser.add_argument("--log-dir", type=Path, help="where runner processes write their output")
    parser.add_argument("--seed", type=int)
    return parser.parse_args(argv)


async def serve(args: argparse.Namespace) -> None:
    runner = None
    if args.runner:
        runner = ProcessRunner(
            shlex.split(args.runner), ready_path=args.ready_path, log_dir=args.log_dir
        )
    sim = KubeSim(
        nodes=args.nodes,
        gpus_per_node=args.gpus_per_node,
        start_delay=args.start_delay,
        ready_delay=args.ready_delay,
        time_scale=args.time_scale,
        process_runner=runner,
        token=args.token,
        allow_anonymous=args.anonymous,
        host=args.host,
        port=args.port,
        seed=args.seed,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with sim:
        if args.kubeconfig:
            sim.write_kubeconfig(args.kubeconfig, args.namespace)
        print(f"kubesim listening on {sim.url}", flush=True)
        await stop.wait()


def main(argv: list[str] | None = None) -> None:
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(parse_args(argv)))


if __name__ == "__main__":
    main()
