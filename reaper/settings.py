"""The few `SDB_*` variables the out-of-process reaper reads (the CronJob's environment).

The reaper never imports the broker, so it reads the same variables itself,
with the broker's names and defaults: one ConfigMap configures both.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from fleet import Duration, EmbeddedRedis


class ReaperSettings(BaseSettings):
    # Unrelated SDB_* variables (the broker's) are simply not read; a typo in
    # one of ours is still an error.
    model_config = SettingsConfigDict(env_prefix="SDB_", extra="forbid", validate_default=True)

    redis_url: str | None = None
    fleet: Path = Path("fleet.yaml")
    data_dir: Path = Path("data")
    activity_flush: Duration = 10.0
    reap_missed_probes: int = Field(3, ge=1)
    log_level: str = "WARNING"

    def redis_address(self) -> str | None:
        """SDB_REDIS_URL, else the embedded Redis's socket under SDB_DATA_DIR if it exists."""
        if self.redis_url:
            return self.redis_url
        embedded = EmbeddedRedis(self.data_dir)
        return embedded.url if embedded.socket.exists() else None
