"""The suite's guards (tests/support/guards.py) can fail: each runs on a test that
does the wrong thing, in a pytest of its own, and must fail naming the problem."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.support.procs import REPO

CASES = {
    "blocking_flock": (
        """
        from fleet.backends.isolation import next_uid

        async def test_it(tmp_path):
            next_uid(tmp_path / "pod-uids")  # fcntl.flock(LOCK_EX) in the loop
        """,
        "BlockingError: Blocking call to fcntl.flock",
    ),
    "blocking_read": (
        """
        from fleet.backends.local_records import read_record

        async def test_it(tmp_path):
            (tmp_path / "pod-1.json").write_text("{}")
            read_record(tmp_path, "pod-1")  # a file read in the loop
        """,
        "BlockingError: Blocking call to io.BufferedReader.read",
    ),
    "leaked_task": (
        """
        import asyncio

        async def forgotten_worker():
            await asyncio.sleep(3600)

        async def test_it():
            asyncio.get_running_loop().create_task(forgotten_worker())
        """,
        "task left pending: forgotten_worker",
    ),
    "unretrieved_exception": (
        """
        import asyncio

        async def boom():
            raise ValueError("nobody looked at me")

        async def test_it():
            asyncio.get_running_loop().create_task(boom())
            await asyncio.sleep(0.01)
        """,
        "Task exception was never retrieved: ValueError('nobody looked at me')",
    ),
    "leaked_socket": (
        """
        import socket

        def test_it():
            sock = socket.socket()
            sock = None
        """,
        "ResourceWarning: unclosed <socket.socket",
    ),
    "leaked_transport": (
        """
        import asyncio

        async def test_it():
            server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
            port = server.sockets[0].getsockname()[1]
            _reader, writer = await asyncio.open_connection("127.0.0.1", port)
            server.close()
            await server.wait_closed()
            writer = None
        """,
        "ResourceWarning: unclosed",
    ),
}


def run_pytest(tmp_path: Path, source: str) -> subprocess.CompletedProcess[str]:
    """A pytest with this project's settings and guards, on one test file."""
    test = tmp_path / "test_case.py"
    test.write_text(textwrap.dedent(source))
    settings = ["-c", str(REPO / "pyproject.toml"), "--rootdir", str(REPO)]
    plugins = ["-p", "tests.support.guards", "-p", "no:cacheprovider"]
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", *plugins, *settings, str(test)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize("case", sorted(CASES))
def test_guard_fails_the_test_naming_the_problem(tmp_path: Path, case: str) -> None:
    source, named = CASES[case]
    done = run_pytest(tmp_path, source)
    out = done.stdout + done.stderr
    assert done.returncode == 1, out
    assert named in out, out


def test_a_clean_test_passes(tmp_path: Path) -> None:
    """The guards stay quiet for a test that tidies up: they fail only what they name."""
    done = run_pytest(
        tmp_path,
        """
        import asyncio, socket
        from fleet.backends.isolation import next_uid

        async def test_it(tmp_path):
            task = asyncio.get_running_loop().create_task(asyncio.sleep(0))
            await task
            with socket.socket():
                pass
            await asyncio.to_thread(next_uid, tmp_path / "pod-uids")
        """,
    )
    assert done.returncode == 0, done.stdout + done.stderr
