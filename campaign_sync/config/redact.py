"""Keeping secrets out of everything we print, record or send.

Secrets come from the config (passwords, SSH and OpenPGP key passphrases, credentials in a
webhook URL, the parts of Apprise URLs that may be tokens); any text leaving the process
passes through a Scrubber as defence in depth, in case a library quotes one back in an error
message.

Only secrets of at least MIN_SECRET_LENGTH characters are masked. A shorter one would turn
up by chance in ordinary text: a password `e` would make `webhook rejected` read
`w***bhook r***j***ct***d`, which also tells everyone the password, and `2026` would blank
every date. Such secrets are left alone and `validate` warns that they are weak.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from ..errors import ConfigError
from .model import Config, SmtpConfig

REDACTED = "***"
# At eight characters an accidental match in a path, a date, a count or a word is
# improbable, and masking one no longer narrows the secret down to a handful of guesses.
MIN_SECRET_LENGTH = 8


class Scrubber:
    """Replaces every configured secret value of a safe length in a text with ***.

    Matching is by substring, not by whole word: a library may quote a secret glued to
    other text (`pw=…`, `user:…@host`, a reply the server appended letters to), and a long
    secret is as unlikely to occur inside a word as on its own.
    """

    def __init__(self, secrets: Iterable[str | None]):
        # Longest first, so a secret that contains another is replaced whole.
        self.secrets = sorted({s for s in secrets if s and maskable(s)}, key=len, reverse=True)

    @classmethod
    def from_config(cls, config: Config) -> Scrubber:
        found = configured_secrets(config) + apprise_url_secrets(config)
        return cls(value for _key, value in found)

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


def maskable(secret: str) -> bool:
    """Long enough to be masked without damaging ordinary text (see the module doc)."""
    return len(secret) >= MIN_SECRET_LENGTH


def weak_secret_warnings(config: Config) -> list[str]:
    """One line per configured secret too short to be masked, naming its key, not its value."""
    weak = dict.fromkeys(  # a key once, though a URL's password is checked in two forms
        key for key, value in configured_secrets(config) if value and not maskable(value)
    )
    message = (
        f"weak secret (fewer than {MIN_SECRET_LENGTH} characters): too short to be masked "
        "in output, so it is not; use a longer one"
    )
    return [str(ConfigError(message, path=str(config.path), key=key)) for key in weak]


def configured_secrets(config: Config) -> list[tuple[str, str | None]]:
    """Every secret of the config with the key it is set at."""
    found: list[tuple[str, str | None]] = []
    smtp: SmtpConfig | None = config.smtp
    if smtp is not None:
        found.append(("smtp.password", smtp.password))
    for name, server in config.servers.items():
        found += [
            (f"servers.{name}.password", server.password),
            (f"servers.{name}.key_passphrase", server.key_passphrase),
        ]
    if config.pgp is not None:
        found.append(("pgp.passphrase", config.pgp.passphrase))
    found.append(("serve.token", config.serve.token))
    if "://" in config.store:
        # A password in the store's URL (better kept in PGPASSFILE or PGPASSWORD, which
        # campaign-sync never reads back), as written and decoded.
        from urllib.parse import unquote

        password = url_password(config.store)
        found += [("store", password), ("store", unquote(password or ""))]
    import os

    if os.environ.get("PGPASSWORD"):  # libpq's own setting: masked like a config secret
        found.append(("PGPASSWORD", os.environ["PGPASSWORD"]))
    if config.notify.webhook:
        # Credentials embedded in the webhook URL are secrets too, as written and decoded
        # (the decoded form is what goes into the Authorization header).
        from urllib.parse import unquote

        password = url_password(config.notify.webhook)
        found += [("notify.webhook", password), ("notify.webhook", unquote(password or ""))]
    return found


def apprise_url_secrets(config: Config) -> list[tuple[str, str | None]]:
    """The parts of every Apprise URL that may be tokens, with the key of their URL.

    Kept apart from configured_secrets: a URL's short parts (a path segment `hooks`, a topic)
    are masked if long enough, like any secret, but are no reason for a weak-secret warning,
    as most of them are not chosen by the operator.
    """
    places = [("notify.urls", config.notify.urls)] + [
        (f"jobs.{name}.notify.urls", job.notify_urls) for name, job in config.jobs.items()
    ]
    return [
        (f"{key}[{i}]", part)
        for key, urls in places
        for i, url in enumerate(urls)
        for part in apprise_url_parts(url)
    ]


def url_password(url: str) -> str | None:
    """The password of `scheme://user:password@host/…`, or None."""
    userinfo = split_url(url)[1]
    if userinfo is None:
        return None
    _user, colon, password = userinfo.partition(":")
    return password if colon else None


def split_url(url: str) -> tuple[str, str | None, str, str]:
    """`scheme://userinfo@host:port/path?query` → scheme, userinfo (None without an @),
    `host:port` and the rest from the first / ? or #, split the way urllib splits them.

    Plain string work that cannot fail: urlsplit raises on some malformed URLs (`[::1`), and
    a URL that breaks the scrubber or a warning must not take a run down with it.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        return "", None, "", url
    end = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    userinfo, at, host_port = rest[:end].rpartition("@")
    return scheme, userinfo if at else None, host_port, rest[end:]


# A host name with a dot and a top-level label of letters: a service's public address
# (hooks.slack.com, ntfy.sh), not a token, which has no dot or no such last label.
_DOTTED_NAME = re.compile(r"(?=.{1,253}$)([A-Za-z0-9-]{1,63}\.)+[A-Za-z]{2,63}")
# Path segments that name a route, never a token (hooks.slack.com/services/…): masking them
# would blank ordinary words everywhere, campaign-sync's own name in every notice included,
# and tell anyone that this very word is in the URL.
_ROUTE_WORDS = frozenset(
    ("campaign-sync", "campaign_sync", "services", "webhook", "webhooks", "messages", "incoming")
)


def apprise_url_parts(url: str) -> list[str]:
    """Every part of `url` that may be a secret, as written and percent-decoded.

    The rule: everything but the scheme, the port, the query's parameter names, a host that
    is plainly a network address (an IP address, a dotted name ending in a top-level label of
    letters) and a path segment that is one of a few route words (`services`, `webhooks`,
    `campaign-sync`, see _ROUTE_WORDS). That is the user, the password, any other host (for
    many services a token), each other path segment, each query value, the fragment, and
    the URL as written. Parts too short to mask are left to the scrubber's length rule.
    """
    from urllib.parse import unquote

    _scheme, userinfo, host_port, tail = split_url(url)
    parts = [url]
    if userinfo is not None:
        parts += [userinfo, *userinfo.split(":", 1)]
    host, port = _host_and_port(host_port)
    if not (port.isdigit() or not port) or not _public_host(host):
        parts += [host_port, host, port]
    path, _, fragment = tail.partition("#")
    path, _, query = path.partition("?")
    parts += [segment for segment in path.split("/") if segment.lower() not in _ROUTE_WORDS]
    parts += [pair.split("=", 1)[-1] for pair in query.split("&")]  # a bare item too
    parts.append(fragment)
    decoded = [unquote(part) for part in parts]
    return [part for part in dict.fromkeys(parts + decoded) if part]


def _host_and_port(host_port: str) -> tuple[str, str]:
    if host_port.startswith("["):
        host, _, rest = host_port.partition("]")
        return host + "]", rest[1:] if rest.startswith(":") else rest
    host, _, port = host_port.partition(":")
    return host, port


def _public_host(host: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return bool(_DOTTED_NAME.fullmatch(host))
    return True
