"""The WSGI application: routes, authentication, responses and errors of the HTTP service.

Every answer is built by the same functions as the status commands (ops.monitor for
list-jobs, history and lists, ops.metrics for `metrics`), so the API and the CLI cannot
drift apart. The store is opened read-only (see Store.__init__): nothing here writes, and a
dead run is shown `interrupted` the way list-jobs shows it, without recording it.
"""

from __future__ import annotations

import datetime
import hmac
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import parse_qsl

from ..config.model import Config
from ..config.redact import Scrubber
from ..errors import CampaignSyncError, StoreError, StoreNotCreated
from ..ops import metrics, monitor
from ..store.base import Store
from ..store.open import open_store
from . import openapi, page

StartResponse = Callable[..., Any]
Environ = dict[str, Any]

log = logging.getLogger("campaign_sync.serve")
access_log = logging.getLogger("campaign_sync.serve.access")

DEFAULT_LIMIT = 20  # as `history`
# How old an answer about all jobs or all lists may be. Computing one takes milliseconds to
# tens of milliseconds (each job's schedule, each list's count): under load, every request
# would pay that and queue behind the others. At most one computation per second serves them
# all, and no status a person or a scraper acts on changes meaning within a second.
FRESH_SECONDS = 1.0
MAX_LIMIT = openapi.MAX_LIMIT  # one answer stays small, whatever a client asks
REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    405: "Method Not Allowed",
    500: "Internal Server Error",
    503: "Service Unavailable",
}
JSON = "application/json"
PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"
STORE_UNREADABLE = "the store cannot be read now; the service's log says why"


class Response:
    """A status, a body and its content type, and any extra headers."""

    def __init__(
        self, status: int, body: bytes, content_type: str, headers: tuple[tuple[str, str], ...] = ()
    ) -> None:
        self.status = status
        self.body = body
        self.content_type = content_type
        self.headers = headers


def json_response(document: Any, status: int = 200, **kw: Any) -> Response:
    return Response(status, json_body(document), f"{JSON}; charset=utf-8", **kw)


def json_body(document: Any) -> bytes:
    # Compact: Python's JSON encoder runs in C only without indent (~10 times faster).
    return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def error(status: int, message: str, **kw: Any) -> Response:
    """An error answer: `{"error": message}`, a fixed sentence that holds no store data."""
    return json_response({"error": message}, status, **kw)


class BadRequest(Exception):
    """A query parameter the route does not take, or a value out of its range (400)."""


class NotFound(Exception):
    """No such resource (404)."""


class Request:
    """What a handler needs of a request: its path and its query parameters, checked."""

    def __init__(self, environ: Environ) -> None:
        # WSGI hands the path over as latin-1 text of the raw bytes: back to UTF-8 (a job name
        # may be any UTF-8); bytes that are no UTF-8 name nothing here.
        raw = environ.get("PATH_INFO", "")
        try:
            self.path = raw.encode("latin-1").decode("utf-8")
        except UnicodeError:
            self.path = ""
        self.query = environ.get("QUERY_STRING", "")

    def params(self, allowed: tuple[str, ...]) -> dict[str, str]:
        """The query parameters, each at most once and each one of `allowed`."""
        try:
            pairs = parse_qsl(
                self.query, keep_blank_values=True, strict_parsing=bool(self.query),
                errors="strict", max_num_fields=len(allowed) + 1,
            )  # fmt: skip
        except ValueError:
            raise BadRequest("the query string is malformed") from None
        found: dict[str, str] = {}
        for name, value in pairs:
            if name not in allowed:
                known = ", ".join(allowed) or "none"
                raise BadRequest(f"unknown parameter '{name}' (this path takes: {known})")
            if name in found:
                raise BadRequest(f"parameter '{name}' is given more than once")
            found[name] = value
        return found


def limit_of(params: dict[str, str]) -> int:
    text = params.get("limit", str(DEFAULT_LIMIT))
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= MAX_LIMIT:
        raise BadRequest(f"limit must be a whole number from 1 to {MAX_LIMIT}")
    return int(text)


class StoreHandles:
    """One read-only store per server thread, opened on first use and kept: a connection per
    request would cost a PostgreSQL login each time. A store that no run has created yet is
    looked for again on the next request; a handle that failed is dropped and reopened."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.local = threading.local()

    @contextmanager
    def store(self) -> Iterator[Store | None]:
        opened: Store | None = getattr(self.local, "store", None)
        if opened is None:
            try:
                opened = open_store(
                    self.config.store, schema=self.config.store_schema, read_only=True
                )
            except StoreNotCreated:
                opened = None
            self.local.store = opened
        try:
            yield opened
        except BaseException:
            self.drop()
            raise
        if opened is not None and opened.in_transaction:
            opened.rollback()  # a reader's snapshot must not outlive its request

    def drop(self) -> None:
        opened: Store | None = getattr(self.local, "store", None)
        self.local.store = None
        if opened is not None:
            try:
                opened.close()
            except Exception:  # already broken: nothing more to release
                log.debug("closing a failed store handle failed", exc_info=True)


class Fresh:
    """A value computed again when it is older than FRESH_SECONDS, by one thread at a time.
    Meanwhile the others answer with the value before it (at most a computation older), so
    no request queues behind another's computation; only the very first one waits."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.at = -FRESH_SECONDS
        self.value: Any = None
        self.known = False

    def get(self, compute: Callable[[], Any]) -> Any:
        if time.monotonic() - self.at < FRESH_SECONDS:
            return self.value
        if not self.lock.acquire(blocking=not self.known):
            return self.value  # another thread is computing the next one
        try:
            if time.monotonic() - self.at >= FRESH_SECONDS:  # not done while we waited
                self.value = compute()
                self.at = time.monotonic()
                self.known = True
            return self.value
        finally:
            self.lock.release()


Handler = Callable[[Request, Store | None], Response]


class App:
    """The service for one loaded config: a WSGI callable."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.token = config.serve.token.encode("utf-8") if config.serve.token else None
        self.scrub = Scrubber.from_config(config)
        self.stores = StoreHandles(config)
        self.document = openapi.document(config)
        self.fresh: dict[str, Fresh] = {name: Fresh() for name in ("jobs", "lists", "metrics")}
        self.jobs_body: tuple[list[dict[str, Any]], bytes] | None = None  # states, encoded
        self.routes: dict[str, Handler] = {
            "/api/jobs/configured": self.configured,
            "/api/jobs/running": self.running,
            "/api/runs": self.runs,
            "/api/lists": self.lists,
            "/metrics": self.metrics,
            "/": self.page,
        }

    # -- WSGI

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        started = time.monotonic()
        response = self.respond(environ)
        headers = [
            ("Content-Type", response.content_type),
            ("Content-Length", str(len(response.body))),
            ("Cache-Control", "no-store"),
            ("X-Content-Type-Options", "nosniff"),
            *response.headers,
        ]
        start_response(f"{response.status} {REASONS[response.status]}", headers)
        self.log_access(environ, response, time.monotonic() - started)
        return [b"" if environ.get("REQUEST_METHOD") == "HEAD" else response.body]

    def log_access(self, environ: Environ, response: Response, seconds: float) -> None:
        """One line per request: never a header (the token travels in one), and the query
        scrubbed of secrets in case a client put one there."""
        target = environ.get("PATH_INFO", "")
        if environ.get("QUERY_STRING"):
            target += "?" + environ["QUERY_STRING"]
        access_log.info(
            '%s "%s %s" %d %d %.1f ms',
            environ.get("REMOTE_ADDR", "-"),
            environ.get("REQUEST_METHOD", "-"),
            self.scrub(target),
            response.status,
            len(response.body),
            seconds * 1000,
        )

    def respond(self, environ: Environ) -> Response:
        request = Request(environ)
        if environ.get("REQUEST_METHOD") not in ("GET", "HEAD"):
            return error(405, "only GET and HEAD are allowed", headers=(("Allow", "GET, HEAD"),))
        if request.path == "/healthz":
            return self.health()
        if request.path == openapi.PATH:
            return json_response(self.document)
        if not self.authorized(environ):
            return error(
                401,
                "a valid bearer token is required",
                headers=(("WWW-Authenticate", 'Bearer realm="campaign-sync"'),),
            )
        handler = self.routes.get(request.path)
        if handler is None and request.path.startswith(JOB_PREFIX):
            handler = self.job
        if handler is None:
            return error(404, "no such path; the API is described at " + openapi.PATH)
        return self.handle(handler, request)

    def authorized(self, environ: Environ) -> bool:
        if self.token is None:
            return True
        scheme, _, given = environ.get("HTTP_AUTHORIZATION", "").partition(" ")
        # Compared in constant time: how long a wrong token takes says nothing about it.
        return scheme.lower() == "bearer" and hmac.compare_digest(
            given.strip().encode("utf-8", "surrogateescape"), self.token
        )

    def handle(self, handler: Handler, request: Request) -> Response:
        try:
            with self.stores.store() as store:
                driver_errors = store.errors if store else ()
                try:
                    return handler(request, store)
                except driver_errors as exc:
                    assert store is not None
                    raise store.failure("cannot read the store", exc) from None
        except BadRequest as exc:
            return error(400, str(exc))
        except NotFound as exc:
            return error(404, str(exc))
        except StoreError as exc:
            log.error("%s: %s", request.path, self.scrub(str(exc)))
            return error(503, STORE_UNREADABLE)
        except Exception as exc:  # the driver's error, or a bug: one line, never a traceback
            log.error("%s: %s", request.path, self.scrub(_describe(exc)))
            return error(503, STORE_UNREADABLE)

    # -- routes

    def health(self) -> Response:
        """Open without a token: it says only whether the store can be read."""
        try:
            with self.stores.store() as store:
                if store is not None:
                    store.sql("runs").history(store.conn, None, 1)
        except Exception as exc:
            log.error("/healthz: %s", self.scrub(_describe(exc)))
            return json_response({"status": "unavailable"}, 503)
        return json_response({"status": "ok"})

    def states(self, store: Store | None) -> list[dict[str, Any]]:
        """The list-jobs documents, at most FRESH_SECONDS old."""
        states: list[dict[str, Any]] = self.fresh["jobs"].get(
            lambda: monitor.job_states(self.config, store)
        )
        return states

    def configured(self, request: Request, store: Store | None) -> Response:
        request.params(())
        # The busiest path: its body is encoded once per state, not per request.
        states = self.states(store)
        cached = self.jobs_body
        if cached is None or cached[0] is not states:
            cached = self.jobs_body = (states, json_body(states))
        return Response(200, cached[1], f"{JSON}; charset=utf-8")

    def running(self, request: Request, store: Store | None) -> Response:
        request.params(())
        return json_response([state for state in self.states(store) if state["running"]])

    def job(self, request: Request, store: Store | None) -> Response:
        name = request.path.removeprefix(JOB_PREFIX)
        params = request.params(("limit",))
        if name not in self.config.jobs:
            raise NotFound(f"no job of that name is configured; see {JOB_PREFIX}configured")
        limit = limit_of(params)
        [state] = [s for s in self.states(store) if s["name"] == name]
        return json_response({"job": state, "runs": monitor.history(store, name, limit)})

    def runs(self, request: Request, store: Store | None) -> Response:
        params = request.params(("job", "status", "limit"))
        job = params.get("job")
        if job is not None and job not in self.config.jobs:
            raise BadRequest("job must be the name of a configured job")
        status = params.get("status")
        if status is not None and status not in metrics.RUN_STATUSES:
            raise BadRequest(f"status must be one of: {', '.join(metrics.RUN_STATUSES)}")
        limit = limit_of(params)
        return json_response(monitor.history(store, job, limit, status))

    def lists(self, request: Request, store: Store | None) -> Response:
        request.params(())
        return json_response(self.fresh["lists"].get(lambda: self.list_counts(store)))

    def list_counts(self, store: Store | None) -> list[dict[str, Any]]:
        counts: list[dict[str, Any]] = monitor.list_counts(self.config, store)
        return counts

    def metrics(self, request: Request, store: Store | None) -> Response:
        request.params(())
        return Response(200, self.fresh["metrics"].get(lambda: self.metrics_text(store)),
                        PROMETHEUS_TEXT)  # fmt: skip

    def metrics_text(self, store: Store | None) -> bytes:
        """`campaign-sync metrics`: its own reading of the store, as the command does."""
        now = datetime.datetime.now(datetime.timezone.utc)
        jobs = monitor.job_states(self.config, store, now)
        text = metrics.render(jobs, monitor.list_counts(self.config, store), now)
        return text.encode("utf-8")

    def page(self, request: Request, store: Store | None) -> Response:
        now = datetime.datetime.now(datetime.timezone.utc)
        text = page.status_page(self.config, store, now)
        return Response(200, text.encode("utf-8"), "text/html; charset=utf-8")


JOB_PREFIX = "/api/jobs/"


def _describe(exc: BaseException) -> str:
    """An error in one line: ours as it is; another its type, and its text if it has one."""
    text = " ".join(str(exc).split())
    if isinstance(exc, CampaignSyncError):
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
