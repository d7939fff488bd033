"""Keeping secrets out of everything we print, record or send.

Secrets come from the config (passwords, key passphrases, credentials in a webhook URL);
any text leaving the process passes through a Scrubber as defence in depth, in case a
library quotes one back in an error message.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .config import Config, SmtpConfig

REDACTED = "***"


class Scrubber:
    """Replaces every configured secret value in a text with ***."""

    def __init__(self, secrets: Iterable[str | None]):
        # Longest first, so a secret that contains another is replaced whole.
        self.secrets = sorted({s for s in secrets if s}, key=len, reverse=True)

    @classmethod
    def from_config(cls, config: Config) -> Scrubber:
        return cls(_secrets(config))

    def __call__(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, REDACTED)
        return text

    def data(self, value: Any) -> Any:
        """The same for every string in a JSON-like structure."""
        if isinstance(value, str):
            return self(value)
        if isinstance(value, dict):
            return {k: self.data(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self.data(v) for v in value]
        return value


def _secrets(config: Config) -> list[str | None]:
    found: list[str | None] = []
    smtp: SmtpConfig | None = config.smtp
    if smtp is not None:
        found.append(smtp.password)
    for server in config.servers.values():
        found += [server.password, server.key_passphrase]
    if config.notify.webhook:
        # Credentials embedded in the webhook URL are secrets too.
        from urllib.parse import urlsplit

        parts = urlsplit(config.notify.webhook)
        found += [parts.password]
    return found
