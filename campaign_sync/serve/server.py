"""Running the application on waitress, the `serve` extra's server."""

from __future__ import annotations

from ..config.model import Config
from ..errors import UsageError
from .app import App


def parse_bind(bind: str) -> tuple[str, int]:
    """`HOST:PORT` (`[::1]:8080` for IPv6) as a host and a port."""
    host, colon, port = bind.rpartition(":")
    host = host.strip("[]")
    if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"--bind '{bind}' is not HOST:PORT (e.g. 127.0.0.1:8080)")
    return host, int(port)


def serve(config: Config, bind: str) -> None:
    """Serve until interrupted."""
    host, port = parse_bind(bind)
    try:
        import waitress
    except ImportError:
        raise UsageError(
            "serve needs the waitress package: pip install 'campaign-sync[serve]'"
        ) from None
    waitress.serve(App(config), host=host, port=port, ident="campaign-sync")
