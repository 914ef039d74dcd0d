"""What a protocol is: its endpoints, each carrying its own OpenAPI operation, and the schemas they reference.

A protocol module (`_api`, `_mlflow`, `_v2`) exposes one `PROTOCOL`; `_app.PROTOCOLS` lists them, and the app's
routes and its /openapi.json are both built from that list, so an endpoint cannot be served undocumented or
documented unserved (tests/unit/runtime/test_openapi.py walks the routes against the document).

Endpoints come in two scopes, because one service will serve several models: the service's own (probes,
metrics, server metadata), built once, and a model's (predict, its metadata, its inference routes), built per
loaded model (today there is one; see _state.AppState).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

if TYPE_CHECKING:
    from ._model import ModelHandle
    from ._state import AppState

Handler = Callable[[Request], Awaitable[Response]]
# A plain-ASGI handler of a hot POST route, called by the Observe layer directly (see _api.fast_method).
FastHandler = Callable[[Scope, Receive, Send, str], Awaitable[None]]


@dataclass(frozen=True)
class Endpoint:
    """One HTTP method on one path, and its OpenAPI operation object (summary, operationId, request, responses).

    `aliases` are further paths served by the same handler and left out of the document (the Open Inference
    Protocol's `/v2/` beside `/v2`). `fast`, when given, serves POST requests without Starlette (the hot path).
    `access` says which bearer token it requires when authentication is on (see _auth): "api" (the default),
    "metrics", "probe" (none ever: kubelet probes carry no token) or "public" (none: the static files of the
    page, which hold nothing about the model; see _ui).
    """

    path: str
    method: str
    handler: Handler
    operation: dict[str, Any]
    aliases: tuple[str, ...] = ()
    fast: FastHandler | None = field(default=None, compare=False)
    access: str = "api"

    def routes(self) -> list[Route]:
        return [Route(path, self.handler, methods=[self.method]) for path in (self.path, *self.aliases)]


@dataclass(frozen=True)
class Protocol:
    """A protocol the runtime speaks.

    - `service_endpoints(state)`: the endpoints that belong to the service whatever models it serves
    - `model_endpoints(state, model)`: the endpoints of one served model
    - `schemas(model)`: the OpenAPI component schemas its operations reference, for that model
    - `entry_points(model)`: what a 404 answer suggests ("POST /invocations")
    - `blurb(model)`: its clause in the document's description and the serve command's help
    """

    name: str
    service_endpoints: Callable[[AppState], list[Endpoint]]
    model_endpoints: Callable[[AppState, ModelHandle], list[Endpoint]]
    schemas: Callable[[ModelHandle], dict[str, Any]]
    entry_points: Callable[[ModelHandle], list[str]]
    blurb: str

    def endpoints(self, state: AppState) -> list[Endpoint]:
        return [*self.model_endpoints(state, state.model), *self.service_endpoints(state)]
