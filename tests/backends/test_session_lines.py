"""A session's start and end lines name its user's groups and its pod's node on
Kubernetes (issue 19 §3, every GPU-minute attributed): the kubernetes backend on the
test API server, whose scheduler puts the pod on a node, and a real Redis."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from fleet import Claim, Tell
from tests.backends.harness import harness


async def test_start_and_end_lines_name_groups_and_node(
    redis_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Before: the start line had no groups and, on Kubernetes, no node; the end line no
    groups, start or end, so a log sink could not charge a group for the GPU time."""
    async with harness("kubernetes", redis_url, tmp_path, buffer=1, max=2, nodes=1) as h:
        await h.ready(1)
        with caplog.at_level(logging.INFO):
            claim = await h.fleet.claim("ann", groups=["staff", "artists"])
            assert isinstance(claim, Claim)
            assert await h.store.end_pod(claim.pod, "idle", tell=Tell("reaper"))
        lines = {r.__dict__.get("event"): r.__dict__ for r in caplog.records}
        start, end = lines["session_start"], lines["session_end"]
        assert (start["groups"], start["node"], start["start"]) == (
            ["artists", "staff"],
            "node-1",
            claim.since,
        )
        assert (end["groups"], end["node"], end["start"]) == (
            ["artists", "staff"],
            "node-1",
            claim.since,
        )
        assert end["end"] >= end["start"] and end["reason"] == "idle"
        (entry,) = [e for e in await h.store.recent_audit() if e.get("user") == "ann"]
        assert (entry["groups"], entry["node"]) == ('["artists","staff"]', "node-1")
