"""`python -m reaper --once [--dry-run]` (also `sdbroker reap`): one cycle, for a CronJob.

The very code the broker schedules, run once: it prints one JSON line on
stdout (the cycle's summary, or the error) and exits 0 after a cycle, 1 when
Redis could not be reached (the Job fails and the next run tries again), 2
when the settings or the fleet file are wrong, or Redis holds a layout this
release does not know (fleet/schema.py). Logs go to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict

import aiohttp
from pydantic import ValidationError

from fleet import (
    Backend,
    FleetError,
    FleetSpec,
    FleetStore,
    LayoutError,
    SpecError,
    StoreUnavailable,
    connect_redis,
    ensure_layout,
    load_spec,
    make_backend,
)

from .cycle import Clock, ReapCycle, Summary
from .settings import ReaperSettings

log = logging.getLogger(__name__)
EXIT_OK, EXIT_REDIS, EXIT_USAGE = 0, 1, 2


async def _backend(spec: FleetSpec, settings: ReaperSettings) -> Backend | None:
    """The fleet's backend, to tell dead pods at once; without it they die by missed probes."""
    try:
        backend = make_backend(spec, settings.data_dir)
        await backend.start()
    except (FleetError, NotImplementedError, OSError) as exc:
        log.warning("reaper: no backend (%s); dead pods are found by missed probes only", exc)
        return None
    return backend


async def run_once(
    settings: ReaperSettings,
    spec: FleetSpec,
    *,
    dry_run: bool = False,
    clock: Clock = time.time,
) -> Summary:
    """One cycle against the Redis the settings name; StoreUnavailable when it cannot be reached."""
    url = settings.redis_address()
    if url is None:
        raise StoreUnavailable(
            f"Redis unreachable: SDB_REDIS_URL is not set and there is no embedded Redis "
            f"socket under {settings.data_dir}"
        )
    redis = connect_redis(url, pool_size=8)
    store = FleetStore(redis, clock=clock)
    backend: Backend | None = None
    try:
        await store.ping()
        # The CronJob reads and writes the broker's keys: a layout it does not know is
        # as wrong for it as for a broker (fleet/schema.py).
        await ensure_layout(redis)
        backend = await _backend(spec, settings)
        async with aiohttp.ClientSession() as http:
            cycle = ReapCycle(
                store,
                spec,
                http,
                backend=backend,
                settle=settings.activity_flush,
                missed_probes=settings.reap_missed_probes,
                clock=clock,
            )
            return await cycle.run(dry_run=dry_run)
    finally:
        if backend is not None:
            await backend.close()
        await redis.aclose()


def build_parser(prog: str = "python -m reaper") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Reclaim idle WebUI pods: one cycle, one JSON line (for a Kubernetes CronJob).",
    )
    parser.add_argument(
        "--once", action="store_true", help="run one cycle and exit (required: the broker "
        "runs the periodic reaper itself, every SDB_REAP_INTERVAL)",
    )  # fmt: skip
    parser.add_argument(
        "--dry-run", action="store_true", help="report what would be reclaimed; change nothing"
    )
    return parser


def main(argv: Sequence[str] | None = None, *, prog: str = "python -m reaper") -> int:
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    if not args.once:
        parser.print_usage(sys.stderr)
        print(f"{prog}: --once is required", file=sys.stderr)
        return EXIT_USAGE
    try:
        settings = ReaperSettings()
    except ValidationError as exc:
        for err in exc.errors():
            print(f"SDB_{str(err['loc'][0]).upper()}: {err['msg']}", file=sys.stderr)
        return EXIT_USAGE
    logging.basicConfig(
        stream=sys.stderr,
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        spec = load_spec(settings.fleet)
    except SpecError as exc:
        print(exc, file=sys.stderr)
        return EXIT_USAGE
    try:
        summary = asyncio.run(run_once(settings, spec, dry_run=args.dry_run))
    except StoreUnavailable as exc:
        failed = {"error": str(exc), **asdict(Summary(dry_run=args.dry_run))}
        print(json.dumps(failed, separators=(",", ":")), flush=True)
        return EXIT_REDIS
    except LayoutError as exc:
        failed = {"error": str(exc), **asdict(Summary(dry_run=args.dry_run))}
        print(json.dumps(failed, separators=(",", ":")), flush=True)
        print(f"SDB_REDIS_URL: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(summary.json_line(), flush=True)
    return EXIT_OK
