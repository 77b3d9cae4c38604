"""`/_broker/gallery`: each person sees their own images, through the real broker, and nobody else's.

WebUIs no longer see the outputs volume, so the broker shows people their
earlier images. The folders are laid out as the agent leaves them, plus what a
hostile WebUI could have planted there before the agent-only layout (links
into someone else's folder, a link as the whole folder); alice and bob log in
over HTTP with the `dev` login and ask for everything they can think of.
"""

from __future__ import annotations

import asyncio
import http.client
import os
import re
import time
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import pytest

from fleet import slugify
from tests.support.procs import Broker, write_fleet

PNG = b"\x89PNG\r\n\x1a\n"


def image(folder: Path, relative: str, text: str, age: float = 0.0) -> bytes:
    """A file with PNG magic and a body naming it; ``age`` seconds old."""
    path = folder / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    body = PNG + text.encode()
    path.write_bytes(body)
    stamp = time.time() - age
    os.utime(path, (stamp, stamp))
    return body


class Person:
    """One browser's worth of cookies, logged in through the dev login form."""

    def __init__(self, broker: Broker, http: aiohttp.ClientSession) -> None:
        self.broker, self.http = broker, http

    async def log_in(self, name: str) -> Person:
        async with self.http.get(self.broker.url + "/_broker/login") as resp:
            token = re.search(r'name="csrf_token" value="([^"]+)"', await resp.text())
        assert token
        form = {"csrf_token": token[1], "user": name, "next": "/_broker/gallery"}
        async with self.http.post(
            self.broker.url + "/_broker/login", data=form, allow_redirects=False
        ) as resp:
            assert resp.status == 302
        return self

    async def get(self, path: str, **headers: str) -> tuple[int, bytes, dict[str, str]]:
        async with self.http.get(
            self.broker.url + path, headers=headers, allow_redirects=False
        ) as resp:
            return resp.status, await resp.read(), dict(resp.headers)

    async def page(self, path: str = "/_broker/gallery") -> str:
        status, body, headers = await self.get(path, Accept="text/html")
        assert status == 200, body[:500]
        assert headers["Content-Type"].startswith("text/html")
        return body.decode()


def image_urls(page: str) -> list[str]:
    return re.findall(r'<img src="(/_broker/gallery/[^"]+)"', page)


def raw_get(broker: Broker, path: str, cookie: str) -> int:
    """A GET with the path sent byte for byte (clients would normalise `..` away)."""
    host = urlsplit(broker.url)
    conn = http.client.HTTPConnection(host.hostname or "", host.port, timeout=10)
    try:
        conn.putrequest("GET", path, skip_accept_encoding=True)
        conn.putheader("Cookie", cookie)
        conn.endheaders()
        return conn.getresponse().status
    finally:
        conn.close()


def cookie_header(http: aiohttp.ClientSession) -> str:
    return "; ".join(f"{c.key}={c.value}" for c in http.cookie_jar)


@pytest.fixture
def layout(tmp_path: Path) -> dict[str, object]:
    outputs = tmp_path / "outputs"
    alice, bob = outputs / slugify("alice"), outputs / slugify("bob")
    files = {
        "old": image(alice, "txt2img-images/2026-01-01/00000-1.png", "alice old", age=3600),
        "new": image(alice, "img2img-images/2026-01-02/00001-2.png", "alice new", age=60),
        "secret": image(bob, "txt2img-images/2026-01-01/00000-1.png", "bob's secret"),
    }
    # What a WebUI could plant while it still had the whole volume:
    (alice / "stolen.png").symlink_to(bob / "txt2img-images/2026-01-01/00000-1.png")
    (alice / "bob").symlink_to(bob, target_is_directory=True)
    image(alice, ".sdb-partial-1-00002-3.png", "a copy in progress")
    (alice / "notes.txt").write_text("not an image")
    with open(os.fsencode(alice) + b"/undecodable-\xff.png", "wb") as f:  # no URL carries it
        f.write(PNG)
    # ...and a whole folder that is a link to someone else's.
    (outputs / slugify("mallory")).symlink_to(bob, target_is_directory=True)
    return {"outputs": outputs, "alice": alice, "bob": bob, **files}


def start(brokers, tmp_path: Path, outputs: Path) -> Broker:
    fleet = write_fleet(tmp_path / "fleet.yaml", outputs=outputs, buffer=0, max=2)
    return brokers(fleet=fleet, SDB_AUTH="dev")


def test_alice_sees_her_images_and_never_bobs(brokers, tmp_path: Path, layout) -> None:
    broker = start(brokers, tmp_path, layout["outputs"])

    async def run() -> None:
        jar = aiohttp.CookieJar(unsafe=True)
        async with aiohttp.ClientSession(cookie_jar=jar) as http:
            # Not logged in: sent to the login page, nothing listed.
            status, _, headers = await Person(broker, http).get(
                "/_broker/gallery", Accept="text/html"
            )
            assert status == 302 and "/_broker/login" in headers["Location"]
            status, _, _ = await Person(broker, http).get(
                "/_broker/gallery/txt2img-images/2026-01-01/00000-1.png"
            )
            assert status == 401

            alice = await Person(broker, http).log_in("alice")
            page = await alice.page()
            urls = image_urls(page)
            assert urls == [  # newest first; links, hidden and non-images left out
                "/_broker/gallery/img2img-images/2026-01-02/00001-2.png",
                "/_broker/gallery/txt2img-images/2026-01-01/00000-1.png",
            ]
            assert 'href="/"' in page and "2 images" in page
            assert "stolen" not in page and "bob" not in page and "notes" not in page
            for url, body in zip(urls, (layout["new"], layout["old"]), strict=True):
                status, got, headers = await alice.get(url)
                assert (status, got) == (200, body)
                assert headers["Content-Type"] == "image/png"
                assert headers["X-Content-Type-Options"] == "nosniff"
                assert "sandbox" in headers["Content-Security-Policy"]

            # Everything that would lead out of her folder is a 404, never bob's bytes.
            for path in (
                "/_broker/gallery/stolen.png",
                "/_broker/gallery/bob/txt2img-images/2026-01-01/00000-1.png",
                "/_broker/gallery/notes.txt",
                "/_broker/gallery/.sdb-partial-1-00002-3.png",
                "/_broker/gallery/txt2img-images",
                "/_broker/gallery/%2e%2e/"
                + slugify("bob")
                + "/txt2img-images/2026-01-01/00000-1.png",
            ):
                status, got, _ = await alice.get(path)
                assert status == 404, path
                assert b"secret" not in got
            cookie = cookie_header(http)
            bobs = f"{slugify('bob')}/txt2img-images/2026-01-01/00000-1.png"
            for raw in (f"/_broker/gallery/../{bobs}", f"/_broker/gallery/./../{bobs}"):
                assert raw_get(broker, raw, cookie) == 404, raw

        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
            bob = await Person(broker, http).log_in("bob")
            page = await bob.page()
            (url,) = image_urls(page)
            status, got, _ = await bob.get(url)
            # The same relative path as alice's oldest: it is bob's own file for bob.
            assert (status, got) == (200, layout["secret"])
            status, _, _ = await bob.get("/_broker/gallery/img2img-images/2026-01-02/00001-2.png")
            assert status == 404  # alice's path, not in bob's folder

        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
            # A user whose folder is a link to bob's sees nothing of bob's.
            mallory = await Person(broker, http).log_in("mallory")
            page = await mallory.page()
            assert image_urls(page) == [] and "cannot be read" in page
            status, _, _ = await mallory.get(
                "/_broker/gallery/txt2img-images/2026-01-01/00000-1.png"
            )
            assert status == 404

    asyncio.run(run())


def test_pages_of_images_and_an_empty_gallery(brokers, tmp_path: Path) -> None:
    outputs = tmp_path / "outputs"
    alice = outputs / slugify("alice")
    for n in range(50):
        image(alice, f"txt2img-images/{n:05}.png", f"image {n}", age=1000 - n)
    (outputs / slugify("carol")).mkdir()
    broker = start(brokers, tmp_path, outputs)

    async def run() -> None:
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
            person = await Person(broker, http).log_in("alice")
            first = await person.page()
            assert "50 images" in first and "Page 1 of 2" in first
            urls = image_urls(first)
            assert len(urls) == 48 and urls[0].endswith("/00049.png")
            assert 'href="/_broker/gallery?page=2"' in first
            second = await person.page("/_broker/gallery?page=2")
            assert [u.rsplit("/", 1)[1] for u in image_urls(second)] == ["00001.png", "00000.png"]
            assert 'href="/_broker/gallery?page=1"' in second
            # A page past the end, or no number at all, shows a real page.
            assert image_urls(await person.page("/_broker/gallery?page=99")) == image_urls(second)
            assert image_urls(await person.page("/_broker/gallery?page=x")) == urls

        for name in ("carol", "dave"):  # an empty folder, and none at all yet
            async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
                page = await (await Person(broker, http).log_in(name)).page()
                assert "No images yet" in page and image_urls(page) == []

    asyncio.run(run())


def test_an_image_made_in_the_webui_shows_up(brokers, tmp_path: Path) -> None:
    """End to end: alice generates through her own WebUI, then finds it in her gallery."""
    outputs = tmp_path / "outputs"
    broker = start(brokers, tmp_path, outputs)
    payload = {"prompt": "a red fox", "width": 64, "height": 64, "steps": 1, "seed": 7}

    async def run() -> None:
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
            alice = await Person(broker, http).log_in("alice")
            deadline = time.monotonic() + 30
            while True:  # the first request claims a pod; scripts get 503 until it is up
                async with http.post(broker.url + "/sdapi/v1/txt2img", json=payload) as resp:
                    if resp.status == 200:
                        break
                    assert resp.status == 503, await resp.text()
                assert time.monotonic() < deadline, "no WebUI for alice"
                await asyncio.sleep(0.2)
            (url,) = image_urls(await alice.page())
            status, body, _ = await alice.get(url)
            assert status == 200 and body.startswith(PNG)

    asyncio.run(run())
