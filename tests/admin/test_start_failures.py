"""Failing starts are visible (issue 17, item 2): a profile whose WebUI exits at start, and
one whose WebUI answers 404 to the readiness probe, through a real broker and real processes.

Before, such a profile restarted again and again while the console, `fleet status`, the
API and the metrics said 0 warming, 0 ready and no error, the waiting user read "no
estimate yet" forever, and the never-ready error said "no answer" to a pod answering 404.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

from tests.admin.support import Api, Person, eventually, field, read_events
from tests.admin.test_specs import cli
from tests.support.procs import STUB

FLEET = f"""\
backend: local
idle_timeout: 15m
outputs: {{outputs}}
profiles:
  - name: good
    display_name: Good GPU
    buffer: 1
    max: 2
    probe: a1111
    local:
      command: [python, {STUB}, --port, "{{{{port}}}}", --pod-id, "{{{{pod}}}}", --delay, "0.3"]
      stop_grace: 2s
  - name: crash
    display_name: Crashing GPU
    buffer: 1
    max: 1
    probe: a1111
    local:
      command: [{sys.executable}, -c, "import sys; sys.exit(3)", "{{{{port}}}}"]
      stop_grace: 1s
  - name: wrongurl
    display_name: Wrong URL GPU
    buffer: 1
    max: 1
    probe: a1111
    start_timeout: 2s
    local:
      command: [{sys.executable}, -m, http.server, "{{{{port}}}}", --bind, 127.0.0.1]
      stop_grace: 1s
"""


async def test_failing_starts_are_shown_counted_and_told_to_waiting_users(
    brokers, tmp_path: Path, redis_url: str
) -> None:
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(FLEET.format(outputs=tmp_path / "outputs"))
    broker = brokers(fleet=fleet, SDB_AUTH="dev", SDB_ADMIN_USERS="root")
    root, carol = Person(broker.url), Person(broker.url)
    try:
        await root.login("root")
        token, _ = await root.admin_token()
        api = Api(root.http, broker.url, token)
        by_name: dict[str, dict[str, Any]] = {}

        async def both_failing() -> bool:
            _, profiles = await api.call("GET", "/fleet")
            by_name.update({p["name"]: p for p in profiles})
            return by_name["crash"]["failing"] and by_name["wrongurl"]["failing"]

        await eventually(both_failing, timeout=60, what="both bad profiles failing")
        crash, wrong, good = by_name["crash"], by_name["wrongurl"], by_name["good"]
        assert crash["start_failures_in_row"] >= 2 and crash["ready"] == 0
        assert "process exited (code 3)" in crash["last_start_error"]
        # What the probe saw, not "no answer": the pod answered, with a 404.
        assert wrong["last_start_error"].startswith("not ready after 2s: ")
        assert "HTTP 404 from /internal/ping" in wrong["last_start_error"]
        assert (good["start_failures_in_row"], good["failing"], good["last_start_error"]) == (
            0,
            False,
            None,
        )

        async with root.http.get(broker.url + "/_broker/metrics") as resp:
            text = await resp.text()
        counted = re.search(
            r'sdbroker_pod_start_failures_total\{profile="crash",reason="crashed"\} (\d+)', text
        )
        assert counted and int(counted.group(1)) >= 2, text
        assert (
            'sdbroker_pod_start_failures_total{profile="wrongurl",reason="start_timeout"}' in text
        )
        assert re.search(r'sdbroker_pod_start_failures_in_row\{profile="crash"\} [2-9]', text)
        # Start times by how the start ended: a crash and a timeout are observed too.
        for profile, status in (("crash", "failed"), ("wrongurl", "timed_out")):
            seen = re.search(
                rf'sdbroker_pod_start_seconds_count\{{profile="{profile}",status="{status}"\}} '
                r"(\d+)",
                text,
            )
            assert seen and int(seen.group(1)) >= 1, (profile, status, text)
        assert 'sdbroker_pod_start_seconds_count{profile="crash",status="ready"} 0.0' in text

        _, _, console = await root.page("/_broker/admin")
        assert 'id="starts-crash"' in console and "Failing to start" in console
        assert "process exited (code 3)" in console and 'id="starts-good"' not in console

        env = {"SDB_REDIS_URL": redis_url, "SDB_FLEET": str(fleet), "SDB_DATA_DIR": str(tmp_path)}
        status = cli("fleet", "status", env=env)
        assert status.returncode == 0, status.stderr
        rows = {line.split()[0]: line for line in status.stdout.splitlines()}
        assert re.search(r"FAILING: \d+ in a row$", rows["crash"]), status.stdout
        assert rows["good"].endswith("ok")
        assert "wrongurl: last failed start: not ready after 2s" in status.stdout

        # A user who picks the failing kind is told so, with a way out, not "no estimate yet".
        await carol.login("carol")
        _, _, chooser = await carol.page("/")
        _, path, page = await carol.post_form(
            "/_broker/choose",
            {"csrf_token": field(chooser, "csrf_token"), "profile": "crash", "next": "/"},
        )
        assert path == "/_broker/wait"
        assert '<p id="failing">' in page  # shown, not hidden
        assert "This kind is failing to start" in page
        assert 'href="/_broker/choose?next=/"' in page or 'href="/_broker/choose?next=%2F"' in page
        assert "Crashing GPU WebUIs are failing to start" in page
        [(event, state)] = await read_events(
            carol.http, broker.url + "/_broker/events?next=/", until="status"
        )
        assert (event, state["phase"]) == ("status", "failing")
        assert state["estimate"] != "no estimate yet"
        async with carol.http.get(broker.url + "/sdapi/v1/options") as resp:
            assert resp.status == 503 and "failing to start" in (await resp.json())["detail"]
    finally:
        await root.close()
        await carol.close()
