"""Notify's own knobs, from WENMING_NOTIFY_* environment variables."""

from __future__ import annotations

from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.settings import ROOT


class NotifyConfig(BaseSettings):
    """Providers per channel (the first that works wins), retries, circuit breakers."""

    model_config = SettingsConfigDict(
        env_prefix="WENMING_NOTIFY_", env_file=ROOT / ".local" / "stack.env", extra="ignore"
    )

    smtp_servers: list[str] = ["127.0.0.1:2525"]
    """host:port of SMTP relays, in order of preference; the next takes over when one fails."""
    mail_from: str = "创城通知 <notify@wenming.local>"
    sms_gateways: list[str] = []
    """URLs of SMS gateways (webhook-shaped), in order of preference."""
    sms_secret: str = "change-me"
    """HMAC key for requests to the SMS gateways."""
    webhook_secret: str = "change-me"
    """HMAC key for webhook recipients registered without their own secret."""
    http_timeout_s: float = 10.0
    smtp_timeout_s: float = 10.0
    retry_base_s: float = 5.0
    retry_cap_s: float = 3600.0
    max_attempts: int = 8
    breaker_threshold: int = 5
    """Consecutive failures that open an endpoint's circuit."""
    breaker_cooldown_s: float = 30.0
    claim_batch: int = 200
    concurrency: int = 32
    idle_poll_s: float = 1.0
    reminder_poll_s: float = 30.0
