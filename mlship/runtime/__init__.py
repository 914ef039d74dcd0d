"""mlship's serving runtime: copied into every bundle as ``mlship_runtime/``.

Everything here imports at module level only the standard library and the runtime's own pinned dependencies
(starlette, uvicorn, orjson, prometheus-client; numpy and pandas lazily, when the input schema needs them), and
uses relative imports, so the folder works under any package name once copied. docs/RUNTIME.md describes the
server from the outside. Modules, one job each:

- ``_contract`` the bundle format as frozen dataclasses: Manifest, InputSchema, Golden, CaseResult; read(), write()
- ``_bundle``   load_bundle(path) -> LoadedBundle: the contract's checks, Python and runtime versions, predictor.py
- ``_schema``   check_request(body, InputSchema) -> Checked, .build() -> the value the served function receives
- ``_build``    checked values -> DataFrame/array/...; merge_data and split_rows for batching
- ``_codec``    to_jsonable / encode_json / outputs_match (dependency-free: also runs inside a Jupyter kernel)
- ``_verify``   replay golden.json in-process (verify_bundle) or over HTTP (verify_url)
- ``_server``   serve(): load once, fork N workers under a supervisor, SIGTERM draining
- ``_app``      create_app(bundle_dir) -> Starlette, built from PROTOCOLS, the one list of protocols
- ``_state``    AppState: the service (settings, metrics, access log, draining) and the model it serves
- ``_model``    ModelHandle: one served model (manifest, schema, golden cases, runner, limits, readiness)
- ``_protocol`` Endpoint and Protocol: a protocol's routes, each with its OpenAPI operation
- ``_api``      mlship's own protocol: POST /<method>, /livez, /readyz, /metadata, /metrics
- ``_mlflow``   MLflow's scoring protocol: /invocations (JSON and CSV), /ping, /health, /version
- ``_mlflow_input`` MLflow's bodies (frames, records, tensors, CSV) read for every input kind, as MLflow reads them
- ``_v2``, ``_v2_handlers``, ``_tensors``  the Open Inference Protocol (KServe V2), binary tensor data extension
- ``_openapi``  GET /openapi.json, assembled from the protocols' operations and schemas
- ``_ui``       GET / (the model's page, static/) and GET /docs (Swagger UI, static/swagger-ui/); MLSHIP_UI=0
- ``_auth``     opt-in bearer tokens (API, /metrics; probes open), by each endpoint's declared access
- ``_example``  the published example row: synthetic from the schema unless MLSHIP_PUBLISH_EXAMPLE=1
- ``_inference`` Runner: adaptive micro-batching, deadlines and timeouts, failures kept to their request
- ``_observe``  request IDs, access log, request metrics, in-flight limit, draining (outermost ASGI layer)
- ``_metrics``  Prometheus metrics, multiprocess-correct; ``_logs`` JSON logs; ``_http`` HTTP plumbing
- ``_settings`` limits and behaviour read from the environment
- ``_batch``    predict_file(bundle, input, output): batch predictions over a file, chunk by chunk, in order
- ``_batch_input``, ``_batch_output``  CSV/JSONL/parquet in request-shaped chunks; predictions and rejects out
- ``_progress`` the plain-text progress line of batch jobs
- ``_service``  the service file (several bundles behind one server): Service, read_service, write_service
- ``__main__``  ``python -m mlship_runtime serve|verify|predict BUNDLE``
"""

# No imports at all, not even __future__: under `python -m mlship_runtime` this file runs while the bundle folder is
# still first on sys.path, before __main__ can check anything (a stray __future__.py there would run).

# Recorded by the packager as the manifest's `runtime_version`; load_bundle refuses a bundle whose manifest
# names another one. Bump it whenever the runtime's reading of the bundle format changes.
RUNTIME_VERSION = "1"
