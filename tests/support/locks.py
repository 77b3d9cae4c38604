"""Read the pip lock files (requirements/*.txt, written by `make lock` with uv).

`python -m tests.support.locks drift requirements/test.txt` prints every
installed package whose version differs from the lock: `make test-latest`
shows with it what the next `make lock` would bring.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from packaging.markers import Marker
from packaging.utils import canonicalize_name

PIN = re.compile(
    r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>[^\s;\\]+)\s*(?:;(?P<marker>[^\\]+))?"
)
HASH = re.compile(r"--hash=sha256:([0-9a-f]{64})")


@dataclass
class Pin:
    name: str  # canonical (PEP 503)
    version: str
    marker: Marker | None
    hashes: list[str] = field(default_factory=list)

    def applies(self) -> bool:
        """Whether this interpreter installs it (a universal lock pins for every platform)."""
        return self.marker is None or self.marker.evaluate()


def read_lock(path: Path) -> list[Pin]:
    pins: list[Pin] = []
    for line in path.read_text().splitlines():
        match = PIN.match(line)
        if match:
            marker = match["marker"]
            pins.append(Pin(canonicalize_name(match["name"]), match["version"],
                            Marker(marker.strip()) if marker else None))  # fmt: skip
        elif pins and line.startswith(" "):
            pins[-1].hashes.extend(HASH.findall(line))
    return pins


def applicable(path: Path) -> dict[str, Pin]:
    """The pins this interpreter installs, by canonical name."""
    return {pin.name: pin for pin in read_lock(path) if pin.applies()}


def installed() -> dict[str, str]:
    return {canonicalize_name(d.metadata["Name"]): d.version for d in metadata.distributions()}


def drift(lock: Path) -> list[str]:
    """One line per locked package installed at another version."""
    have = installed()
    return [
        f"{name}: {pin.version} (lock) -> {have[name]}"
        for name, pin in sorted(applicable(lock).items())
        if name in have and have[name] != pin.version
    ]


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] != "drift":
        print("usage: python -m tests.support.locks drift LOCKFILE", file=sys.stderr)
        return 2
    lines = drift(Path(argv[1]))
    print(f"{len(lines)} package(s) differ from {argv[1]}" + (":" if lines else ""))
    for line in lines:
        print("  " + line)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
