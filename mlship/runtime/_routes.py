"""The front's routing table and how a request path names a model (the routes of a multi-model server).

`RouteTable` is one immutable object: every backend by (name, version) and the default version of each name.
The front holds exactly one and replaces it whole (`Front.swap`), so a reload (start new backends, wait until
they are ready, swap, drain the old ones) never shows a request half of an old table and half of a new one.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._backends import Backend

MODELS = "/models"
V2_MODELS = "/v2/models/"


@dataclass(frozen=True)
class ModelPath:
    """A request for a model: its name, the version asked for (None: the default), and what the backend is
    asked: `upstream` (its own path), or nothing when the path is the model's entry in GET /models itself."""

    name: str
    version: str | None
    upstream: str | None
    v2: bool = False


def parse_model_path(path: str) -> ModelPath | None:
    """`/models/{name}[/versions/{version}]/REST` -> the backend's `/REST` (the page at `.../`);
    `/v2/models/{name}[/versions/{version}]/...` -> the same path (the backend speaks the protocol itself);
    `/models/{name}[/versions/{version}]` -> the model's entry; anything else -> None."""
    if path.startswith(V2_MODELS):
        parts = path[len(V2_MODELS):].split("/")
        version = parts[2] if len(parts) >= 3 and parts[1] == "versions" else None
        return ModelPath(parts[0], version, path, v2=True)
    if not path.startswith(MODELS + "/"):
        return None
    parts = path[len(MODELS) + 1:].split("/")
    name, rest = parts[0], parts[1:]
    version = None
    if rest[:1] == ["versions"] and len(rest) >= 2:
        version, rest = rest[1], rest[2:]
    elif rest == ["versions"]:
        rest = []
    if not rest:
        return ModelPath(name, version, None)
    return ModelPath(name, version, "/" + "/".join(rest))


def upstream_target(model_path: ModelPath, raw_path: bytes | None, query: bytes) -> bytes:
    """The request target sent to the backend: the V2 path as the client wrote it, else the backend's path."""
    assert model_path.upstream is not None
    if model_path.v2 and raw_path:
        target = raw_path
    else:
        target = urllib.parse.quote(model_path.upstream, safe="/:@!$&'()*+,;=-._~").encode()
    return target + b"?" + query if query else target


@dataclass(frozen=True)
class RouteTable:
    """Every backend by (name, version), and the version an unversioned request gets, by name."""

    backends: Mapping[tuple[str, str], Backend]
    defaults: Mapping[str, str]

    @property
    def names(self) -> list[str]:
        return list(dict.fromkeys(name for name, _ in self.backends))

    def versions(self, name: str) -> list[str]:
        return [version for model, version in self.backends if model == name]

    def lookup(self, name: str, version: str | None) -> Backend:
        """The backend serving `name` at `version` (None: the default); LookupError naming what exists."""
        found = self.backends.get((name, self.defaults.get(name, "") if version is None else version))
        if found is not None:  # every request: one dictionary look-up
            return found
        versions = self.versions(name)
        if not versions:
            raise LookupError(f"no model {name!r}; this server serves {_listing(self.names)}: "
                              "GET /models lists them with their versions and routes")
        wanted = self.defaults.get(name, versions[0]) if version is None else version
        backend = self.backends.get((name, wanted))
        if backend is None:
            raise LookupError(f"model {name!r} has no version {wanted!r}; it has {_listing(versions)}")
        return backend

    def default_of(self, name: str) -> str:
        return self.defaults.get(name) or self.versions(name)[0]

    def model_routes(self) -> list[str]:
        """What a 404 answer suggests: each model's routes."""
        routes = []
        for name in self.names:
            routes += [f"POST /models/{name}/predict", f"POST /models/{name}/invocations",
                       f"POST /v2/models/{name}/infer"]
            routes += [f"POST /models/{name}/versions/{version}/predict" for version in self.versions(name)]
        return routes


def _listing(items: list[str]) -> str:
    return ", ".join(repr(item) for item in items) or "nothing"


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def component_prefix(name: str, version: str) -> str:
    """A prefix for one model's OpenAPI component names and operation ids (the allowed characters only)."""
    return _UNSAFE.sub("_", f"{name}_{version}") + "_"
