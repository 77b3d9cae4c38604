"""`next=` targets that can only stay on our origin.

Accepts a local absolute path and nothing else: no scheme, no host, no
`//host` or `/\\host` (browsers read a backslash as a slash), no control
characters, and no variant that only turns into one of those after
percent-decoding or trimming.
"""

from __future__ import annotations

from urllib.parse import unquote, urlsplit

DEFAULT = "/"


def safe_next(target: str | None) -> str:
    if not target or len(target) > 2048:
        return DEFAULT
    decoded = target
    for _ in range(3):  # catch double and triple encoding
        decoded = unquote(decoded)
    for candidate in (target, decoded):
        if candidate != candidate.strip() or any(
            ord(c) < 0x20 or ord(c) == 0x7F for c in candidate
        ):
            return DEFAULT
        if (
            not candidate.startswith("/")
            or candidate.startswith(("//", "/\\"))
            or "\\" in candidate
        ):
            return DEFAULT
        parts = urlsplit(candidate)
        if parts.scheme or parts.netloc:
            return DEFAULT
    return target
