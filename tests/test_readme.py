"""README's configuration reference covers every SDB_ setting, and opens with the two commands."""

from __future__ import annotations

from pathlib import Path

from broker.settings import Settings

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def test_readme_opens_with_the_two_commands() -> None:
    head = README[:400]
    assert "make demo" in head and "make test" in head


def test_every_setting_is_documented() -> None:
    missing = [
        f"SDB_{name.upper()}"
        for name in Settings.model_fields
        if f"`SDB_{name.upper()}`" not in README
    ]
    assert not missing, f"README lacks: {missing}"
