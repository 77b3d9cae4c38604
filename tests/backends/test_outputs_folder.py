"""The user's outputs folder on one machine (LocalBackend.prepare_outputs).

Made on the claim's path, so it must be cheap: one mkdir in the event loop
when the base is there, a thread only when the base itself is missing.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from fleet import BackendError, parse_spec
from fleet.backends.local import LocalBackend


def backend_for(tmp_path: Path) -> LocalBackend:
    spec = parse_spec(
        f"""\
backend: local
outputs: {tmp_path / "out" / "users"}
profiles:
  - name: default
    max: 1
    probe: http:/ready
    local:
      command: [fake, "{{port}}", "{{pod}}"]
"""
    )
    return LocalBackend(spec, tmp_path / "data")


def is_folder(path: str) -> bool:
    return Path(path).is_dir()


def names_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


async def test_a_missing_base_is_made_then_folders_cost_no_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = backend_for(tmp_path)
    await backend.prepare_outputs("ann-1")  # the base is missing: made, in a thread
    assert is_folder(backend.outputs_path("ann-1"))

    async def no_thread(*_a: object, **_k: object) -> None:
        raise AssertionError("a thread's hop on the claim's path")

    monkeypatch.setattr(asyncio, "to_thread", no_thread)
    await backend.prepare_outputs("bob-2")  # a first claim, the base there
    await backend.prepare_outputs("ann-1")  # a returning user
    assert is_folder(backend.outputs_path("bob-2"))
    assert names_in(tmp_path / "out" / "users") == ["ann-1", "bob-2"]


async def test_a_file_where_the_folder_goes_is_a_clear_error(tmp_path: Path) -> None:
    backend = backend_for(tmp_path)
    await backend.prepare_outputs("ann-1")
    with open(backend.outputs_path("cy-3"), "w") as f:  # noqa: ASYNC230 - a test's setup
        f.write("not a folder")
    with pytest.raises(BackendError, match="is a file, not a folder"):
        await backend.prepare_outputs("cy-3")


async def test_a_base_that_is_no_folder_is_a_clear_error(tmp_path: Path) -> None:
    backend = backend_for(tmp_path)
    (tmp_path / "out").mkdir()
    with open(tmp_path / "out" / "users", "w") as f:  # noqa: ASYNC230 - a test's setup
        f.write("a file where the base goes")
    with pytest.raises(BackendError, match="cannot make the outputs folder"):
        await backend.prepare_outputs("dee-4")
