"""Network failures in our own words, for mail and webhook messages alike.

Libraries word their errors for programmers (`[Errno 111] Connection refused`, `[SSL:
CERTIFICATE_VERIFY_FAILED] … (_ssl.c:1006)`); an operator reading cron mail gets what
happened instead. socket and ssl are imported on use: only code that talks to a server
calls this.
"""

from __future__ import annotations


def describe(exc: BaseException, timeout: float) -> str:
    """What went wrong talking to a server, in a few words."""
    import socket
    import ssl

    if isinstance(exc, TimeoutError) or "timed out" in str(exc):
        return f"no answer within {timeout:g} s"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, ConnectionResetError):
        return "the server reset the connection"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve host ({exc.strerror or exc})"
    if isinstance(exc, UnicodeError) and "idna" in str(exc):
        return "the host name is not valid"  # IDNA refused it before any lookup
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS certificate not trusted: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError):
        reason = (exc.reason or "handshake").replace("_", " ").lower()
        return f"TLS failed ({reason})"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__
