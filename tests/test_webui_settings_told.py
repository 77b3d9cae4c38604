"""What a person and an admin see of kept WebUI settings (issue 19, 4), through a real
broker, Redis and stub A1111s: restores counted in sdbroker_settings_total, and the home
page telling when restored styles and UI defaults apply."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import aiohttp

from fleet import SettingsStore, slugify
from tests.chaos.support import as_user, pod_of
from tests.support.procs import STUB, Broker
from tests.test_webui_settings import FLEET, HTML

CAME = "Your settings came with you."


def _count(metrics: str, step: str, outcome: str) -> float | None:
    line = re.search(
        rf'^sdbroker_settings_total\{{outcome="{outcome}",profile="default",step="{step}"\}} (\S+)$',
        metrics,
        re.M,
    )
    return None if line is None else float(line[1])


async def test_restores_are_counted_and_the_person_told_when_styles_apply(
    brokers: Callable[..., Broker], tmp_path: Path
) -> None:
    outputs = tmp_path / "outputs"
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(FLEET.format(outputs=outputs, stub=STUB))
    # Erin kept styles from an earlier pod; carol's settings folder is a link a pod planted.
    (outputs / slugify("erin")).mkdir(parents=True)
    SettingsStore(str(outputs), slugify("erin"), "a1111").save(
        {"styles.csv": b"name,prompt,negative_prompt\nnoir,film noir,\n"}
    )
    carol = outputs / slugify("carol")
    carol.mkdir()
    (carol / ".webui-settings").symlink_to(outputs / slugify("erin") / ".webui-settings")
    broker = brokers(fleet=fleet, SDB_AUTH="header", SDB_TRUSTED_PROXIES="127.0.0.1/32",
                     SDB_METRICS_CIDRS="127.0.0.1/32")  # fmt: skip
    base = broker.url
    async with aiohttp.ClientSession() as http:
        async with http.get(base + "/_broker/metrics") as resp:
            before = await resp.text()
        # Every step and outcome of the profile is there from the first scrape, at 0.
        for step in ("restore", "save"):
            for outcome in ("ok", "failed"):
                assert _count(before, step, outcome) == 0, (step, outcome)

        await pod_of(http, base, "erin")
        await pod_of(http, base, "carol")
        await pod_of(http, base, "bob")  # nothing kept: a restore of nothing, ok
        async with http.get(base + "/_broker/metrics") as resp:
            after = await resp.text()
        assert _count(after, "restore", "ok") == 2
        assert _count(after, "restore", "failed") == 1

        pages = {}
        for user in ("erin", "carol", "bob"):
            async with http.get(base + "/_broker/", headers=as_user(user, **HTML)) as resp:
                assert resp.status == 200
                pages[user] = await resp.text()
        assert CAME in pages["erin"] and "Settings &gt; Reload UI" in pages["erin"]
        assert CAME not in pages["carol"]  # through a link: nothing is kept for her
        assert CAME not in pages["bob"]
