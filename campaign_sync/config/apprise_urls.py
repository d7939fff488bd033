"""Apprise URLs in the config (`notify.urls`, `jobs.NAME.notify.urls`): their shape, whether
the optional Apprise package is there to use them, and whether Apprise knows them.

Apprise itself is imported only by `recognised()` (for `campaign-sync validate`) and by the
notice code when a notice goes out: loading it costs a tenth of a second, and commands that
send nothing must not pay that.

An Apprise URL is a credential as a whole: services put their tokens anywhere in it, in the
user info (`pover://USER@TOKEN`), the host (`tgram://BOTTOKEN/CHAT`, `ntfy://TOPIC`), the path
(`slack://TOKENA/TOKENB/TOKENC`) or the query (`?token=…`). So it is never printed (a URL is
named by its key, e.g. `notify.urls[0]`, and its scheme), and redact.py's
`apprise_url_parts()` lists every part of it that the scrubber must mask.
"""

from __future__ import annotations

import re
import unicodedata

INSTALL_HINT = "install the Apprise extra: pip install 'campaign-sync[apprise]'"
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]{0,31}")


def installed() -> bool:
    """Whether Apprise can be imported, found without importing it."""
    import importlib.util

    try:
        return importlib.util.find_spec("apprise") is not None
    except (ImportError, ValueError):  # a finder that refuses it, a half-removed module
        return False


def shape_problem(url: str) -> str | None:
    """What makes `url` no Apprise URL at all, in words that quote none of it."""
    if any(ch.isspace() or unicodedata.category(ch).startswith("C") for ch in url):
        return "it contains a space or a control character"
    scheme, sep, rest = url.partition("://")
    if not sep or not _SCHEME.fullmatch(scheme):
        return "expected an Apprise URL, SERVICE://… (e.g. slack://…, ntfy://…, json://…)"
    if not rest:
        return f"the {scheme_of(url)}:// URL has nothing after the scheme"
    return None


def scheme_of(url: str) -> str:
    """The URL's scheme in lower case, safe to print (it names a service, not a secret)."""
    scheme = url.partition("://")[0]
    return scheme.lower() if _SCHEME.fullmatch(scheme) else "?"


def recognised(url: str) -> str | None:
    """None when Apprise can send to `url`, else why not, without quoting the URL.

    Imports Apprise: call it only where a notice is sent or the config is validated.
    """
    import apprise

    if apprise.Apprise.instantiate(url) is not None:
        return None
    scheme = scheme_of(url)
    if scheme not in apprise.NotificationManager():
        return f"Apprise has no service with the scheme {scheme}://"
    return (
        f"Apprise cannot use this {scheme}:// URL: a part the service needs is missing or "
        "malformed (see the service's page in the Apprise documentation)"
    )
