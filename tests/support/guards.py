"""Test guards (issue 18): what reviews miss fails the test that did it.

- A blocking call made by broker/, fleet/ or reaper/ code while an event loop
  runs in the thread fails at once (blockbuster, as aiohttp's own suite does:
  aio-libs/aiohttp tests/conftest.py, fixture `blockbuster`), with a short
  allow-list below, each entry with its reason and figure.
- An async test that leaves a task of its loop pending, or drops an exception
  nobody retrieved ("Task exception was never retrieved", any other call of the
  loop's exception handler), fails naming the task's coroutine or the message
  (kopf's tests/conftest.py `_no_asyncio_pending_tasks` does the first).
- Unclosed sockets, files, transports and subprocesses: pyproject no longer
  ignores ResourceWarning, so the one a finalizer raises becomes pytest's
  PytestUnraisableExceptionWarning, an error; a collection at each test's end
  pins it on the test that leaked.

Loaded by tests/conftest.py (`pytest_plugins`).
"""

from __future__ import annotations

import asyncio
import fcntl
import gc
import inspect
import os
import sys
from collections.abc import AsyncIterator, Iterator
from types import FrameType
from typing import Any

import pytest
from blockbuster import BlockBuster, BlockBusterFunction

from tests.support.procs import REPO

SCANNED = ["broker", "fleet", "reaper"]
PRODUCT = tuple(str(REPO / name) + os.sep for name in SCANNED)
TESTS = str(REPO / "tests") + os.sep

# Deliberate blocking calls in the loop: (blockbuster's function keys or "*", file suffix,
# function names, why). A function named here lets through what runs beneath it.
ALLOWED: list[tuple[tuple[str, ...], str, set[str], str]] = [
    # The local backend keeps its pods in small files of its data dir, on purpose in the
    # loop where a thread's hop cost more (it waits for the GIL behind a busy loop); the
    # figures are the ones in fleet/backends/local.py and base.py. A flock never is: "*"
    # is every function but fcntl.flock (a LOCK_EX may wait for another broker).
    (
        # A lock tried (LOCK_NB), two small reads, a small write: ~50 us (mark_claimed).
        ("*",),
        "fleet/backends/local.py",
        {"_mark_claimed"},
        "claim record read under the lock, ~50 us",
    ),
    (
        # The controller's pass: two stats per unchanged pod, read in slices of 50 pods
        # between turns of the loop, ~1 ms a slice (observe, OBSERVE_SLICE); a thread held
        # the GIL against the loop for the whole pass. stop_all (demo exit) reads the same.
        ("*",),
        "fleet/backends/local.py",
        {"observe", "stop_all"},
        "records pass in slices of 50 pods, ~1 ms each",
    ),
    (
        # A pod's start: its home (mkdir, chown), its empty claim file, its record: ~340 us
        # measured on this machine, one pod at a time (_creating). Its process is spawned
        # and the uid counter's flock taken in threads. A delete: a record read, two
        # unlinks, psutil's /proc reads while its process ends (~55 us each, _alive).
        ("*",),
        "fleet/backends/local.py",
        {"_create", "delete", "outputs_path", "prepare_outputs"},
        "a pod's own files at start and delete, ~340 us",
    ),
    (
        # The one flock let through: a claim's reader (LOCK_SH) waits only while another
        # broker writes that claim, the ~50 us of _mark_claimed; the observe pass reads
        # claims in the loop by design (above). A writer's LOCK_EX is tried with LOCK_NB.
        ("fcntl.flock",),
        "fleet/backends/local_records.py",
        {"read_claim"},
        "shared lock against a ~50 us claim write",
    ),
    (
        # One mkdir of a user's outputs folder, tens of us (base.py prepare_outputs).
        ("*",),
        "fleet/backends/base.py",
        {"_make_folder"},
        "one mkdir, tens of us",
    ),
    (
        # kubernetes_asyncio 36.1.0 config/kube_config.py KubeConfigLoader.load_and_set:
        # the token file's read, the CA's temp file (abspath, stat, a small write). Once,
        # when a backend starts, before the broker serves; the KUBECONFIG read and parse
        # itself runs in a thread (fleet/backends/kubeclient.py kube_config_loader).
        ("*",),
        "kubernetes_asyncio/config/kube_config.py",
        {"load_and_set"},
        "kubeconfig's small files, once at start",
    ),
    (
        # ruamel.yaml 0.19.1 main.py YAML.__init__ globs its own package folder for plug-ins
        # (official_plug_ins): a cached directory, the whole YAML() ~64 us measured, when a
        # fleet spec is parsed (a spec change: rare, and its parse is milliseconds of CPU).
        ("os.scandir", "os.stat", "os.path.islink"),
        "ruamel/yaml/main.py",
        {"official_plug_ins"},
        "ruamel's plug-in glob, ~64 us per YAML()",
    ),
    (
        # kubernetes_asyncio 36.1.0 kube_config.py KubeConfigLoader._get_base_path: one
        # os.getcwd (abspath) when an exec plugin's token is refreshed, ~1 us.
        ("os.path.abspath",),
        "kubernetes_asyncio/config/kube_config.py",
        {"_get_base_path"},
        "one getcwd per token refresh",
    ),
    (
        # redis-py 8.2 asyncio/connection.py RedisSSLContext.get -> utils.get_shared_ssl_context:
        # a new pooled TLS connection stats the cert files (~4 stats, a few us); the context
        # itself is built (the files loaded) once per version of the files and shared.
        ("*",),
        "redis/asyncio/connection.py",
        {"get"},
        "TLS context: stats per new pooled connection, one build per file version",
    ),
]


def _flock_allowed(_fd: Any, operation: int, *_: Any) -> bool:
    """LOCK_NB and LOCK_UN never wait: only a blocking LOCK_EX/LOCK_SH is a finding."""
    return bool(operation & fcntl.LOCK_NB) or operation == fcntl.LOCK_UN


def _called_by_a_test() -> bool:
    """A test (or its helper) calling one of our plain functions from its own coroutine:
    the test's choice, not the product's. Production coroutines and loop callbacks are
    always scanned: only a sync outermost production frame whose caller is under tests/
    is let through."""
    frame: FrameType | None = sys._getframe(2)
    outermost = None
    while frame is not None:
        if frame.f_code.co_filename.startswith(PRODUCT):
            outermost = frame
        frame = frame.f_back
    if outermost is None or outermost.f_code.co_flags & inspect.CO_COROUTINE:
        return False
    caller = outermost.f_back
    return caller is not None and caller.f_code.co_filename.startswith(TESTS)


def _unless_called_by_a_test(function: BlockBusterFunction) -> None:
    own = function.can_block_predicate

    def predicate(*args: Any, **kwargs: Any) -> bool:
        return own(*args, **kwargs) or _called_by_a_test()

    function.can_block_predicate = predicate


@pytest.fixture(scope="session")
def _blockbuster() -> BlockBuster:
    bb = BlockBuster(SCANNED)
    # blockbuster 1.5.29 does not watch fcntl.flock: a LOCK_EX waits for another process.
    bb.functions["fcntl.flock"] = BlockBusterFunction(
        None, "fcntl.flock", scanned_modules=SCANNED, can_block_predicate=_flock_allowed
    )
    every = [key for key in bb.functions if key != "fcntl.flock"]
    for keys, filename, functions, _why in ALLOWED:
        for key in every if keys == ("*",) else keys:
            bb.functions[key].can_block_in(filename, functions)
    for function in bb.functions.values():
        _unless_called_by_a_test(function)
    return bb


@pytest.fixture(autouse=True)
def no_blocking_in_loop(_blockbuster: BlockBuster) -> Iterator[BlockBuster]:
    """Any test whose loop runs our code: a blocking call there raises BlockingError."""
    _blockbuster.activate()
    try:
        yield _blockbuster
    finally:
        _blockbuster.deactivate()
        # Torn down last of the test's fixtures (autouse, first set up): a leaked
        # socket's ResourceWarning is raised now, while pytest still pins it on this test.
        gc.collect()


class LoopFindings:
    """What the loop's exception handler was told during one test."""

    def __init__(self) -> None:
        self.contexts: list[dict[str, Any]] = []

    def handler(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        self.contexts.append(context)
        loop.default_exception_handler(context)  # still logged as usual

    def describe(self) -> list[str]:
        out = []
        for ctx in self.contexts:
            exc = ctx.get("exception")
            where = ctx.get("task") or ctx.get("future") or ""
            out.append(f"{ctx.get('message')}: {exc!r} {_name(where) if where else ''}".strip())
        return out


def _name(task: Any) -> str:
    """The task's coroutine, as `qualname (file:line)`: what to look for in the code."""
    coro = task.get_coro() if isinstance(task, asyncio.Task) else None
    if coro is None:
        return repr(task)
    code = getattr(coro, "cr_code", None) or getattr(coro, "gi_code", None)
    qualname = getattr(coro, "__qualname__", None) or (code.co_name if code else repr(coro))
    origin = f" ({code.co_filename}:{code.co_firstlineno})" if code else ""
    return f"{qualname}{origin}"


@pytest.fixture
async def loop_guard() -> AsyncIterator[LoopFindings]:
    """Torn down after the test's other async fixtures, before the loop closes."""
    loop = asyncio.get_running_loop()
    findings = LoopFindings()
    loop.set_exception_handler(findings.handler)
    yield findings
    me = asyncio.current_task()
    pending = [t for t in asyncio.all_tasks(loop) if t is not me and not t.done()]
    if pending:  # a task cancelled just now may need a turn or two to finish
        _, pending_set = await asyncio.wait(pending, timeout=0.5)
        pending = list(pending_set)
    gc.collect()  # a dropped task's finalizer reports its unretrieved exception now
    problems = [f"task left pending: {_name(t)}" for t in pending]
    problems += [f"loop exception handler: {d}" for d in findings.describe()]
    for task in pending:  # leave no task behind for the next test either
        task.cancel()
    if pending:
        await asyncio.wait(pending, timeout=1.0)
    if loop.get_exception_handler() == findings.handler:
        loop.set_exception_handler(None)
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


@pytest.fixture(autouse=True)
def _async_guards(request: pytest.FixtureRequest) -> None:
    """Async tests only: sync tests need no loop of their own for this."""
    if inspect.iscoroutinefunction(getattr(request.node, "function", None)):
        request.getfixturevalue("loop_guard")


def pytest_collection_finish(session: pytest.Session) -> None:
    """What importing the suite made is kept out of the collections above: a full one
    over it costs ~140 ms, one over a test's own objects a few ms."""
    gc.collect()
    gc.freeze()
