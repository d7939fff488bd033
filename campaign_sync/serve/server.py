"""Running the application on waitress, the `serve` extra's server.

Why waitress (docs/decisions.md): the store's drivers block, so a threaded WSGI server
fits; waitress reads and buffers each request whole in its event loop before a worker
thread sees it, so a slow or broken client holds a socket, never a worker; idle connections
are closed after CHANNEL_TIMEOUT seconds; it is pure Python with no dependencies.
"""

from __future__ import annotations

import logging
from typing import Any

from ..config.model import Config
from ..config.validate_servers import is_loopback
from ..errors import UsageError
from .app import App

log = logging.getLogger("campaign_sync.serve")

THREADS = 8  # requests answered at once; more wait in the queue, their sockets read
CHANNEL_TIMEOUT = 30  # seconds a connection may stay silent (half a request included)
CONNECTION_LIMIT = 1000  # open connections; past it new ones wait in the kernel's backlog
MAX_HEADER_BYTES = 16 * 1024  # a GET needs a few hundred bytes: more is refused (431)
MAX_BODY_BYTES = 1024  # the API takes no bodies


def parse_bind(bind: str) -> tuple[str, int]:
    """`HOST:PORT` (`[::1]:8080` for IPv6) as a host and a port."""
    host, colon, port = bind.rpartition(":")
    bracketed = host.startswith("[") and host.endswith("]")
    host = host[1:-1] if bracketed else host
    if (
        not colon
        or not host
        or (":" in host and not bracketed)
        or not (port.isascii() and port.isdigit())
        or not 0 < int(port) < 65536
    ):
        raise UsageError(
            f"--bind '{bind}' is not HOST:PORT; give e.g. 127.0.0.1:8080 or [::1]:8080"
        )
    return host, int(port)


def check_bind(config: Config, host: str, bind: str) -> None:
    """Without a token the service answers anyone who reaches it: loopback only."""
    if config.serve.token is None and not is_loopback(host):
        raise UsageError(
            f"--bind {bind} is not a loopback address and serve.token is not set: set "
            "serve.token (clients then send it as a bearer token) or bind to 127.0.0.1"
        )


def waitress_module() -> Any:
    try:
        import waitress
    except ImportError:
        raise UsageError(
            "serve needs the waitress package, which is not installed; install it with: "
            "pip install 'campaign-sync[serve]'"
        ) from None
    return waitress


def serve(config: Config, bind: str) -> None:
    """Serve until interrupted (SIGINT or SIGTERM)."""
    host, port = parse_bind(bind)
    check_bind(config, host, bind)
    waitress = waitress_module()
    try:
        server = waitress.create_server(
            App(config), host=host, port=port, ident="campaign-sync", threads=THREADS,
            channel_timeout=CHANNEL_TIMEOUT, cleanup_interval=5,
            connection_limit=CONNECTION_LIMIT, asyncore_use_poll=True,
            max_request_header_size=MAX_HEADER_BYTES, max_request_body_size=MAX_BODY_BYTES,
            expose_tracebacks=False, clear_untrusted_proxy_headers=True,
        )  # fmt: skip
    except OSError as exc:
        raise UsageError(f"cannot listen on {bind}: {exc.strerror}") from None
    log.info("serving on http://%s (read-only; Ctrl-C stops it)", bind)
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
