"""The gallery in a real browser: alice's pictures render for alice, bob's never do."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image
from playwright.sync_api import Browser, Page

from fleet import slugify
from tests.browser import support
from tests.support.procs import write_fleet

pytestmark = pytest.mark.browser


def picture(path: Path, colour: tuple[int, int, int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (32, 24), colour).save(path)


def log_in(browser: Browser, base: str, name: str) -> Page:
    page = support.log_in(browser, base, name, "/_broker/gallery")
    page.wait_for_url("**/_broker/gallery")  # and back to the gallery
    return page


def rendered(page: Page) -> list[str]:
    """The src of every image the browser actually decoded."""
    return page.eval_on_selector_all(
        "#images img",
        "imgs => imgs.filter(i => i.complete && i.naturalWidth > 0).map(i => i.getAttribute('src'))",
    )


def test_each_person_sees_only_their_own_pictures(
    brokers, tmp_path: Path, browser: Browser
) -> None:
    outputs = tmp_path / "outputs"
    picture(outputs / slugify("alice") / "txt2img-images" / "00000-1.png", (200, 30, 30))
    picture(outputs / slugify("alice") / "txt2img-images" / "00001-2.png", (30, 200, 30))
    picture(outputs / slugify("bob") / "txt2img-images" / "00007-9.png", (30, 30, 200))
    (outputs / slugify("alice") / "from-bob.png").symlink_to(
        outputs / slugify("bob") / "txt2img-images" / "00007-9.png"
    )
    fleet = write_fleet(tmp_path / "fleet.yaml", outputs=outputs, buffer=0, max=2)
    broker = brokers(fleet=fleet, SDB_AUTH="dev")

    alice = log_in(browser, broker.url, "alice")
    alice.wait_for_function("document.querySelectorAll('#images img').length === 2")
    alice.wait_for_function(
        "[...document.querySelectorAll('#images img')].every(i => i.complete && i.naturalWidth)"
    )
    assert sorted(rendered(alice)) == [
        "/_broker/gallery/txt2img-images/00000-1.png",
        "/_broker/gallery/txt2img-images/00001-2.png",
    ]
    assert alice.get_attribute("#back", "href") == "/"
    # Bob's picture, asked for by name from alice's browser, is not there for her.
    for path in ("txt2img-images/00007-9.png", "from-bob.png"):
        status = alice.evaluate(f"() => fetch('/_broker/gallery/{path}').then(r => r.status)")
        assert status == 404

    bob = log_in(browser, broker.url, "bob")
    bob.wait_for_function("document.querySelectorAll('#images img').length === 1")
    bob.wait_for_function("document.querySelector('#images img').naturalWidth > 0")
    assert rendered(bob) == ["/_broker/gallery/txt2img-images/00007-9.png"]
    assert "00000-1" not in bob.content()
