"""A probe kind is registered in one place (fleet.probes) and every part follows.

Issue 18 item 5: a kind used to be listed in probes.py, spec_types.py and
activity_rules.py plus a fallback in the reaper; adding one touched all four.
Here one `register_kind` call makes the spec accept it, the reaper ask its
probe, and the activity classifier use its default rules.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from fleet import Probe, SpecError, WebUIKind, parse_spec, register_kind, unregister_kind
from fleet.activity_rules import classifier_for
from tests.support.procs import STUB

from .conftest import IDLE, SPEC, Harness


class AlwaysBusy(Probe):
    """A WebUI kind whose every pod says it is working: the reaper must keep it."""

    asked: list[str] = []

    async def busy(self, http: aiohttp.ClientSession, addr: str) -> bool:
        AlwaysBusy.asked.append(addr)
        return True


@pytest.fixture
def always_busy() -> Iterator[WebUIKind]:
    AlwaysBusy.asked = []
    kind = register_kind(
        WebUIKind(
            "always-busy",
            lambda _: AlwaysBusy("/internal/ping"),
            ignore=("GET /poll/*",),
            count=("GET /work",),
        )
    )
    yield kind
    unregister_kind(kind.name)


def _spec_text(tmp_path: Path, probe: str) -> str:
    text = SPEC.format(
        idle=IDLE, max_session="null", outputs=tmp_path / "out", stub=STUB, delay=0.2
    )
    return text.replace("probe: a1111", f"probe: {probe}")


def test_an_unregistered_kind_is_refused_naming_the_registered_ones(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="must be a1111, comfyui or http:/some/path"):
        parse_spec(_spec_text(tmp_path, "always-busy"))


def test_a_registered_kind_is_accepted_and_named_in_messages(
    always_busy: WebUIKind, tmp_path: Path
) -> None:
    spec = parse_spec(_spec_text(tmp_path, "always-busy"))
    assert spec.profiles[0].probe == "always-busy"
    with pytest.raises(SpecError, match="http:/some/path or always-busy, got 'always-busy:/x'"):
        parse_spec(_spec_text(tmp_path, "always-busy:/x"))  # a bare kind takes no argument


def test_a_registered_kind_brings_its_default_activity_rules(
    always_busy: WebUIKind, tmp_path: Path
) -> None:
    rules = classifier_for(parse_spec(_spec_text(tmp_path, "always-busy")), "default")
    assert rules.explain("GET", "/poll/status") == (
        False,
        "always-busy default ignore: GET /poll/*",
    )
    assert rules.explain("GET", "/work") == (True, "always-busy default count: GET /work")
    # a1111's defaults are not mixed in: its POST /* count rule does not apply here
    assert rules.explain("POST", "/run/predict") == (False, "fallback: not user activity")


async def test_the_reaper_asks_a_registered_kinds_probe(
    always_busy: WebUIKind, redis_url: str, tmp_path: Path
) -> None:
    """The stub WebUI is idle, so a1111's probe would let the reaper reclaim it;
    the registered kind's probe says busy and the session is kept."""
    h = Harness(redis_url, parse_spec(_spec_text(tmp_path, "always-busy")), tmp_path / "data")
    try:
        await h.start()
        claim = (await h.sessions("ann"))["ann"]
        h.clock.advance(IDLE + 30)
        summary = await h.cycle().run()
        assert (summary.checked, summary.busy, summary.reclaimed) == (1, 1, 0)
        assert AlwaysBusy.asked == [claim.addr]
        assert await h.claim_of("ann") is not None
    finally:
        await h.close()
