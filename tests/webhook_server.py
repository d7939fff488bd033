"""A real HTTP server for webhook tests, recording what was POSTed.

    with WebhookTestServer() as hook:          # mode "ok": 204 to every POST
        ... POST to hook.url ...
        hook.requests[0].json

    hook.mode = "500"    # answer 500 Internal Server Error
    hook.mode = "hang"   # read the request, never answer (until the server stops)
    hook.mode = "redirect"  # 302 to /elsewhere on the same server (recorded there if followed)
    hook.mode = "garbage"  # answer with a line that is not HTTP, then close

Listens on 127.0.0.1 on a free port; each request is handled in its own daemon thread.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MODES = ("ok", "500", "hang", "redirect", "garbage")


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)


class WebhookTestServer:
    def __init__(self, mode: str = "ok"):
        self.mode = mode
        self.requests: list[Request] = []
        self._release = threading.Event()  # lets hanging handlers finish at stop()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def mode(self) -> str:
        return self._mode

    @mode.setter
    def mode(self, value: str) -> None:
        if value not in MODES:
            raise ValueError(f"mode must be one of {MODES}")
        self._mode = value

    @property
    def url(self) -> str:
        assert self._httpd is not None, "server not started"
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/hooks/campaign-sync"

    def start(self) -> WebhookTestServer:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's hook name
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                owner.requests.append(
                    Request(
                        "POST", self.path, {k.lower(): v for k, v in self.headers.items()}, body
                    )
                )
                if owner.mode == "hang":
                    owner._release.wait()
                    return
                if owner.mode == "garbage":
                    self.wfile.write(b"NOT HTTP AT ALL\r\n\r\n")
                    self.close_connection = True
                    return
                if owner.mode == "redirect" and self.path != "/elsewhere":
                    self.send_response(302)
                    self.send_header("Location", "/elsewhere")
                else:
                    self.send_response(204 if owner.mode in ("ok", "redirect") else 500)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_GET(self) -> None:  # noqa: N802 - a followed redirect arrives as a GET
                owner.requests.append(
                    Request("GET", self.path, {k.lower(): v for k, v in self.headers.items()}, b"")
                )
                self.send_response(204)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep test output quiet

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._release.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=2)

    def __enter__(self) -> WebhookTestServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
