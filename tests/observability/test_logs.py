"""JSON logs of a real broker (SDB_LOG_FORMAT=json): a request id from the trusted proxy or
made up, passed to the pod and returned to the browser, the user/pod/profile on every line
of a request, the access log on, and one event per session start and end."""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from pathlib import Path

from tests.support.procs import STUB, Broker, wait_for

FLEET = """\
backend: local
idle_timeout: 2s
outputs: {outputs}
profiles:
  - name: l4
    gpu: NVIDIA L4
    min: 0
    buffer: 1
    max: 1
    probe: a1111
    local:
      gpus: [0]
      command: [python, {stub}, --port, "{{port}}", --pod-id, "{{pod}}", --delay, "0.3"]
      stop_grace: 3s
"""
HEX_ID = re.compile(r"[0-9a-f]{32}")


def get(url: str, **headers: str) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def json_lines(broker: Broker) -> list[dict[str, object]]:
    """The log's JSON lines; anything else in it (the start banner on stdout) is skipped."""
    text = broker.log.read_text(errors="replace")
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_json_logs_follow_a_request_and_a_session(brokers, tmp_path: Path) -> None:
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(FLEET.format(outputs=tmp_path / "outputs", stub=STUB))
    broker = brokers(
        fleet=fleet,
        SDB_AUTH="header",
        SDB_TRUSTED_PROXIES="127.0.0.1/32",
        SDB_LOG_FORMAT="json",
        SDB_REAP_INTERVAL="0.5s",
        SDB_ACTIVITY_FLUSH="0.2s",
    )
    ann = {"X-Forwarded-User": "ann", "X-Forwarded-Groups": "artists"}
    status, headers, body = wait_for(
        lambda: (r := get(broker.url + "/stub/echo-headers", **ann, **{"X-Request-Id": "lb-7f3a"}))[0] == 200 and r,
        30, what="ann's WebUI",
    )  # fmt: skip
    # The trusted proxy's id: returned to the browser and passed on to the pod.
    assert headers["X-Request-Id"] == "lb-7f3a"
    assert json.loads(body)["x-request-id"] == "lb-7f3a"
    # An id that could forge a log field is not believed, even from the trusted proxy.
    status, headers, body = get(broker.url + "/stub/echo-headers", **ann, **{"X-Request-Id": "a b"})
    assert status == 200 and HEX_ID.fullmatch(headers["X-Request-Id"])
    assert json.loads(body)["x-request-id"] == headers["X-Request-Id"]
    # Broker pages carry one too.
    assert HEX_ID.fullmatch(get(broker.url + "/_broker/healthz")[1]["X-Request-Id"])

    lines = json_lines(broker)
    mine = [line for line in lines if line.get("request_id") == "lb-7f3a"]
    # The access log is on by default in JSON mode (503s came first: the pod was warming).
    access = [line for line in mine if line["logger"] == "aiohttp.access" and line["status"] == 200]
    assert access, mine
    assert access[0]["path"] == "/stub/echo-headers" and access[0]["method"] == "GET"
    assert access[0]["user"] == "ann" and access[0]["groups"] == ["artists"]
    assert access[0]["profile"] == "l4" and access[0]["pod"].startswith("l4-")
    pod = access[0]["pod"]
    start = [line for line in lines if line.get("event") == "session_start"]
    assert len(start) == 1, start
    assert {k: start[0][k] for k in ("user", "groups", "profile", "pod", "gpu", "gpus")} == {
        "user": "ann", "groups": ["artists"], "profile": "l4", "pod": pod,
        "gpu": "NVIDIA L4", "gpus": 1,
    }  # fmt: skip
    assert start[0]["request_id"] == "lb-7f3a" and start[0]["waited"] >= 0  # queued while warming

    # Idle for 2 s: the reaper ends the session, and says so in one line.
    def ended() -> list[dict[str, object]]:
        return [line for line in json_lines(broker) if line.get("event") == "session_end"]

    end = wait_for(ended, 30, what="the session's end")[0]
    assert (end["user"], end["pod"], end["profile"], end["reason"]) == ("ann", pod, "l4", "idle")
    assert end["gpu"] == "NVIDIA L4" and end["seconds"] >= 2
    assert end["gpu_seconds"] == end["seconds"]  # one GPU per pod


def test_a_client_cannot_choose_its_request_id(brokers) -> None:
    """Without a trusted proxy in front, the id is always the broker's own."""
    broker = brokers(SDB_AUTH="header", SDB_TRUSTED_PROXIES="10.9.0.0/16", SDB_LOG_FORMAT="json")
    status, headers, _ = get(broker.url + "/anything", **{"X-Request-Id": "chosen-by-me"})
    assert status == 401
    assert HEX_ID.fullmatch(headers["X-Request-Id"])
    # The access line is written once the answer is sent: it may trail the answer a little.
    wait_for(
        lambda: [x for x in json_lines(broker) if x.get("request_id") == headers["X-Request-Id"]],
        10,
        what="the access line with the broker's id",
    )
    assert not [line for line in json_lines(broker) if line.get("request_id") == "chosen-by-me"]
