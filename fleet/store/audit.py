"""The audit stream (reclaims, admin actions), capped near AUDIT_MAXLEN entries."""

from __future__ import annotations

from .. import keys, redis_text
from .base import StoreBase

AUDIT_MAXLEN = 10_000


class AuditStore(StoreBase):
    """What happened, for admins."""

    async def audit(self, **event: str | float | int) -> None:
        fields = {k: str(v) for k, v in event.items()}
        await self.redis.xadd(
            keys.AUDIT, redis_text.fields(fields), maxlen=AUDIT_MAXLEN, approximate=True
        )

    async def recent_audit(self, count: int = 50) -> list[dict[str, str]]:
        """The newest audit events (reclaims, admin actions), newest first."""
        entries = redis_text.stream_entries(await self.redis.xrevrange(keys.AUDIT, count=count))
        return [{"id": entry_id, **fields} for entry_id, fields in entries]
