"""What the front says about its models: GET /models, POST /v2/repository/index, the merged /openapi.json and
/metrics, and the page at GET /.

Everything is built from the routing table and what each backend said about itself once it was ready (its own
/metadata and /openapi.json, see _backends), so the front never imports a bundle's code: a model's schema and
example are those its own server publishes.
"""

from __future__ import annotations

import copy
import html
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from ._routes import RouteTable, component_prefix

if TYPE_CHECKING:
    from ._backends import Backend

REF = "#/components/schemas/"


def version_entry(table: RouteTable, backend: Backend) -> dict[str, Any]:
    """One model version in GET /models: state, methods, input schema and its routes."""
    meta = backend.metadata or backend.described
    base = f"/models/{backend.name}/versions/{backend.version}"
    methods = meta.get("methods") or []
    return {
        "version": backend.version,
        "default": table.default_of(backend.name) == backend.version,
        "state": backend.state,
        "reason": backend.reason or "",
        "methods": methods,
        "input": meta.get("input"),
        "batch_safe": meta.get("batch_safe"),
        "routes": {
            **{method: f"POST {base}/{method}" for method in methods},
            "invocations": f"POST {base}/invocations",
            "v2": f"POST /v2/models/{backend.name}/versions/{backend.version}/infer",
            "metadata": f"GET {base}/metadata",
            "page": f"GET {base}/",
        },
    }


def model_entry(table: RouteTable, name: str) -> dict[str, Any]:
    return {
        "name": name,
        "default": table.default_of(name),
        "versions": [version_entry(table, table.backends[(name, version)]) for version in table.versions(name)],
    }


def models_listing(table: RouteTable, service: str) -> dict[str, Any]:
    return {"service": service, "models": [model_entry(table, name) for name in table.names]}


def repository_index(table: RouteTable, ready_only: bool = False) -> list[dict[str, str]]:
    """The Open Inference Protocol's model-repository extension: every model version, its state and why."""
    return [
        {"name": backend.name, "version": backend.version, "state": backend.state, "reason": backend.reason or ""}
        for backend in table.backends.values()
        if backend.ready or not ready_only
    ]


def unready(table: RouteTable) -> list[Backend]:
    return [backend for backend in table.backends.values() if not backend.ready]


# -- /openapi.json ----------------------------------------------------------------------------------------------


def merged_openapi(table: RouteTable, service: str, own: dict[str, Any]) -> dict[str, Any]:
    """The front's document: its own operations (`own`: path -> operations), then every model version's
    operations from its backend's document, under /models/{name}/versions/{version}/... (and /models/{name}/...
    for the default version), with that model's real schemas, renamed per model."""
    paths: dict[str, Any] = dict(own)
    schemas: dict[str, Any] = {}
    security: dict[str, Any] = {}
    for backend in table.backends.values():
        document = backend.openapi
        if not document:
            continue
        prefix = component_prefix(backend.name, backend.version)
        security.update(document.get("components", {}).get("securitySchemes", {}))
        for schema_name, schema in document.get("components", {}).get("schemas", {}).items():
            if schema_name != "Error":  # the same for every model: kept once, unprefixed
                schemas[prefix + schema_name] = _renamed(schema, prefix)
        is_default = table.default_of(backend.name) == backend.version
        for path, operations in document.get("paths", {}).items():
            if not _is_model_path(path, operations):
                continue
            for new_path, tag in _model_paths(backend, path, is_default):
                paths[new_path] = {
                    method: _model_operation(operation, prefix, tag, backend)
                    for method, operation in operations.items()
                }
    components: dict[str, Any] = {"schemas": {**schemas, "Error": _ERROR}}
    if security:
        components["securitySchemes"] = security
    listing = ", ".join(f"{name} ({', '.join(table.versions(name))})" for name in table.names)
    return {
        "openapi": "3.0.3",
        "info": {"title": service, "version": "1",
                 "description": f"The service {service} served by the mlship runtime: {listing}. Each model answers "
                 "under /models/{name}/versions/{version}/ and /v2/models/{name}/versions/{version}/, and its "
                 "default version also without /versions/{version}."},
        "paths": paths,
        "components": components,
    }


_ERROR = {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}}


def _is_model_path(path: str, operations: dict[str, Any]) -> bool:
    """The model's own endpoints (methods, /invocations, /metadata, V2 model routes), not the service's."""
    return path.startswith("/v2/models/") or path == "/metadata" or "post" in operations


def _model_paths(backend: Backend, path: str, is_default: bool) -> list[tuple[str, str]]:
    name, version = backend.name, backend.version
    if path.startswith("/v2/models/{name}"):
        rest = path[len("/v2/models/{name}"):]
        if rest.startswith("/versions/{version}"):
            return [(f"/v2/models/{name}/versions/{version}" + rest[len("/versions/{version}"):], "")]
        return [(f"/v2/models/{name}{rest}", "")] if is_default else []
    found = [(f"/models/{name}/versions/{version}{path}", "")]
    if is_default:
        found.append((f"/models/{name}{path}", "default_"))
    return found


def _model_operation(operation: dict[str, Any], prefix: str, tag: str, backend: Backend) -> dict[str, Any]:
    result: dict[str, Any] = _renamed(operation, prefix)
    result["operationId"] = prefix + tag + str(operation.get("operationId", "operation"))
    # The model's name and version are part of the path now: no path parameters are left.
    parameters = [p for p in result.get("parameters", []) if p.get("in") != "path"]
    if parameters:
        result["parameters"] = parameters
    else:
        result.pop("parameters", None)
    result["tags"] = [f"{backend.name} {backend.version}"]
    return result


def _renamed(value: Any, prefix: str) -> Any:
    """A deep copy of `value` with every component reference pointing at the prefixed name."""
    if isinstance(value, dict):
        return {key: (REF + prefix + item[len(REF):] if key == "$ref" and isinstance(item, str)
                      and item.startswith(REF) and item != REF + "Error" else _renamed(item, prefix))
                for key, item in value.items()}
    if isinstance(value, list):
        return [_renamed(item, prefix) for item in value]
    return copy.copy(value)


# -- /metrics ---------------------------------------------------------------------------------------------------


def merged_metrics(scraped: Iterable[tuple[Backend, str]], own: Iterable[Metric]) -> bytes:
    """The backends' Prometheus texts as one: each sample labelled with its model and version, one HELP and
    TYPE per family, then the front's own families."""
    families: dict[str, Metric] = {}
    for backend, text in scraped:
        for family in text_string_to_metric_families(text):
            merged = families.get(family.name)
            if merged is None:
                merged = families[family.name] = Metric(family.name, family.documentation, family.type,
                                                        family.unit)
            for sample in family.samples:
                labels = {"model": backend.name, "version": backend.version, **sample.labels}
                merged.samples.append(Sample(sample.name, labels, sample.value, sample.timestamp,
                                             sample.exemplar))
    for family in own:
        families[family.name] = family
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(list(families.values())))
    return bytes(generate_latest(registry))


class _Families:
    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> list[Metric]:
        return self.families


# -- the page ---------------------------------------------------------------------------------------------------


def page(table: RouteTable, service: str, ui: bool) -> bytes:
    """GET /: the models, their versions and states, with links to each model's own page (when the page is on)
    and its metadata. Plain HTML, no script or style (the security policy forbids inline ones)."""
    rows = []
    for backend in table.backends.values():
        base = f"/models/{backend.name}/versions/{backend.version}"
        default = " (default)" if table.default_of(backend.name) == backend.version else ""
        links = [f'<a href="{html.escape(base)}/metadata">metadata</a>']
        if ui:
            links.insert(0, f'<a href="{html.escape(base)}/">page</a>')
        state = backend.state + (f": {backend.reason}" if backend.reason else "")
        rows.append(f"<tr><td>{html.escape(backend.name)}</td><td>{html.escape(backend.version + default)}</td>"
                    f"<td>{html.escape(state)}</td><td>{' '.join(links)}</td></tr>")
    body = (
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{html.escape(service)}</title></head><body><h1>{html.escape(service)}</h1>"
        "<table><thead><tr><th>model</th><th>version</th><th>state</th><th></th></tr></thead><tbody>"
        + "".join(rows)
        + "</tbody></table><p><a href=\"/models\">GET /models</a> · <a href=\"/openapi.json\">/openapi.json</a>"
        " · <a href=\"/readyz\">/readyz</a></p></body></html>"
    )
    return body.encode()
