"""User slugs: safe in paths, Redis keys and Kubernetes label values.

A readable part (lowercase letters, digits, dashes) plus 16 hex digits of the
identity's SHA-256, so two different identities never share a slug even when
their readable parts agree ("Ann@x" and "ann@x"). At most 63 characters.
"""

from __future__ import annotations

import hashlib
import re

_UNSAFE = re.compile(r"[^a-z0-9]+")
_READABLE_MAX = 63 - 1 - 16


def slugify(identity: str) -> str:
    digest = hashlib.sha256(identity.encode("utf-8")).hexdigest()[:16]
    readable = _UNSAFE.sub("-", identity.lower()).strip("-")[:_READABLE_MAX].strip("-")
    return f"{readable}-{digest}" if readable else f"u-{digest}"
