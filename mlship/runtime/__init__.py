"""mlship's serving runtime: copied into every bundle as ``mlship_runtime/``.

Everything here imports only the standard library, starlette and uvicorn at module level (numpy and pandas
lazily, when the input schema needs them), and uses relative imports, so the folder works under any package
name once copied. Modules, one job each:

- ``_bundle``   load_bundle(path) -> LoadedBundle: checks the manifest, digests, Python and runtime versions
- ``_schema``   decode_request(body, schema) -> the value the served function receives, or InputError
- ``_codec``    to_jsonable / encode_json / outputs_match (dependency-free: also runs inside a Jupyter kernel)
- ``_verify``   replay golden.json in-process (verify_bundle) or over HTTP (verify_url)
- ``_app``      create_app(bundle_dir) -> Starlette
- ``_settings`` request limits read from the environment
- ``__main__``  ``python -m mlship_runtime serve|verify BUNDLE``
"""

from __future__ import annotations

# Recorded by the packager as the manifest's `runtime_version`; load_bundle refuses a bundle whose manifest
# names another one. Bump it whenever the runtime's reading of the bundle format changes.
RUNTIME_VERSION = "1"
