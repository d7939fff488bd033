"""The validator: the top level (store, work_dir, timezone, smtp, notify, bounces) and the
servers and jobs through their own checks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .checks import (
    join_key,
    kind_of,
)
from .model import (
    API_TOKEN,
    API_TOKEN_MIN_LENGTH,
    JOB_NAME,
    SCHEMA_NAME,
    STORE_URL_SCHEMES,
    BounceLimits,
    Config,
    JobConfig,
    NotifyConfig,
    Retention,
    ServeConfig,
    ServerConfig,
    SmtpConfig,
)
from .validate_jobs import JobChecks
from .validate_servers import ServerChecks, is_loopback

TOP_LEVEL_KEYS = (
    "store",
    "store_schema",
    "work_dir",
    "timezone",
    "log_file",
    "servers",
    "smtp",
    "notify",
    "bounces",
    "pgp",
    "serve",
    "retention",
    "jobs",
)
SMTP_KEYS = (
    "host",
    "port",
    "starttls",
    "ssl",
    "user",
    "password",
    "from",
    "timeout",
    "allow_plaintext_auth",
)


class Validator(ServerChecks, JobChecks):
    """Turns the interpolated YAML tree into a Config, or raises the first problem found.

    `problems()` collects every problem instead, for `campaign-sync validate`.
    """

    def config(self, raw: dict[str, Any]) -> Config:
        top = self.mapping(raw, "", TOP_LEVEL_KEYS)
        servers_raw = top.get("servers") or {}
        if not isinstance(servers_raw, dict):
            raise self.fail(
                "servers", f"expected a mapping of server names, got {kind_of(servers_raw)}"
            )
        servers: dict[str, ServerConfig] = {}
        for name, spec in servers_raw.items():
            server = self.attempt(lambda n=name, s=spec: self.server(self.name(n, "servers"), s))
            if server is not None:
                servers[server.name] = server
        servers = self.jump_hosts(servers_raw, servers)
        timezone = self.attempt(lambda: self.timezone(top.get("timezone")))
        smtp = self.attempt(lambda: self.smtp(top["smtp"]) if top.get("smtp") is not None else None)
        jobs_raw = top.get("jobs") or {}
        if not isinstance(jobs_raw, dict):
            raise self.fail("jobs", f"expected a mapping of job names, got {kind_of(jobs_raw)}")
        jobs: dict[str, JobConfig] = {}
        for name, spec in jobs_raw.items():
            job = self.attempt(
                lambda n=name, s=spec: self.job(self.name(n, "jobs"), s, servers_raw, servers, smtp)
            )
            if job is not None:
                jobs[job.name] = job
        if top.get("pgp") is None:
            self.attempt(lambda: self.pgp_needed(jobs))
        return Config(
            path=self.path,
            store=self.attempt(lambda: self.store(top.get("store", "campaign-sync.db")), ""),
            work_dir=self.attempt(
                lambda: self.local_path(top.get("work_dir", "var"), "work_dir"), Path()
            ),
            timezone=timezone,
            log_file=self.attempt(
                lambda: (
                    self.local_path(top["log_file"], "log_file") if top.get("log_file") else None
                )
            ),
            servers=servers,
            smtp=smtp,
            notify=self.attempt(lambda: self.notify(top.get("notify")), NotifyConfig()),
            bounces=self.attempt(lambda: self.bounces(top.get("bounces")), BounceLimits()),
            jobs=jobs,
            store_schema=self.attempt(
                lambda: self.store_schema(top.get("store_schema"), top.get("store")), "public"
            ),
            pgp=self.attempt(lambda: self.pgp(top.get("pgp"))),
            serve=self.attempt(lambda: self.serve(top.get("serve")), ServeConfig()),
            retention=self.attempt(lambda: self.retention(top.get("retention")), Retention()),
        )

    def store(self, value: Any) -> str:
        store = self.string(value, "store")
        if store.startswith(STORE_URL_SCHEMES):
            return store
        if "://" in store:
            # Not quoted back: a server URL may carry a password.
            raise self.fail(
                "store",
                "set `store` to an SQLite file path or a PostgreSQL URL "
                "(postgresql://USER@HOST:PORT/DATABASE)",
            )
        return str(self.local_path(store, "store"))

    def store_schema(self, value: Any, store: Any) -> str:
        if value is None:
            return "public"
        schema = self.string(value, "store_schema")
        if not (isinstance(store, str) and store.startswith(STORE_URL_SCHEMES)):
            raise self.fail(
                "store_schema", "only a PostgreSQL store has a schema; remove `store_schema`"
            )
        if not SCHEMA_NAME.fullmatch(schema):
            raise self.fail(
                "store_schema",
                f"'{schema}' is not a plain PostgreSQL name: use letters, digits, _ and $, "
                "starting with a letter or _, at most 63 characters",
            )
        return schema

    def timezone(self, value: Any) -> str | None:
        if value is None:
            return None
        name = self.string(value, "timezone")
        _check_timezone(name, self.fail("timezone", f"unknown time zone '{name}'"))
        return name

    def name(self, name: Any, section: str) -> str:
        if not isinstance(name, str):
            # YAML reads `2024:` as a number, `yes:` as true, `010:` as 8: not what was typed.
            raise self.fail(
                join_key(section, name),
                f"a name must be text, got {kind_of(name)}; put it in quotes",
            )
        text = name
        if not JOB_NAME.match(text):
            raise self.fail(
                join_key(section, text),
                "names may use letters, digits, '-', '_' and '.', starting with a letter or digit",
            )
        return text

    def smtp(self, raw: Any) -> SmtpConfig:
        spec = self.mapping(raw, "smtp", SMTP_KEYS)
        sender = self.string(spec.get("from", "campaign-sync@localhost"), "smtp.from")
        if "@" not in sender:
            raise self.fail("smtp.from", f"'{sender}' is not an email address")
        smtp = SmtpConfig(
            host=self.string(spec.get("host", "localhost"), "smtp.host"),
            port=self.integer(spec.get("port", 25), "smtp.port", minimum=1, maximum=65535),
            starttls=self.boolean(spec.get("starttls", False), "smtp.starttls"),
            ssl=self.boolean(spec.get("ssl", False), "smtp.ssl"),
            user=self.string(spec["user"], "smtp.user") if spec.get("user") else None,
            password=self.secret(spec.get("password"), "smtp.password"),
            sender=sender,
            timeout=self.timeout(spec.get("timeout", 30), "smtp.timeout"),
            allow_plaintext_auth=self.boolean(
                spec.get("allow_plaintext_auth", False), "smtp.allow_plaintext_auth"
            ),
        )
        self.smtp_auth_encrypted(smtp)
        return smtp

    def smtp_auth_encrypted(self, smtp: SmtpConfig) -> None:
        """A password never crosses the network unencrypted: AUTH needs STARTTLS or SSL,
        except towards a relay on this machine when the operator opted in."""
        if smtp.allow_plaintext_auth and not is_loopback(smtp.host):
            self.note(
                self.fail(
                    "smtp.allow_plaintext_auth",
                    f"only for a relay on this machine (localhost, 127.0.0.1, ::1), not "
                    f"'{smtp.host}'; use starttls: true (or ssl: true) instead",
                )
            )
        elif smtp.user and not (smtp.starttls or smtp.ssl or smtp.allow_plaintext_auth):
            self.note(
                self.fail(
                    "smtp.starttls",
                    "required when smtp.user is set, or the password would be sent "
                    "unencrypted: set starttls: true (or ssl: true for port 465); for a relay "
                    "on this machine, allow_plaintext_auth: true",
                )
            )

    def notify(self, raw: Any) -> NotifyConfig:
        allowed = ("to", "webhook", "webhook_timeout", "urls", "urls_timeout")
        spec = self.mapping(raw, "notify", allowed)
        webhook = None
        if spec.get("webhook") is not None:
            webhook = self.web_url(spec["webhook"], "notify.webhook")
        return NotifyConfig(
            to=self.addresses(spec.get("to", []), "notify.to"),
            webhook=webhook,
            webhook_timeout=self.timeout(spec.get("webhook_timeout", 10), "notify.webhook_timeout"),
            urls=self.apprise_urls(spec.get("urls"), "notify.urls"),
            urls_timeout=self.timeout(spec.get("urls_timeout", 10), "notify.urls_timeout"),
        )

    def bounces(self, raw: Any) -> BounceLimits:
        spec = self.mapping(raw, "bounces", ("hard_limit", "soft_limit"))
        return BounceLimits(
            hard_limit=self.bounce_limit(spec.get("hard_limit", 3), "bounces.hard_limit"),
            soft_limit=self.bounce_limit(spec.get("soft_limit", 10), "bounces.soft_limit"),
        )

    def serve(self, raw: Any) -> ServeConfig:
        spec = self.mapping(raw, "serve", ("token",))
        if "token" not in spec:
            return ServeConfig()
        token = self.secret(spec["token"], "serve.token")
        if token is None:
            # Most often ${VAR} of an unset or empty variable: serving without the token
            # the operator meant to set would be a surprise, so it is an error, not a default.
            raise self.fail(
                "serve.token",
                "must not be empty; set it (e.g. ${CAMPAIGN_SYNC_API_TOKEN}) or remove the key",
            )
        if not API_TOKEN.fullmatch(token):
            raise self.fail(
                "serve.token",
                f"use at least {API_TOKEN_MIN_LENGTH} characters of letters, digits and "
                "- . _ ~ + / (e.g. the output of `openssl rand -hex 32`)",
            )
        return ServeConfig(token=token)

    def retention(self, raw: Any) -> Retention:
        spec = self.mapping(raw, "retention", ("runs", "rejects"))
        values: dict[str, Any] = {}
        # Each key on its own, so `validate` reports both when both are wrong.
        for key, name in (("runs", "runs_days"), ("rejects", "rejects_days")):
            if key in spec:
                self.settle(values, name, lambda k=key: self.days(spec[k], f"retention.{k}"))
        return Retention(**values)


def _check_timezone(name: str, error: ConfigError) -> None:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise error from None
