"""The pages for people: GET / (what the model is, how to call it, a try-it form) and GET /docs (Swagger UI).

Static files only: `static/` beside this module holds the page, its script and style, and in `static/swagger-ui/`
Swagger UI's own script and style, gzipped, from the swagger-ui-dist release that SOURCE.json there names
(scripts/vendor-swagger-ui refreshes them): they travel with the runtime into every bundle, image and install,
and need no package (the swagger-ui-bundle package they replace was Swagger UI 4.15.5 and brought Jinja2 into
every image). The page reads the
existing JSON API (/metadata, /readyz, /v2/models/{name}) from the browser, so nothing is rendered on the
server and nothing is fetched from another host: it works air-gapped, under a read-only root (the files are
read once, when the app is built), and behind a path prefix (every URL in the files is relative).

Every file is answered with a Content-Security-Policy that allows scripts, styles, images and requests from
this server only (no inline script, no eval), `nosniff`, no referrer, and an ETag. The files are `public`
(see _auth): they hold nothing about the model, and a browser cannot send a bearer token when it navigates,
so with authentication on the page asks for the token and sends it on its own JSON requests (the token stays
in the tab's sessionStorage). MLSHIP_UI=0 serves none of it.
"""

from __future__ import annotations

import gzip
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import Response

from ._protocol import Endpoint, Handler, Protocol

if TYPE_CHECKING:
    from ._model import ModelHandle
    from ._state import AppState

STATIC_DIR = Path(__file__).resolve().parent / "static"
SWAGGER_DIR = STATIC_DIR / "swagger-ui"
# The one place the page's security policy is written: everything from this server, nothing inline.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; font-src 'self'; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_MEDIA_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css"}
DOCS = "/docs"
# (path, file under static/, summary): every file the pages are made of.
FILES: tuple[tuple[str, str, str], ...] = (
    ("/", "index.html", "this model's page: schema, golden cases, snippets, a try-it form"),
    ("/ui/page.js", "page.js", "the page's script"),
    ("/ui/page.css", "page.css", "the page's style"),
    (DOCS, "docs.html", "interactive API docs of /openapi.json (Swagger UI, served from here)"),
    (f"{DOCS}/docs.js", "docs.js", "the docs page's script"),
    (f"{DOCS}/swagger-ui-bundle.js", "swagger-ui/swagger-ui-bundle.js.gz", "Swagger UI's script"),
    (f"{DOCS}/swagger-ui.css", "swagger-ui/swagger-ui.css.gz", "Swagger UI's style"),
)


@dataclass(frozen=True)
class StaticFile:
    """One file served as is: its bytes, their gzip form (sent when the client accepts it), type and ETag."""

    content: bytes
    media_type: str
    gzipped: bytes = field(default=b"", repr=False)  # computed when not given
    etag: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "etag", '"' + hashlib.sha256(self.content).hexdigest()[:32] + '"')
        if not self.gzipped:
            # mtime=0: the same bytes on every start (and every worker), as the ETag promises.
            object.__setattr__(self, "gzipped", gzip.compress(self.content, compresslevel=6, mtime=0))

    @classmethod
    def read(cls, path: Path) -> StaticFile:
        """The file at `path`; a `.gz` file is stored compressed (sent as is) and served as what it holds."""
        data = path.read_bytes()
        if path.suffix == ".gz":
            return cls(gzip.decompress(data), _media_type(path.with_suffix("")), data)
        return cls(data, _media_type(path))

    def response(self, request: Request) -> Response:
        headers = {
            "content-security-policy": CONTENT_SECURITY_POLICY,
            "x-content-type-options": "nosniff",
            "referrer-policy": "no-referrer",
            "cache-control": "no-cache",  # revalidated each time: a new bundle's page must not be stale
            "etag": self.etag,
            "vary": "accept-encoding",
        }
        if self.etag in request.headers.get("if-none-match", ""):
            return Response(status_code=304, headers=headers)
        if "gzip" in request.headers.get("accept-encoding", ""):
            headers["content-encoding"] = "gzip"
            return Response(self.gzipped, headers=headers, media_type=self.media_type)
        return Response(self.content, headers=headers, media_type=self.media_type)


def service_endpoints(state: AppState) -> list[Endpoint]:
    if not state.settings.ui:
        return []
    return [Endpoint(path, "GET", _file_endpoint(StaticFile.read(STATIC_DIR / name)), _operation(path, summary, name),
                     access="public") for path, name, summary in FILES]


def _media_type(path: Path) -> str:
    return _MEDIA_TYPES[path.suffix] + "; charset=utf-8"


def _file_endpoint(static: StaticFile) -> Handler:
    async def endpoint(request: Request) -> Response:
        return static.response(request)

    return endpoint


def _operation(path: str, summary: str, name: str) -> dict[str, object]:
    media_type = _MEDIA_TYPES[Path(name.removesuffix(".gz")).suffix]
    op_id = "ui_" + ("index" if path == "/" else path.strip("/").replace("/", "_").replace(".", "_").replace("-", "_"))
    return {"operationId": op_id, "summary": summary, "tags": ["page"],
            "responses": {"200": {"description": "OK", "content": {media_type: {"schema": {"type": "string"}}}},
                          "304": {"description": "not modified (If-None-Match)"}}}


def _no_model_endpoints(state: AppState, model: ModelHandle) -> list[Endpoint]:
    return []


PROTOCOL = Protocol(
    name="ui",
    service_endpoints=service_endpoints,
    model_endpoints=_no_model_endpoints,
    schemas=lambda model: {},
    entry_points=lambda model: [],
    blurb="GET / is a page for people (the model, its golden cases, snippets, a try-it form) and GET /docs the "
    "interactive API docs, both static and offline (MLSHIP_UI=0 turns them off)",
)
