"""The one settings object: every service reads its connection settings and knobs from here."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    """Read from WENMING_* environment variables, then `.local/stack.env` written by `make up`."""

    model_config = SettingsConfigDict(env_prefix="WENMING_", env_file=ROOT / ".local" / "stack.env", extra="ignore")

    pg_dsn: SecretStr = SecretStr("postgresql://wenming@127.0.0.1:55432/wenming")
    kafka_bootstrap: str = "127.0.0.1:9092"
    topic_prefix: str = "wenming"
    """Physical topic = `<topic_prefix>.<logical name>`; tests use a fresh prefix per run."""
    district_file: Path = ROOT / "data" / "demo-district.yaml"
    pg_pool_min: int = 2
    pg_pool_max: int = 10
    outbox_batch: int = 2000
    outbox_retention_hours: float = 72.0
    """Sent outbox rows older than this are deleted by the relay (the events table keeps everything)."""
    projection_batch: int = 2000
    projection_dedupe_days: float = Field(default=30.0, gt=0)
    """Applied event ids older than this are forgotten. A duplicate record comes only from an outbox
    relay re-sending a row it published but had not marked sent, which it does on its next start;
    keep this well above the longest relay outage you could have."""
    http_host: str = "127.0.0.1"
    inspection_port: int = Field(default=8101)
    scoring_port: int = Field(default=8102)
    volunteer_port: int = Field(default=8103)
    notify_port: int = Field(default=8104)
    body_limit_bytes: int = 2_000_000
    """Requests with a larger body get 413 before they are parsed."""

    def topic(self, logical: str) -> str:
        return f"{self.topic_prefix}.{logical}"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
