"""The console over plain HTTP (scripts off): Reclaim and Delete ask first and keep the
admin's reason; who ended a session is the one named; only session ends are listed as
reclaims; the GPU/node column; the refresh's JSON is the page's own figures, admins only."""

from __future__ import annotations

import re
import time
from pathlib import Path

import redis

from fleet import PodInfo, PodState, keys
from tests.admin.support import Person, eventually, field, fleet_file


def _with_gpus(path: Path, gpus: str) -> Path:
    """The local profile given GPU slots (fleet/spec/models.py LocalProfile.gpus)."""
    path.write_text(path.read_text().replace("    local:\n", f"    local:\n      gpus: {gpus}\n"))
    return path


def _section(page: str, name: str) -> str:
    found = re.search(rf'<section id="{name}".*?</section>', page, re.S)
    assert found, f"no section {name}"
    return found[0]


def _audit(redis_url: str) -> list[dict[str, str]]:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        return [fields for _, fields in client.xrange(keys.AUDIT)]
    finally:
        client.close()


async def test_reclaim_and_delete_ask_first_and_keep_the_reason(
    brokers, tmp_path: Path, redis_url: str
) -> None:
    fleet = fleet_file(tmp_path / "fleet.yaml", tmp_path / "outputs", {"buffer": 2, "max": 3})
    broker = brokers(fleet=fleet, SDB_AUTH="dev", SDB_ADMIN_USERS="root")
    carol, root = Person(broker.url), Person(broker.url)
    try:
        await carol.login("carol")
        first = await eventually(carol.whoami, what="carol's WebUI")
        await root.login("root")

        # The console's button is a GET: it shows what will end and changes nothing.
        _, _, console = await root.page("/_broker/admin")
        assert 'method="get" action="/_broker/admin/reclaim"' in console
        status, _, ask = await root.page("/_broker/admin/reclaim?user=carol")
        assert status == 200 and "Reclaim the session of carol?" in ask
        assert '<label for="reason">' in ask and field(ask, "user") == "carol"
        assert (await carol.whoami()) == first  # asking ended nothing

        # Not an admin: refused, the page and the action.
        assert (await carol.page("/_broker/admin/reclaim?user=carol"))[0] == 403
        # Confirmed, with a reason on two lines: one line in the audit entry's detail.
        status, _, after = await root.post_form(
            "/_broker/admin/reclaim",
            {
                "csrf_token": field(ask, "csrf_token"),
                "user": "carol",
                "reason": " quota\n\x00gone ",
            },
        )
        assert status == 200 and "reclaimed the session of carol" in after
        end = [e for e in _audit(redis_url) if e.get("reason") == "admin" and e.get("user")]
        assert [(e["user"], e["by"], e["detail"]) for e in end] == [("carol", "root", "quota gone")]
        reclaims = _section(after, "reclaims")
        assert "carol" in reclaims and "root" in reclaims and "quota gone" in reclaims

        # Nothing to reclaim: back to the console with a message, no traceback.
        status, path, page = await root.page("/_broker/admin/reclaim?user=nobody")
        assert (status, path) == (200, "/_broker/admin") and "no such session now" in page
        status, _, page = await root.page("/_broker/admin/reclaim?user=Call+0800+now")
        assert status == 200 and "0800" not in page  # a link puts no words on the console

        # Delete asks too; the reason goes with "pod deleted", among the other events.
        rows = re.findall(r'<tr class="pod" data-pod="([^"]+)">(.*?)</tr>', after, re.S)
        ready = [pod for pod, row in rows if "delete-pod" in row and '/user"><' in row]  # nobody's
        assert ready, after
        status, _, ask = await root.page(f"/_broker/admin/delete-pod?pod={ready[0]}")
        assert status == 200 and f"Delete pod {ready[0]}?" in ask
        status, _, after = await root.post_form(
            "/_broker/admin/delete-pod",
            {"csrf_token": field(ask, "csrf_token"), "pod": ready[0], "reason": "bad node"},
        )
        assert status == 200 and f"deleted pod {ready[0]}" in after
        assert "pod deleted: bad node" in _section(after, "events")
        assert ready[0] not in _section(after, "reclaims")  # a warm pod ends nobody's session
    finally:
        await carol.close()
        await root.close()


async def test_only_session_ends_are_listed_as_reclaims_with_who_ended_them(
    brokers, tmp_path: Path, redis_url: str
) -> None:
    fleet = fleet_file(tmp_path / "fleet.yaml", tmp_path / "outputs", {"buffer": 1, "max": 2})
    broker = brokers(fleet=fleet, SDB_AUTH="dev", SDB_ADMIN_USERS="root")
    dave, root = Person(broker.url), Person(broker.url)
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        await dave.login("dave")
        await eventually(dave.whoami, what="dave's WebUI")
        # Entries other parts write that end no session (fleet/reconcile.py, specstore.py,
        # the console's token form): as those parts write them.
        for entry in (
            {"user": "erin", "pod": "p-x", "profile": "default", "reason": "reattached",
             "detail": "the index had lost this claim"},
            {"user": "", "pod": "", "profile": "", "reason": "index_restored", "detail": "epoch"},
            {"user": "", "pod": "", "profile": "default", "reason": "override_dropped", "by": "root",
             "detail": "For now buffer 2 dropped"},
            {"action": "token_create", "token": "tok123", "by": "root"},
        ):  # fmt: skip
            client.xadd(keys.AUDIT, entry)  # type: ignore[arg-type]
        # dave stops his own WebUI from his page.
        _, _, home = await dave.page("/_broker/")
        status, _, _ = await dave.post_form(
            "/_broker/stop", {"csrf_token": field(home, "csrf_token")}
        )
        assert status == 200
        await root.login("root")
        _, _, console = await root.page("/_broker/admin")
        reclaims = _section(console, "reclaims")
        rows = re.findall(r'<tr class="end">(.*?)</tr>', reclaims, re.S)
        assert len(rows) == 1, reclaims
        cells = re.findall(r"<td[^>]*>(.*?)</td>", rows[0], re.S)
        assert (cells[1], cells[4], cells[5]) == ("dave", "stopped", "dave")  # user, reason, by
        for other in ("reattached", "index_restored", "override_dropped", "token_create"):
            assert other not in reclaims, other
            assert other in _section(console, "events"), other
    finally:
        client.close()
        await dave.close()
        await root.close()


async def test_gpu_slots_shown_and_the_refresh_json_is_the_page_s_own(
    brokers, tmp_path: Path
) -> None:
    fleet = fleet_file(tmp_path / "fleet.yaml", tmp_path / "outputs", {"buffer": 2, "max": 2})
    broker = brokers(fleet=_with_gpus(fleet, "[0, 1]"), SDB_AUTH="dev", SDB_ADMIN_USERS="root")
    ann, root = Person(broker.url), Person(broker.url)
    try:
        await ann.login("ann")
        await eventually(ann.whoami, what="ann's WebUI")
        await root.login("root")

        async def both_placed() -> str | None:
            page = (await root.page("/_broker/admin"))[2]
            slots = re.findall(r'data-fig="pod/[^"]+/place">GPU ([01])<', page)
            return page if sorted(slots) == ["0", "1"] else None

        page = await eventually(both_placed, what="both pods on their GPU slots")
        assert re.search(r'data-fig="session/ann/place">GPU [01]<', page)

        async with root.http.get(broker.url + "/_broker/admin/figures") as resp:
            assert resp.status == 200 and resp.content_type == "application/json"
            figures = await resp.json()
        assert figures["rows"]["sessions"] == ["ann"]
        assert re.fullmatch(r"\d\d:\d\d:\d\d", figures["clock"])
        for key in ("profile/default/claimed", "profile/default/sizes", "count/pods"):
            shown = re.search(rf'data-fig="{key}">([^<]*)<', page)
            assert shown and shown[1] == figures["cells"][key], key
        assert figures["cells"]["profile/default/claimed"] == "1"

        # Only admins: ann's cookies get a refusal, not the figures.
        async with ann.http.get(
            broker.url + "/_broker/admin/figures", headers={"Accept": "application/json"}
        ) as resp:
            assert resp.status == 403 and "cells" not in await resp.text()
    finally:
        await ann.close()
        await root.close()


def test_the_gpu_node_cell_says_what_the_backend_knows() -> None:
    """Kubernetes and Agones know the node; the local backend its GPU slot; else a dash."""
    from broker.admin import ops  # here: the other tests also run against an older tree
    from broker.admin.figures import place

    assert place("gke-pool-1-abc", None) == "gke-pool-1-abc"
    assert place(None, "3") == "GPU 3"
    assert place(None, None) == "—"
    kube = PodInfo("p1", "default", PodState.CLAIMED, extra={"node": "gke-pool-1-abc"})
    local = PodInfo("p2", "default", PodState.READY, extra={"pid": "7", "slot": "1"})
    bare = PodInfo("p3", "default", PodState.READY, extra={"slot": "None"})
    assert ops.place(kube) == {"node": "gke-pool-1-abc", "gpu_slot": None}
    assert ops.place(local) == {"node": None, "gpu_slot": "1"}
    assert ops.place(bare) == {"node": None, "gpu_slot": None}


async def test_the_console_shows_gpu_usage_by_user_and_by_group(
    brokers, tmp_path: Path, redis_url: str
) -> None:
    """Issue 19: every GPU-minute attributed, per user and per group, in the console too
    (the same sums as GET /api/v1/usage): ended sessions of the last 24 hours and the
    session now, the biggest first; a session older than the window counts nothing."""
    fleet = _with_gpus(
        fleet_file(tmp_path / "fleet.yaml", tmp_path / "outputs", {"buffer": 1, "max": 2}), "[0, 1]"
    )
    broker = brokers(fleet=fleet, SDB_AUTH="dev", SDB_ADMIN_USERS="root")
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    now = time.time()

    def ended(user: str, seconds: int, groups: str, ago: float = 60.0) -> None:
        client.xadd(keys.AUDIT, {
            "user": user, "pod": f"p-{user}", "profile": "default", "reason": "idle",
            "session_seconds": str(seconds), "at": repr(now - ago), "by": "reaper",
            "groups": groups,
        })  # fmt: skip

    root = Person(broker.url)
    try:
        ended("dave", 3000, '["art"]')  # 50 minutes
        ended("erin", 1200, '["art", "ml"]')  # 20 minutes, in both groups
        ended("old", 6000, '["ml"]', ago=3 * 86400)  # ended three days ago: not in the window
        await root.login("root")
        _, _, page = await root.page("/_broker/admin")
        usage = _section(page, "usage")
        users = re.findall(
            r"<tr><td>([^<]+)</td><td class=\"num\">([\d.]+)</td>",
            usage.split('data-by="group"')[0],
        )
        assert users == [("dave", "50.0"), ("erin", "20.0")]
        groups = re.findall(
            r"<tr><td>([^<]+)</td><td class=\"num\">([\d.]+)</td>",
            usage.split('data-by="group"')[1],
        )
        assert groups == [("art", "70.0"), ("ml", "20.0")]
    finally:
        client.close()
        await root.close()
