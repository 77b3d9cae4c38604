"""Who owns this pod: read from the broker's label and annotation.

The broker records a claim on the pod itself (DESIGN: Redis is an index, the
pods are the record): the label ``sdbroker.io/user`` holds the label-safe slug
that names the outputs folder, the annotation of the same key the raw identity.
On plain pods the kubelet projects both into files (Downward API); on Agones
they arrive in the GameServer's ``object_meta`` from the SDK.

The slug becomes a path under ``/outputs``, so it is checked here against the
shape the broker produces (``fleet/slug.py``); anything else, such as ``..`` or
a ``/``, is refused rather than trusted.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

USER_KEY = "sdbroker.io/user"
_SLUG = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
_GO_ESCAPE = re.compile(
    r'\\(?:(?P<simple>[abfnrtv\\"])|x(?P<x>[0-9a-fA-F]{2})'
    r"|u(?P<u>[0-9a-fA-F]{4})|U(?P<U>[0-9a-fA-F]{8})|(?P<oct>[0-7]{3}))"
)
_SIMPLE = {"a": 7, "b": 8, "f": 12, "n": 10, "r": 13, "t": 9, "v": 11, "\\": 92, '"': 34}


class ClaimError(ValueError):
    """The pod's record names a user in a shape the broker never writes."""


@dataclass(frozen=True)
class Claim:
    slug: str
    identity: str  # the raw identity, for logs only; "" when the annotation is absent


def claim_from(labels: dict[str, str], annotations: dict[str, str]) -> Claim | None:
    """The claim these labels record, or None while the pod is unclaimed."""
    slug = labels.get(USER_KEY, "")
    if not slug:
        return None
    if not _SLUG.match(slug):
        raise ClaimError(f"label {USER_KEY}={slug!r} is not a label-safe slug")
    return Claim(slug=slug, identity=annotations.get(USER_KEY, ""))


def go_unquote(quoted: str) -> str:
    """Undo Go's ``%q``, which is how the kubelet writes Downward API values.

    Go escapes to bytes (``\\xff``), so the bytes are collected first and
    decoded once at the end.
    """
    if len(quoted) < 2 or quoted[0] != '"' or quoted[-1] != '"':
        raise ValueError(f"not a Go quoted string: {quoted!r}")
    body, out, pos = quoted[1:-1], bytearray(), 0
    while pos < len(body):
        slash = body.find("\\", pos)
        if slash < 0:
            out += body[pos:].encode()
            break
        out += body[pos:slash].encode()
        match = _GO_ESCAPE.match(body, slash)
        if not match:
            raise ValueError(f"bad escape at {slash} in {quoted!r}")
        if match["simple"]:
            out.append(_SIMPLE[match["simple"]])
        elif match["x"] or match["oct"]:
            out.append(int(match["x"], 16) if match["x"] else int(match["oct"], 8))
        else:
            out += chr(int(match["u"] or match["U"], 16)).encode()
        pos = match.end()
    return out.decode("utf-8", errors="replace")


def parse_downward(text: str) -> dict[str, str]:
    """``key="value"`` lines, as the kubelet renders metadata.labels or .annotations.

    A line that does not parse is skipped: one odd annotation written by
    someone else must not hide the broker's label.
    """
    result: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if not sep or not key:
            continue
        try:
            result[key] = go_unquote(value)
        except ValueError:
            continue
    return result


class DownwardAPI:
    """The labels and annotations files of a downwardAPI volume, re-read on every poll.

    The kubelet replaces both files atomically (a symlink swap) within its sync
    period, so reading the whole file each time never sees half an update.
    """

    def __init__(self, labels_file: Path, annotations_file: Path) -> None:
        self.labels_file = labels_file
        self.annotations_file = annotations_file

    def read(self) -> Claim | None:
        labels = parse_downward(self.labels_file.read_text(encoding="utf-8"))
        try:
            annotations = parse_downward(self.annotations_file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            annotations = {}  # only the label is needed; the identity is for logs
        return claim_from(labels, annotations)


def claim_from_gameserver(gameserver: dict[str, Any]) -> Claim | None:
    """The claim recorded on an Agones GameServer as the SDK's REST gateway renders it."""
    meta = gameserver.get("object_meta") or {}
    return claim_from(meta.get("labels") or {}, meta.get("annotations") or {})


def gameserver_state(gameserver: dict[str, Any]) -> str:
    return str((gameserver.get("status") or {}).get("state") or "")
