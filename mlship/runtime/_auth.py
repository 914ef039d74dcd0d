"""Opt-in bearer-token authentication: one token for the API, another (or none) for /metrics; probes stay open.

Each endpoint declares its `access` (see _protocol.Endpoint): "api" requires Settings.api_token, "metrics"
requires Settings.metrics_token, "probe" (/livez, /readyz, /ping, /health, /v2/health/*) requires nothing, ever:
kubelet probes carry no token, and liveness and readiness say nothing about the model. Neither do the page's
static files ("public": /, /ui/*, /docs, /docs/*; see _ui), which a browser fetches without a token. A path no endpoint
serves counts as "api", so that an unauthenticated client learns nothing from the 404 either. An empty token
turns its check off (the default: docs/RUNTIME.md, "Authentication").

The check sits inside the Observe layer (a 401 has a request ID, an access line and a metric) and in front of
both the Starlette routes and the plain-ASGI fast path. Tokens are compared as SHA-256 digests with
hmac.compare_digest: constant time, and their length does not leak either.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping

from starlette.types import ASGIApp, Receive, Scope, Send

from ._http import encode_json, header
from ._protocol import Endpoint, FastHandler
from ._settings import Settings

REALM = "mlship"
_ENV = {"api": "MLSHIP_API_TOKEN_FILE or MLSHIP_API_TOKEN", "metrics": "MLSHIP_METRICS_TOKEN_FILE or MLSHIP_METRICS_TOKEN"}


def required_tokens(settings: Settings) -> dict[str, str]:
    """{access: token} for the kinds of access that require one."""
    tokens = {"api": settings.api_token, "metrics": settings.metrics_token}
    return {access: token for access, token in tokens.items() if token}


class Auth:
    """The token check of every request: `app` wraps the Starlette app, `guard` a fast-path handler."""

    def __init__(self, settings: Settings, endpoints: Iterable[Endpoint]) -> None:
        self.digests = {access: _digest(token.encode()) for access, token in required_tokens(settings).items()}
        self.access: Mapping[str, str] = {
            path: endpoint.access
            for endpoint in endpoints
            if endpoint.access != "api"
            for path in (endpoint.path, *endpoint.aliases)
        }

    @property
    def enabled(self) -> bool:
        return bool(self.digests)

    def refusal(self, scope: Scope) -> tuple[bytes, bytes] | None:
        """None when the request may go on, else the (WWW-Authenticate, body) of its 401."""
        access = self.access.get(scope["path"], "api")
        digest = self.digests.get(access)
        if digest is None:
            return None
        value = header(scope, b"authorization")
        if value is None:
            return (f'Bearer realm="{REALM}"'.encode(),
                    _error(f"this endpoint requires a bearer token (Authorization: Bearer ...; the server's is "
                           f"set by {_ENV[access]})"))
        scheme, _, token = value.strip().partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(_digest(token.strip().encode("latin-1")), digest):
            return None
        return (f'Bearer realm="{REALM}", error="invalid_token"'.encode(),
                _error("the bearer token is not valid for this endpoint"))

    def app(self, inner: ASGIApp) -> ASGIApp:
        if not self.enabled:
            return inner

        async def checked(scope: Scope, receive: Receive, send: Send) -> None:
            refusal = self.refusal(scope) if scope["type"] == "http" else None
            if refusal is None:
                await inner(scope, receive, send)
            else:
                await _send_401(send, *refusal)

        return checked

    def guard(self, handler: FastHandler) -> FastHandler:
        if not self.enabled:
            return handler

        async def checked(scope: Scope, receive: Receive, send: Send, rid: str) -> None:
            refusal = self.refusal(scope)
            if refusal is None:
                await handler(scope, receive, send, rid)
            else:
                await _send_401(send, *refusal)

        return checked


def _digest(token: bytes) -> bytes:
    return hashlib.sha256(token).digest()


def _error(message: str) -> bytes:
    return encode_json({"error": message})


async def _send_401(send: Send, challenge: bytes, body: bytes) -> None:
    await send({"type": "http.response.start", "status": 401, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
        (b"www-authenticate", challenge)]})
    await send({"type": "http.response.body", "body": body})
