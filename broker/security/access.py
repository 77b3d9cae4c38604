"""Who may in, and who is an admin, once a login mode has said who someone is.

Allow lists are a union: an address in SDB_ALLOWED_EMAILS, an address whose
domain is in SDB_ALLOWED_DOMAINS, or a member of one of SDB_ALLOWED_GROUPS.
All three empty means any authenticated user. Admins are always allowed.

Addresses are parsed strictly rather than split at the last `@`: an address
with two `@`, quotes, spaces or a trailing dot is no address at all, so
`eve@evil.org@example.com` cannot pass as a member of example.com.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..identity import Identity

if TYPE_CHECKING:
    from ..settings import Settings

#: Dot-atom local part (RFC 5322 3.2.3) without quoted strings or comments.
_LOCAL = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")
_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")


def parse_address(address: str) -> tuple[str, str] | None:
    """(local part, lower-case domain), or None for anything that is not one plain address."""
    if not address or len(address) > 254 or address.count("@") != 1:
        return None
    local, domain = address.split("@")
    if len(local) > 64 or not _LOCAL.fullmatch(local):
        return None
    domain = domain.lower()
    labels = domain.split(".")
    if len(labels) < 2 or not all(_LABEL.fullmatch(label) for label in labels):
        return None
    if labels[-1].isdigit():  # a bare IP address is not a mail domain
        return None
    return local, domain


def _lower(values: Iterable[str]) -> frozenset[str]:
    return frozenset(v.strip().lower() for v in values if v.strip())


@dataclass(frozen=True, slots=True)
class AccessPolicy:
    emails: frozenset[str] = frozenset()
    domains: frozenset[str] = frozenset()
    groups: frozenset[str] = frozenset()
    admin_users: frozenset[str] = frozenset()
    admin_groups: frozenset[str] = frozenset()
    #: Header mode: an admin is named by the user header alone. A proxy that sets the
    #: user but passes a client's own X-Forwarded-Email on would otherwise make
    #: `X-Forwarded-User: mallory` + `X-Forwarded-Email: admin@...` an admin.
    admin_by_email: bool = True

    @classmethod
    def from_settings(cls, settings: Settings) -> AccessPolicy:
        return cls(
            emails=_lower(settings.allowed_emails),
            domains=_lower(d.removeprefix("@") for d in settings.allowed_domains),
            groups=frozenset(settings.allowed_groups),
            admin_users=_lower(settings.admin_users),
            admin_groups=frozenset(settings.admin_groups),
            admin_by_email=settings.auth != "header",
        )

    @property
    def open(self) -> bool:
        """No allow list: everyone the login mode vouches for gets in."""
        return not (self.emails or self.domains or self.groups)

    def is_admin(self, identity: Identity) -> bool:
        names = {identity.user.lower()}
        if self.admin_by_email and identity.email:
            names.add(identity.email.lower())
        return bool(names & self.admin_users) or bool(
            self.admin_groups.intersection(identity.groups)
        )

    def allows(self, identity: Identity) -> bool:
        if self.open or self.is_admin(identity):
            return True
        if self.groups.intersection(identity.groups):
            return True
        address = identity.email or identity.user
        parsed = parse_address(address)
        if parsed is None:
            return False
        canonical = f"{parsed[0].lower()}@{parsed[1]}"
        return canonical in self.emails or parsed[1] in self.domains

    def admit(self, identity: Identity) -> Identity | None:
        """The identity with is_admin set, or None when it may not in."""
        if not self.allows(identity):
            return None
        admin = self.is_admin(identity)
        return (
            identity
            if identity.is_admin == admin
            else dataclasses.replace(identity, is_admin=admin)
        )
