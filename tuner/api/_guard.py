"""Who may talk to the API from a browser: origins, hosts, body types (issue 11).

A page on any web site can make the user's browser send a "simple" request to
``http://127.0.0.1:8000`` (a form post, or ``fetch`` with ``Content-Type: text/plain``); no
CORS preflight is made and the response need not be readable for the harm to be done. So,
before any route runs:

- a write (``POST``, ``PUT``, ``PATCH``, ``DELETE``) carrying an ``Origin`` header is refused
  (403) unless the origin is the server's own or one of ``TUNER_ALLOWED_ORIGINS``; the CLI,
  curl and scripts send no ``Origin`` and are not affected;
- a write whose body has no type, or a type a browser sends without a preflight (a form's,
  ``text/plain``), is refused (415); the routes accept ``application/json`` (jobs) or a zip
  (code) only;
- without ``TUNER_API_TOKEN`` (a loopback-only server), the ``Host`` header must name a
  loopback address or the address the server is bound to (403): a DNS-rebinding page
  (``evil.example`` resolving to 127.0.0.1) is refused even for reads;
- ``OPTIONS`` answers 204 with every method of the path in ``Allow``; a CORS preflight
  from an allowed origin gets the ``Access-Control-*`` answer, any other one 403.
"""

from __future__ import annotations

import ipaddress
import json
from urllib.parse import urlsplit

from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["RequestGuard"]

WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})
JSON = "application/json"
#: What a form or a "simple" fetch sends without a CORS preflight (the Fetch standard's
#: CORS-safelisted request-header values of Content-Type).
SIMPLE_TYPES = frozenset({"application/x-www-form-urlencoded", "multipart/form-data",
                          "text/plain"})


def _host_name(netloc: str) -> str:
    """``[::1]:8000`` -> ``::1``, ``Example.org:80`` -> ``example.org``."""
    host = netloc.strip().lower()
    if host.startswith("["):
        return host[1:].partition("]")[0]
    if host.count(":") == 1:
        host = host.partition(":")[0]
    return host


def is_loopback_name(host: str) -> bool:
    """``localhost``, 127.0.0.0/8 and ::1 (``host`` without its port)."""
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class RequestGuard:
    """ASGI middleware enforcing the rules of the module docstring.

    Args:
        app: The application it wraps.
        allowed_origins: Origins (``scheme://host[:port]``, lower case) whose pages may write.
        token_set: Whether the server has ``TUNER_API_TOKEN`` (then ``Host`` is not checked).
        bind_host: The address the server is bound to (also accepted as ``Host``).
    """

    def __init__(self, app: ASGIApp, *, allowed_origins: list[str], token_set: bool,
                 bind_host: str | None = None) -> None:
        self.app = app
        self.allowed_origins = frozenset(allowed_origins)
        self.token_set = token_set
        self.bind_host = _host_name(bind_host) if bind_host else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                   for k, v in scope.get("headers", [])}
        method = scope["method"].upper()
        host = headers.get("host", "")
        origin = headers.get("origin")
        allowed_origin = origin is not None and self._origin_ok(origin, host)

        if not self.token_set:
            name = _host_name(host)
            if not (is_loopback_name(name) or (self.bind_host and name == self.bind_host)):
                await _answer(send, 403, (
                    f"Host: got {host!r}; this server has no TUNER_API_TOKEN and answers to "
                    "loopback addresses only (localhost, 127.0.0.1, ::1); set "
                    "TUNER_API_TOKEN to serve other names"))
                return

        if method == "OPTIONS":
            await self._options(scope, send, headers, origin, allowed_origin)
            return

        if method in WRITES:
            if origin is not None and not allowed_origin:
                allowed = ", ".join(sorted(self.allowed_origins)) or "none"
                await _answer(send, 403, (
                    f"Origin: got {origin!r}; writes from a web page need its origin in "
                    f"TUNER_ALLOWED_ORIGINS (now: {allowed})"))
                return
            media = headers.get("content-type", "").partition(";")[0].strip().lower()
            has_body = headers.get("content-length", "0") not in ("", "0") or (
                "transfer-encoding" in headers)
            # The types a browser sends cross-site without asking first; each route checks
            # its own type (JSON for jobs, a zip for code) beyond these.
            # (POST /v1/code refuses every type but a zip's with its own message.)
            if (has_body and (not media or media in SIMPLE_TYPES)
                    and not scope["path"].startswith("/v1/code")):
                await _answer(send, 415, (
                    f"Content-Type: got {media or 'none'!r}; allowed: {JSON}"))
                return

        if origin is not None and allowed_origin:
            send = _with_cors(send, origin)
        await self.app(scope, receive, send)

    def _origin_ok(self, origin: str, host: str) -> bool:
        origin = origin.strip().lower().rstrip("/")
        if origin in self.allowed_origins:
            return True
        # The server's own pages (e.g. /docs): the origin names the Host it was sent to.
        parts = urlsplit(origin)
        return parts.scheme in ("http", "https") and parts.netloc == host.strip().lower()

    async def _options(self, scope: Scope, send: Send, headers: dict[str, str],
                       origin: str | None, allowed_origin: bool) -> None:
        methods = _methods_of(scope)
        if not methods:
            await _answer(send, 404, "Not Found")
            return
        allow = ", ".join(sorted(methods | {"OPTIONS"}))
        extra = [(b"allow", allow.encode())]
        if origin is not None and "access-control-request-method" in headers:
            if not allowed_origin:
                allowed = ", ".join(sorted(self.allowed_origins)) or "none"
                await _answer(send, 403, (
                    f"Origin: got {origin!r}; a web page needs its origin in "
                    f"TUNER_ALLOWED_ORIGINS (now: {allowed})"), extra)
                return
            extra += [
                (b"access-control-allow-origin", origin.encode("latin-1")),
                (b"access-control-allow-methods", allow.encode()),
                (b"access-control-allow-headers", b"Authorization, Content-Type"),
                (b"access-control-max-age", b"600"),
                (b"vary", b"Origin"),
            ]
        await send({"type": "http.response.start", "status": 204, "headers": extra})
        await send({"type": "http.response.body", "body": b""})


def _methods_of(scope: Scope) -> set[str]:
    """The methods the app serves on the path of ``scope`` (for ``Allow``): a method is
    listed when some route matches the path fully with it."""
    routes = getattr(scope.get("app"), "routes", [])
    return {method for method in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")
            if any(route.matches({**scope, "method": method})[0] == Match.FULL
                   for route in routes)}


def _with_cors(send: Send, origin: str) -> Send:
    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start":
            message = dict(message)
            message["headers"] = [*message.get("headers", []),
                                  (b"access-control-allow-origin", origin.encode("latin-1")),
                                  (b"vary", b"Origin")]
        await send(message)
    return wrapped


async def _answer(send: Send, status: int, detail: str,
                  headers: list[tuple[bytes, bytes]] | None = None) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
        *(headers or [])]})
    await send({"type": "http.response.body", "body": body})
