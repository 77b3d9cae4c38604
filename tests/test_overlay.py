"""The broker's bar in the WebUI's page (issue 19 §4): through the real broker and the stub
WebUI, only a page load of an `overlay: true` profile gets the one <script> tag; every other
answer, a page over the cap, and a profile without the setting arrive as the pod sent them."""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from broker.proxy.overlay import MAX_PAGE, MAX_PAGES_AT_ONCE, TAG, insert_tag
from fleet.spec import SpecError, parse_spec
from tests.support.procs import REPO, STUB, Broker, wait_for

FLEET = """\
backend: local
outputs: {outputs}
profiles:
  - name: default
    buffer: 1
    max: 2
    probe: a1111
{overlay}    local:
      command: [python, {stub}, --port, "{{port}}", --pod-id, "{{pod}}", --delay, "0.3"]
      stop_grace: 3s
"""
PAGE = {"Accept": "text/html,application/xhtml+xml", "X-Forwarded-User": "ann"}
NOT_PAGE = {"Accept": "*/*", "X-Forwarded-User": "ann"}


def start(brokers, tmp_path: Path, *, overlay: bool, **env: str) -> Broker:
    fleet = tmp_path / "fleet.yaml"
    setting = f"    overlay: {str(overlay).lower()}\n"
    fleet.write_text(FLEET.format(outputs=tmp_path / "out", stub=STUB, overlay=setting))
    broker = brokers(fleet=fleet, SDB_AUTH="header", SDB_TRUSTED_PROXIES="127.0.0.1/32", **env)
    wait_for(lambda: len(broker.pod_records()) >= 1, 20, what="a warm pod")
    return broker


async def get(http: aiohttp.ClientSession, url: str, headers: dict[str, str]) -> tuple:
    """Status, headers and the body exactly as sent (no decompression), once the user's
    pod answers."""
    deadline = time.monotonic() + 20
    while True:
        async with http.get(url, headers=headers) as resp:
            body = await resp.read()
            if resp.status != 503 or time.monotonic() > deadline:
                return resp.status, resp.headers, body
        await asyncio.sleep(0.2)


def stub_page(pod: str, *, accepted: str, pad: int = 0, end: bool = True) -> bytes:
    """What /stub/page sends (webui-image/stub/stub_testkit.py, TestKit.page)."""
    text = (
        "<!doctype html><html><head><title>stub page</title></head><body>"
        f'<h1 id="page">stub page of {pod}</h1>'
        f'<p id="encoding">{json.dumps(accepted)}</p><!--{"x" * pad}-->'
        + ("</body></html>\n" if end else "")
    )
    return text.encode()


def pod_of(body: bytes) -> str:
    found = re.search(rb"stub page of ([^<]+)<", body)
    assert found, body[:300]
    return found.group(1).decode()


async def test_a_page_load_gets_the_tag_and_no_other_answer_does(brokers, tmp_path: Path) -> None:
    broker = start(brokers, tmp_path, overlay=True)
    async with aiohttp.ClientSession(auto_decompress=False) as http:
        url = broker.url + "/stub/page"
        status, headers, body = await get(http, url, PAGE)
        assert status == 200
        pod = pod_of(body)
        # The pod was asked for the plain page; the tag sits before </body>, alone.
        plain = stub_page(pod, accepted="identity")
        assert body == plain.replace(b"</body>", TAG + b"</body>")
        assert body.count(b"<script") == 1
        assert headers["Content-Length"] == str(len(body))
        assert "Content-Encoding" not in headers
        # The stub's own WebUI page too, with a browser's Accept-Encoding.
        _, _, index = await get(http, broker.url + "/", {**PAGE, "Accept-Encoding": "gzip"})
        assert index.count(TAG) == 1 and index.index(TAG) < index.lower().rindex(b"</body>")
        # Not navigations: a fetch, an iframe, JSON, an asset, an event stream.
        for path, extra in (
            ("/stub/page", NOT_PAGE),
            ("/stub/page", {**PAGE, "Sec-Fetch-Dest": "iframe"}),
            ("/stub/page", {**PAGE, "Sec-Fetch-Dest": "empty"}),
            ("/stub/whoami", PAGE),
            ("/sdapi/v1/options", PAGE),
            ("/stub/bytes?size=1000", PAGE),
            ("/stub/sse?count=1", PAGE),
            ("/favicon.ico", PAGE),
        ):
            status, _, body = await get(http, broker.url + path, {**extra, "Accept-Encoding": "br"})
            assert status in (200, 204), (path, status)
            assert b"overlay.js" not in body, (path, extra)
            if path == "/stub/page":  # as the pod sent it, to what the browser accepted
                assert body == stub_page(pod, accepted="br"), extra
        # The bar's script and data: versioned and cached, figures never cached.
        script = TAG.decode().split('"')[1]
        status, headers, body = await get(http, broker.url + script, NOT_PAGE)
        assert status == 200 and b"attachShadow" in body
        assert "immutable" in headers["Cache-Control"]
        assert headers["Content-Type"].startswith("text/javascript")
        status, headers, body = await get(http, broker.url + "/_broker/overlay.json", NOT_PAGE)
        assert status == 200 and headers["Cache-Control"] == "no-store"
        figures = json.loads(body)
        assert figures["user"] == "ann" and figures["running"] is True
        assert 0 < figures["idle_left"] <= 900 and 0 < figures["session_left"] <= 12 * 3600


async def test_gzip_chunked_and_bodyless_pages_are_rewritten_and_big_ones_pass(
    brokers, tmp_path: Path
) -> None:
    broker = start(brokers, tmp_path, overlay=True)
    async with aiohttp.ClientSession(auto_decompress=False) as http:
        _, _, first = await get(http, broker.url + "/stub/page", PAGE)
        pod = pod_of(first)
        plain = stub_page(pod, accepted="identity")
        tagged = plain.replace(b"</body>", TAG + b"</body>")
        for query in ("gzip=1", "chunked=1", "gzip=1&chunked=1"):
            status, headers, body = await get(http, f"{broker.url}/stub/page?{query}", PAGE)
            assert status == 200 and body == tagged, query
            assert headers["Content-Length"] == str(len(body)), query
            assert "Content-Encoding" not in headers and "Transfer-Encoding" not in headers
        _, _, body = await get(http, broker.url + "/stub/page?end=0", PAGE)
        assert body == stub_page(pod, accepted="identity", end=False) + TAG
        # Over the cap, with a length and without, compressed or not: untouched.
        big = MAX_PAGE + 1
        whole = stub_page(pod, accepted="identity", pad=big)
        for query, expected in (
            ("", whole),
            ("&chunked=1", whole),
            ("&gzip=1", whole),  # small as sent, over the cap once decoded
        ):
            status, headers, body = await get(
                http, f"{broker.url}/stub/page?pad={big}{query}", PAGE
            )
            assert status == 200
            if "gzip" in query:
                assert headers["Content-Encoding"] == "gzip"
                body = gzip.decompress(body)
            assert body == expected, (query, len(body), len(expected))


async def test_pages_past_the_ones_held_at_once_pass_untouched(brokers, tmp_path: Path) -> None:
    """The memory guard: while MAX_PAGES_AT_ONCE slow pages are held for rewriting, more
    page loads pass exactly as the pod sends them (no tag), and once those are done the
    next page gets the tag again (the count went back down)."""
    broker = start(brokers, tmp_path, overlay=True)
    extra = 3
    async with aiohttp.ClientSession(
        auto_decompress=False, connector=aiohttp.TCPConnector(limit=0)
    ) as http:
        _, _, first = await get(http, broker.url + "/stub/page", PAGE)
        pad = 256 * 1024  # a big page, sent in 64 KiB chunks with 3 s after the first
        plain = stub_page(pod_of(first), accepted="identity", pad=pad)
        tagged = plain.replace(b"</body>", TAG + b"</body>")
        url = f"{broker.url}/stub/page?chunked=1&hold=3&pad={pad}"
        answers = await asyncio.gather(
            *(get(http, url, PAGE) for _ in range(MAX_PAGES_AT_ONCE + extra))
        )
        bodies = [body for status, _, body in answers if status == 200]
        assert len(bodies) == MAX_PAGES_AT_ONCE + extra
        assert all(body in (plain, tagged) for body in bodies)  # byte for byte, either way
        assert bodies.count(tagged) == MAX_PAGES_AT_ONCE
        assert bodies.count(plain) == extra
        _, _, after = await get(http, f"{broker.url}/stub/page?chunked=1&pad={pad}", PAGE)
        assert after == tagged


async def test_sdb_overlay_max_page_sets_the_cap(brokers, tmp_path: Path) -> None:
    """A page over SDB_OVERLAY_MAX_PAGE, sent whole, chunked or gzipped, passes untouched;
    one under it gets the tag."""
    broker = start(brokers, tmp_path, overlay=True, SDB_OVERLAY_MAX_PAGE="4KiB")
    async with aiohttp.ClientSession(auto_decompress=False) as http:
        _, _, first = await get(http, broker.url + "/stub/page", PAGE)
        pod = pod_of(first)
        small = stub_page(pod, accepted="identity", pad=2000)
        _, _, body = await get(http, broker.url + "/stub/page?pad=2000", PAGE)
        assert body == small.replace(b"</body>", TAG + b"</body>")
        big = stub_page(pod, accepted="identity", pad=5000)
        for query in ("", "&chunked=1", "&gzip=1"):
            _, headers, body = await get(http, f"{broker.url}/stub/page?pad=5000{query}", PAGE)
            if "gzip" in query:  # small as sent, over the cap once decoded
                assert headers["Content-Encoding"] == "gzip" and len(body) < 4096
                body = gzip.decompress(body)
            assert body == big, query


@pytest.mark.parametrize("value", ["8MB", "0", "1GiB", "lots"])
def test_a_bad_overlay_max_page_stops_the_broker_in_one_line(value: str) -> None:
    env = {**os.environ, "SDB_OVERLAY_MAX_PAGE": value, "SDB_FLEET": str(REPO / "fleet.local.yaml")}
    out = subprocess.run(
        [sys.executable, "-m", "broker", "serve"], env=env, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert out.returncode == 2
    assert out.stderr.startswith("SDB_OVERLAY_MAX_PAGE: ") and out.stderr.count("\n") == 1
    assert "from 1KiB to 256MiB" in out.stderr and "Traceback" not in out.stderr


async def test_a_profile_without_overlay_gets_its_page_untouched(brokers, tmp_path: Path) -> None:
    broker = start(brokers, tmp_path, overlay=False)
    async with aiohttp.ClientSession(auto_decompress=False) as http:
        _, _, body = await get(http, broker.url + "/stub/page", {**PAGE, "Accept-Encoding": "br"})
        assert body == stub_page(pod_of(body), accepted="br")
        _, _, index = await get(http, broker.url + "/", PAGE)
        assert b"overlay.js" not in index


def test_overlay_must_be_true_or_false_and_the_error_names_its_line() -> None:
    text = FLEET.format(outputs="/tmp/o", stub=STUB, overlay='    overlay: "on"\n')
    with pytest.raises(SpecError) as caught:
        parse_spec(text, "fleet.yaml")
    assert [str(i) for i in caught.value.issues] == [
        "fleet.yaml:8: profiles[0].overlay: must be true or false, got 'on'"
    ]
    assert parse_spec(text.replace('"on"', "true")).profiles[0].overlay is True
    assert (
        parse_spec(FLEET.format(outputs="/o", stub=STUB, overlay="")).profiles[0].overlay is False
    )


def test_the_tag_goes_before_the_last_body_end_tag_in_any_case() -> None:
    """</body> is found case-insensitively, the last one (a page may quote one earlier),
    also far from the end; a page without one gets the tag at its end."""
    assert insert_tag(b"<p>'</body>'</p></BODY></html>") == (
        b"<p>'</body>'</p>" + TAG + b"</BODY></html>"
    )
    tail = b"<!--" + b"x" * 100_000 + b"-->"
    assert insert_tag(b"<body>a</Body>" + tail) == b"<body>a" + TAG + b"</Body>" + tail
    assert insert_tag(b"<p>no end") == b"<p>no end" + TAG
