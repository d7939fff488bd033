"""Notices about runs: a plain-text mail to people, the same subject and text to chat and push
services through Apprise URLs, the run's JSON to a webhook.

A notice is sent after every import (whatever its status) and after any failed run of any
job (`should_notify`). Notifying is best effort by contract: a server that refuses, fails or
hangs, a webhook URL that cannot be used, even a bug, becomes one warning line in the log and
in the run result, never an exception, and never changes the run's status or exit code. A
dry run sends nothing.

No secret may appear in a notice. None is ever put into one on purpose; as a second line of
defence every text that leaves (subject, body, JSON, warnings) is scrubbed of the configured
secret values, because an error message quoting a server's reply could carry one.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from ..config.model import Config, JobConfig, NotifyConfig
from ..config.redact import Scrubber, split_url
from ..errors import one_line
from ..result import RunResult

SUBJECT_PREFIX = "[campaign-sync]"
FIRST_REJECTS_SHOWN = 10
FAILED_STATUSES = ("failed", "interrupted")
# Counts worth naming in a subject; `read` is left to the body.
_SUBJECT_COUNT_LIMIT = 4
_SUBJECT_MAX = 150

_log = logging.getLogger(__name__)

Warn = Callable[[str], None]


# --------------------------------------------------------------------------- policy


def should_notify(job: JobConfig, result: RunResult) -> bool:
    """After every import (any outcome), any failed run, and a dispatch that found sends of
    unknown outcome or has other warnings (an operator must look at those); never for a
    dry run."""
    if result.dry_run or result.status == "running":
        return False
    # A dispatch's warnings (sends of unknown outcome, recipients it could not mail) each
    # need an operator, run after run until mended.
    attention = job.kind == "dispatch" and bool(result.warnings)
    unknown = result.counts.get("unknown", 0) > 0
    return job.kind == "import" or result.status in FAILED_STATUSES or unknown or attention


def apprise_targets(config: Config, job: JobConfig) -> list[tuple[str, str]]:
    """The job's own `notify.urls` then the global ones, each URL once, with the key that
    names it in warnings (the URL itself is a credential and is never shown)."""
    places = [
        (f"jobs.{job.name}.notify.urls", job.notify_urls),
        ("notify.urls", config.notify.urls),
    ]
    seen: set[str] = set()
    out: list[tuple[str, str]] = []
    for key, urls in places:
        for i, url in enumerate(urls):
            if url not in seen:
                seen.add(url)
                out.append((f"{key}[{i}]", url))
    return out


def recipients(config: Config, job: JobConfig) -> list[str]:
    """The job's own `notify` then the global `notify.to`, each address once (any case)."""
    seen: set[str] = set()
    out: list[str] = []
    for address in (*job.notify, *config.notify.to):
        key = address.strip().lower()
        if key and key not in seen:
            seen.add(key)
            out.append(address.strip())
    return out


# --------------------------------------------------------------------------- entry point


def notify(
    config: Config,
    job: JobConfig,
    result: RunResult,
    *,
    log: logging.Logger | None = None,
) -> None:
    """Send the run's notice by mail, Apprise URLs and webhook; problems become warnings on
    `result`.

    Call it when `should_notify` says so; it does not decide that itself, except that a dry
    run never sends anything.
    """
    log = log or _log
    if result.dry_run:
        log.info("dry run: no notification sent")
        return
    scrub = Scrubber.from_config(config)
    warn = _warner(result, log, scrub)
    # Mail first, then Apprise, then the webhook: each one's warnings travel in the notices
    # after it. Each channel on its own, so that one failing, however oddly, neither stops
    # the others nor the run.
    try:
        _mail_notice(config, job, result, scrub, warn, log)
    except Exception as exc:  # noqa: BLE001 - best effort by contract, see module doc
        text = " ".join(str(exc).split())
        detail = f" ({_clip(text, 200)})" if text else ""
        warn(f"notification mail not sent: unexpected {type(exc).__name__}{detail}")
    targets = apprise_targets(config, job)
    if targets:
        try:
            _apprise_notices(targets, config.notify.urls_timeout, job, result, scrub, warn, log)
        except Exception as exc:  # noqa: BLE001 - best effort by contract
            # Named, not quoted: Apprise's text could carry a URL's token.
            keys = ", ".join(key for key, _url in targets)
            warn(f"notices to {keys} not sent: unexpected {type(exc).__name__}")
    if config.notify.webhook:
        _webhook_notice(config.notify, result, scrub, warn, log)


def _webhook_notice(
    settings: NotifyConfig, result: RunResult, scrub: Scrubber, warn: Warn, log: logging.Logger
) -> None:
    assert settings.webhook is not None
    where = _safe_url(settings.webhook)
    try:
        _post_webhook(settings.webhook, settings.webhook_timeout, result, scrub)
    except WebhookError as exc:
        warn(f"webhook notification to {where} failed: {exc}")
    except Exception as exc:  # noqa: BLE001 - best effort by contract
        # Named, not quoted: a library's text could carry the URL's path or query (a token).
        warn(f"webhook notification to {where} failed: unexpected {type(exc).__name__}")
    else:
        log.info("run result posted to the webhook at %s", where)


def _warner(result: RunResult, log: logging.Logger, scrub: Scrubber) -> Warn:
    def warn(message: str) -> None:
        # One line, whatever a server or library put into it.
        message = one_line(" ".join(scrub(message).split()))
        result.warnings.append(message)
        log.warning(message)

    return warn


# --------------------------------------------------------------------------- mail


def _mail_notice(
    config: Config,
    job: JobConfig,
    result: RunResult,
    scrub: Scrubber,
    warn: Warn,
    log: logging.Logger,
) -> None:
    to = recipients(config, job)
    if not to:
        return
    if config.smtp is None:
        warn(f"notification mail to {', '.join(to)} not sent: no smtp block in the config")
        return
    # Imported only when a mail actually goes out: smtplib and email are not cheap.
    from ..dispatch.smtp import SmtpSession, build_text_message
    from ..errors import MailError

    message = build_text_message(
        sender=config.smtp.sender,
        to=to,
        subject=scrub(subject(result)),
        body=scrub(body(job, result)),
        headers={
            # RFC 3834: no vacation replies to a machine's notice.
            "Auto-Submitted": "auto-generated",
            "X-Campaign-Sync-Job": result.job,
            "X-Campaign-Sync-Status": result.status,
        },
    )
    try:
        with SmtpSession(config.smtp) as session:
            outcome = session.send(message, to)
    except MailError as exc:
        warn(f"notification mail to {', '.join(to)} not sent: {exc}")
        return
    for address, refusal in outcome.refused.items():
        warn(f"notification mail to {address} refused by the SMTP server: {refusal}")
    if outcome.accepted:
        log.info("notification mailed to %s", ", ".join(outcome.accepted))


def subject(result: RunResult) -> str:
    """One line saying job and status at a glance, e.g. `… newsletter-import succeeded: 3 …`."""
    status = result.status.upper() if result.status in FAILED_STATUSES else result.status
    head = f"{SUBJECT_PREFIX} {result.job} {status}"
    detail = _subject_detail(result)
    text = f"{head}: {detail}" if detail else head
    text = " ".join(text.split())
    return text if len(text) <= _SUBJECT_MAX else text[: _SUBJECT_MAX - 1] + "…"


def _subject_detail(result: RunResult) -> str:
    if result.status in FAILED_STATUSES:
        return _first_line(result.error or result.message or "")
    if result.status == "skipped":
        return _first_line(result.message or "")
    counts = [
        f"{value} {name.replace('_', ' ')}"
        for name, value in result.ordered_counts().items()
        if value and name != "read"
    ]
    if not counts:
        return "no changes"
    return ", ".join(counts[:_SUBJECT_COUNT_LIMIT])


def body(job: JobConfig, result: RunResult) -> str:
    """The notice text: everything an operator needs without opening a terminal."""
    lines = [
        f"Job:       {result.job} ({result.job_type})",
        f"Status:    {result.status}",
    ]
    if job.list:
        lines.append(f"List:      {job.list}")
    if result.run_id is not None:
        lines.append(f"Run:       {result.run_id}")
    lines += [
        f"Started:   {result.started or '-'}",
        f"Finished:  {result.finished or '-'}",
        f"Duration:  {_duration(result.duration_seconds)}",
    ]
    if result.file is not None:
        f = result.file
        lines += [
            f"File:      {f.path}",
            f"           {f.bytes:,} bytes, sha256 {f.sha256}",
        ]
    if result.message:
        lines += ["", result.message]
    if result.error:
        lines += ["", "Error:", *_indent(result.error.splitlines() or [result.error])]
    lines += _counts_section(result)
    lines += _rejects_section(result)
    if result.warnings:
        lines += ["", "Warnings:", *(f"  - {w}" for w in result.warnings)]
    # Which machine sent it: with several hosts running jobs, that is where to look.
    lines += ["", "-- ", f"campaign-sync on {_hostname()}"]
    return "\n".join(lines) + "\n"


def _counts_section(result: RunResult) -> list[str]:
    counts = result.ordered_counts()
    if not counts:
        return []
    width = max(len(name) for name in counts)
    return ["", "Counts:", *(f"  {name:<{width}}  {value:>10,}" for name, value in counts.items())]


def _rejects_section(result: RunResult) -> list[str]:
    if not result.rejects_file and not result.first_rejects:
        return []
    lines = [""]
    if result.rejects_file:
        lines.append(f"Rejects file: {result.rejects_file}")
    shown = result.first_rejects[:FIRST_REJECTS_SHOWN]
    if shown:
        lines.append(f"First rejects ({len(shown)}):")
        lines += [f"  {_describe_reject(row)}" for row in shown]
    total = result.counts.get("rejected", len(result.first_rejects))
    if total > len(shown):
        lines.append(f"  … and {total - len(shown):,} more in the rejects file")
    return lines


def _describe_reject(row: dict[str, Any]) -> str:
    """`line 7: invalid address — email=foo@` from whatever keys the importer recorded."""
    row = dict(row)
    line = row.pop("line", None)
    reason = row.pop("reason", None)
    rest = ", ".join(f"{k}={_clip(str(v), 60)}" for k, v in row.items())
    text = f"line {line}: " if line is not None else ""
    text += str(reason) if reason is not None else "rejected"
    if rest:
        text += f" — {rest}"
    return _clip(" ".join(text.split()), 300)


def _hostname() -> str:
    import socket

    return socket.gethostname() or "unknown host"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m {secs:02d}s" if hours else f"{minutes}m {secs:02d}s"


def _indent(lines: Iterable[str]) -> list[str]:
    return [f"  {line}" for line in lines]


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else ""


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


# --------------------------------------------------------------------------- apprise

# Apprise's own account of a refusal ends in `error=CODE.` when the service answered HTTP.
_HTTP_CODE = re.compile(r"\berror=([1-5][0-9][0-9])\b")
_NOTIFY_TYPES = {"failed": "failure", "interrupted": "failure", "skipped": "info"}


def _apprise_notices(
    targets: list[tuple[str, str]],
    timeout: float,
    job: JobConfig,
    result: RunResult,
    scrub: Scrubber,
    warn: Warn,
    log: logging.Logger,
) -> None:
    """Send the mail's subject and text to every Apprise URL at once; each URL that did not
    take it is one warning.

    Each service gets `timeout` seconds to connect and as long to answer (its socket
    timeouts: Apprise's own defaults are replaced). Apprise's call timeout is only a backstop,
    set well above that, for what sockets do not bound (a plugin making several requests):
    when it strikes, Apprise stops waiting but leaves the service's thread running, and the
    process would wait for that thread at exit.
    """
    from ..config.apprise_urls import INSTALL_HINT, installed, recognised, scheme_of

    if not installed():
        warn(f"notices to {', '.join(k for k, _u in targets)} not sent: {INSTALL_HINT}")
        return
    # Imported only when a notice goes out to a URL: Apprise loads in about 0.1 s.
    import apprise

    sender = apprise.Apprise(asset=apprise.AppriseAsset(storage_mode="memory"))
    names: dict[str, str] = {}  # Apprise tag → "notify.urls[0] (slack://)"
    for i, (key, url) in enumerate(targets):
        name = f"{key} ({scheme_of(url)}://)"
        service = apprise.Apprise.instantiate(url, tag=f"cs{i}")
        if service is None:
            warn(f"notice to {name} not sent: {recognised(url) or 'Apprise cannot use it'}")
            continue
        service.socket_connect_timeout = timeout
        service.socket_read_timeout = timeout
        sender.add(service)
        names[f"cs{i}"] = name
    if not names:
        return
    outcome = sender.notify(
        body=scrub(body(job, result)),
        title=scrub(subject(result)),
        body_format="text",
        notify_type=_notify_type(result),
        timeout=3 * timeout,
    )
    for service_result in outcome:
        name = names.get(next(iter(service_result.tag), ""), "an Apprise URL")
        if service_result.status == apprise.AppriseResultStatus.SUCCESS:
            log.info("notice sent to %s", scrub(name))
        else:
            warn(f"notice to {name} not sent: {_refusal(service_result, timeout)}")


def _notify_type(result: RunResult) -> str:
    """Apprise's kind of notice, which many services show as a colour or an icon."""
    if result.status in _NOTIFY_TYPES:
        return _NOTIFY_TYPES[result.status]
    return "warning" if result.warnings else "success"


def _refusal(service_result: Any, timeout: float) -> str:
    """Why a service did not take the notice, in our words: the HTTP status when Apprise
    recorded one; no answer when it took the whole timeout (a socket timeout is never early);
    else that it refused or could not be reached. Apprise's own sentences are not passed on:
    they may name parts of the URL."""
    import apprise

    for entry in service_result.logs():
        match = _HTTP_CODE.search(str(getattr(entry, "message", "")))
        if match:
            return f"the service answered HTTP {match[1]}"
    timed_out = service_result.status == apprise.AppriseResultStatus.TIMEOUT
    # (a little below the timeout: Apprise's clock is not the socket's)
    if timed_out or service_result.elapsed >= 0.95 * timeout:
        return f"no answer within {timeout:g} s"
    return "the service refused it or could not be reached"


# --------------------------------------------------------------------------- webhook


class WebhookError(Exception):
    """The webhook did not take the notice; the message says why (no URL secrets in it)."""


# host[:port] of a URL; the host a name, an IPv4 address or a bracketed IPv6 address.
_HOST_PORT = re.compile(r"(?P<host>\[[^\]]+\]|[^:\[\]]+)(?::(?P<port>[^:]*))?")
_BAD_URL = "notify.webhook is not a URL that can be used; check it with `campaign-sync validate`"


@dataclass(frozen=True)
class _Webhook:
    url: str  # what is POSTed to: the configured URL without its user info
    authorization: str | None  # Basic credentials from the user info, if any


def _parse_webhook(url: str) -> _Webhook:
    """Check the URL as the request will use it and move its credentials into a header.

    urllib would take 'user:pw@host' for the host name, and it reports a bad port or host
    with a ValueError in its own words; here each problem is a WebhookError in ours. Plain
    string work, split the way urllib splits URLs.
    """
    import base64
    from urllib.parse import unquote

    scheme, userinfo, host_port, tail = split_url(url)
    if scheme.lower() not in ("http", "https"):
        raise WebhookError("notify.webhook must be an http:// or https:// URL")
    match = _HOST_PORT.fullmatch(host_port)
    if match is None:
        raise WebhookError(f"the host '{_clip(host_port, 80)}' in notify.webhook is not valid")
    port = match["port"]
    if port and not (port.isascii() and port.isdigit() and 1 <= int(port) <= 65535):
        raise WebhookError(
            f"the port '{_clip(port, 20)}' in notify.webhook is not a number from 1 to 65535"
        )
    authorization = None
    if userinfo is not None:
        user, _, password = userinfo.partition(":")
        token = base64.b64encode(f"{unquote(user)}:{unquote(password)}".encode()).decode()
        authorization = f"Basic {token}"
    return _Webhook(f"{scheme}://{host_port}{tail}", authorization)


def _refusing_redirects() -> type:
    import urllib.request

    class RefuseRedirects(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *_args: object, **_kw: object) -> None:
            return None  # the 3xx then surfaces as an HTTPError

    return RefuseRedirects


def _post_webhook(url: str, timeout: float, result: RunResult, scrub: Scrubber) -> None:
    import http.client
    import json
    import urllib.error
    import urllib.request

    from ..core.neterrors import describe

    webhook = _parse_webhook(url)
    if not 0 < timeout < float("inf"):  # NaN too: the socket would refuse it
        raise WebhookError(f"notify.webhook_timeout {timeout} is not a usable number of seconds")
    payload = json.dumps(scrub.data(result.as_dict()), ensure_ascii=False).encode("utf-8")
    headers = {"Content-Type": "application/json", "User-Agent": "campaign-sync"}
    if webhook.authorization:
        headers["Authorization"] = webhook.authorization
    # No redirects: urllib would turn the POST into a bodiless GET and carry the
    # Authorization header to wherever the Location points.
    opener = urllib.request.build_opener(_refusing_redirects())
    # The timeout applies to the connect and to each wait for data: a server that accepts
    # and never answers costs `timeout`, not the run.
    try:
        request = urllib.request.Request(webhook.url, data=payload, method="POST", headers=headers)
        with opener.open(request, timeout=timeout) as response:
            response.read(65536)
    except urllib.error.HTTPError as exc:
        if 300 <= exc.code < 400:
            raise WebhookError(
                f"HTTP {exc.code} {exc.reason}: redirects are not followed; set notify.webhook "
                "to the address that accepts the POST"
            ) from None
        raise WebhookError(f"HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        reason = exc.reason
        if isinstance(reason, BaseException):
            raise WebhookError(describe(reason, timeout)) from None
        raise WebhookError(f"the request could not be made ({reason})") from None
    except http.client.RemoteDisconnected:
        raise WebhookError("the server closed the connection without answering") from None
    except http.client.HTTPException:
        raise WebhookError("the server's answer is not valid HTTP") from None
    except OSError as exc:  # a timeout, a reset or close mid-answer
        raise WebhookError(describe(exc, timeout)) from None
    except ValueError:
        # Not quoted: urllib's wording would carry the URL's path or query, maybe a token.
        raise WebhookError(_BAD_URL) from None


def _safe_url(url: str) -> str:
    """scheme://host[:port] as written: the path, query or user info of a webhook may be a
    token. String work only, so that even a malformed URL can be named in a warning."""
    scheme, _userinfo, host_port, _tail = split_url(url)
    if not scheme or not host_port:
        return "notify.webhook"
    return _clip(f"{scheme.lower()}://{host_port}", 120)
