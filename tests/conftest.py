"""Fixtures shared by the whole suite: a real Redis server, real brokers, clean state."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest
import redis

from tests.support import in_ci
from tests.support.procs import Broker, RedisServer, kill_pods, write_fleet

# Blocking calls in the loop, leaked tasks, unretrieved exceptions (issue 18).
pytest_plugins = ["tests.support.guards"]


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """A clean database on the shared real Redis server."""
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    client.close()
    return redis_server.url


@pytest.fixture
def brokers(tmp_path: Path, redis_url: str) -> Iterator[Callable[..., Broker]]:
    """Start `sdbroker serve` processes; all of them and their pods are stopped afterwards."""
    started: list[Broker] = []
    data_dirs: set[Path] = set()

    def start(*, fleet: Path | None = None, data_dir: Path | None = None, redis: str | None = redis_url,
              **env: str) -> Broker:  # fmt: skip
        data = data_dir or tmp_path / "data"
        fleet_file = fleet or write_fleet(tmp_path / "fleet.yaml", outputs=tmp_path / "outputs")
        data_dirs.add(data)
        for attempt in range(3):
            broker = Broker(data, fleet_file, redis, **env)
            started.append(broker)
            try:
                return broker.start()
            except RuntimeError:
                # A pod started meanwhile may have taken the free port picked for us.
                if attempt == 2 or "address already in use" not in broker.log_text():
                    raise
        raise AssertionError("unreachable")

    yield start
    for broker in started:
        # Pods are the broker's children (in sessions of their own): take them
        # down too, even those whose record was never written.
        children = []
        if broker.proc and broker.proc.poll() is None:
            with contextlib.suppress(psutil.Error):
                children = psutil.Process(broker.proc.pid).children(recursive=True)
        broker.kill()
        for child in children:
            with contextlib.suppress(psutil.Error):
                child.kill()
    for data in data_dirs:
        kill_pods(data)


@pytest.fixture(scope="session")
def chromium_path() -> str:
    path = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(path).exists():
        if in_ci():
            pytest.fail("CI=true but /usr/bin/chromium is missing: .ci/run installs it")
        pytest.skip("Debian's chromium is not installed (apt-get install chromium); CI installs it")
    return path


@pytest.fixture
def browser(chromium_path: str):
    """Debian's Chromium driven by Playwright (never a downloaded browser)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=chromium_path,
            args=["--no-sandbox", "--disable-background-networking", "--disable-gpu"],
        )
        yield browser
        browser.close()
