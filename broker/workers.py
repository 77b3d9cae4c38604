"""`SDB_WORKERS` > 1: several broker processes share one port (SO_REUSEPORT).

One asyncio process proxies on one core; on a machine with more, the kernel
spreads connections over N identical workers. The workers are stateless, so
this supervisor only owns what must exist once: the embedded Redis (when no
SDB_REDIS_URL is given) and, at exit, stopping the fleet the same way a
single broker does. A worker that dies is started again.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

from prometheus_client import multiprocess

from fleet import (
    EmbeddedRedis,
    FleetSpec,
    FleetStore,
    connect_redis,
    die_with_parent,
    make_backend,
    stop_fleet,
)

from .metrics import MULTIPROC_DIR
from .settings import Settings

log = logging.getLogger(__name__)
RESTART_DELAY = 1.0
STOP_TIMEOUT = 20.0


def supervise(settings: Settings, spec: FleetSpec, *, banner: str = "") -> int:
    """Run the workers until SIGINT/SIGTERM; `banner` is printed once one of them listens."""
    settings.secret()  # create the shared cookie key once, before workers race to
    embedded = EmbeddedRedis(settings.data_dir) if not settings.redis_url else None
    if embedded is not None:
        asyncio.run(embedded.start())
    redis_url = settings.redis_url or (embedded.url if embedded is not None else "")
    metrics = settings.data_dir / "metrics" / str(os.getpid())
    shutil.rmtree(metrics.parent, ignore_errors=True)  # counts of an earlier run are not ours
    metrics.mkdir(parents=True)
    env = {
        **os.environ,
        MULTIPROC_DIR: str(metrics),
        "SDB_WORKERS": "1",
        "SDB_REDIS_URL": redis_url,
        "SDB_STOP_PODS_ON_EXIT": "false",  # the supervisor stops the fleet, once
    }
    stopping = False

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    workers: list[subprocess.Popen[bytes]] = [_spawn(env) for _ in range(settings.worker_count)]
    log.info("supervising %d workers: %s", len(workers), [w.pid for w in workers])
    try:
        while banner and not stopping and all(w.poll() is None for w in workers):
            if _listening(settings.host, settings.port):
                print(banner, flush=True)
                break
            time.sleep(0.05)
        while not stopping:
            for i, worker in enumerate(workers):
                if worker.poll() is not None and not stopping:
                    log.error(
                        "worker %s exited with %s; starting another", worker.pid, worker.returncode
                    )
                    multiprocess.mark_process_dead(worker.pid, str(metrics))
                    time.sleep(RESTART_DELAY)
                    workers[i] = _spawn(env)
            time.sleep(0.2)
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        for worker in workers:
            try:
                worker.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                worker.kill()
        if _stops_pods(settings):
            asyncio.run(_stop_fleet(env["SDB_REDIS_URL"], settings, spec))
        if embedded is not None:
            asyncio.run(embedded.stop())
        shutil.rmtree(metrics, ignore_errors=True)
    return 0


def _listening(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _spawn(env: dict[str, str]) -> subprocess.Popen[bytes]:
    """A worker that stops (SIGTERM, so it drains) when this supervisor dies, even by
    SIGKILL: an orphaned worker would go on serving the port unsupervised, with the
    metrics folder gone and no fleet stop at the end."""
    supervisor = os.getpid()
    return subprocess.Popen(
        [sys.executable, "-m", "broker", "serve", "--worker"],
        env=env,
        # The main thread forks: PR_SET_PDEATHSIG follows the forking thread.
        preexec_fn=lambda: die_with_parent(supervisor),
    )


def _stops_pods(settings: Settings) -> bool:
    if settings.stop_pods_on_exit is not None:
        return settings.stop_pods_on_exit
    return settings.redis_url is None


async def _stop_fleet(url: str, settings: Settings, spec: FleetSpec) -> None:
    redis = connect_redis(url)
    backend = make_backend(spec, settings.data_dir)
    try:
        await backend.start()
        await stop_fleet(FleetStore(redis), backend, spec)
    finally:
        await backend.close()
        await redis.aclose()
