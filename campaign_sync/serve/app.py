"""The WSGI application: routes, responses and errors of the HTTP service.

Every answer is built from the same functions as the status commands (ops.monitor,
ops.metrics), so the API and `list-jobs --json` cannot drift apart. Nothing here writes.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Callable, Iterable
from typing import Any

from ..config.model import Config
from ..ops import monitor
from . import page

StartResponse = Callable[..., Any]
Environ = dict[str, Any]


class Response:
    """A status, a content type and a body."""

    def __init__(self, status: int, body: bytes, content_type: str) -> None:
        self.status = status
        self.body = body
        self.content_type = content_type


REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found",
           405: "Method Not Allowed", 500: "Internal Server Error",
           503: "Service Unavailable"}  # fmt: skip


def json_response(document: Any, status: int = 200) -> Response:
    body = json.dumps(document, indent=2, ensure_ascii=False).encode("utf-8") + b"\n"
    return Response(status, body, "application/json")


class App:
    """The service for one loaded config."""

    def __init__(self, config: Config) -> None:
        self.config = config

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        response = self.respond(environ)
        start_response(
            f"{response.status} {REASONS[response.status]}",
            [
                ("Content-Type", f"{response.content_type}; charset=utf-8"),
                ("Content-Length", str(len(response.body))),
                ("Cache-Control", "no-store"),
            ],
        )
        return [response.body]

    def respond(self, environ: Environ) -> Response:
        path = environ.get("PATH_INFO", "")
        if environ.get("REQUEST_METHOD") not in ("GET", "HEAD"):
            return json_response({"error": "only GET is allowed"}, 405)
        if path == "/healthz":
            return json_response({"status": "ok"})
        if path == "/":
            now = datetime.datetime.now(datetime.timezone.utc)
            with monitor.opened_store(self.config) as store:
                text = page.status_page(self.config, store, now)
            return Response(200, text.encode("utf-8"), "text/html")
        return json_response({"error": "not found"}, 404)
