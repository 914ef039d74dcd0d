"""Every example bundle fuzzed from its own OpenAPI document: schemathesis' examples, coverage and fuzzing phases,
50 requests per operation, on the routes the bundle's schema and methods shape (tests/support/fuzz.py; the
routes every bundle shares, and the stateful phase, are fuzzed once in tests/unit/runtime/test_openapi.py).

Never a 5xx: a value the example's model refuses (scikit-learn's checks, an unseen category, a float beyond what
the model computes with) is the client's 4xx with the library's message.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from mlship.runtime._app import check_ready, create_app
from mlship.runtime._bundle import PREDICTOR_MODULE, load_bundle
from mlship.runtime._settings import Settings
from tests.conftest import EXAMPLE_NAMES
from tests.support.fuzz import MAX_EXAMPLES, fuzz_app


# numpy warns (RuntimeWarning: overflow) when a model computes on values near float64's limits, which the fuzzing
# sends on purpose; pytest's "error" filter would make those warnings exceptions that no served model raises.
@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("name", EXAMPLE_NAMES)
def test_fuzz_the_model_routes_of_every_example(example_bundles: dict[str, Path], name: str) -> None:
    path = example_bundles[name]  # packaged once per run, shared with the other example tests
    app = create_app(path, bundle=load_bundle(path), settings=Settings(access_log=False))
    try:
        check_ready(app.state.mlship)
        run = fuzz_app(app, operations="model")
    finally:
        sys.modules.pop(PREDICTOR_MODULE, None)
    assert not run.failures and not run.errors, run.report()
    assert run.phases["examples"] == run.phases["coverage"] == run.phases["fuzzing"] == "success", run.report()
    for label in ("POST /predict", "POST /invocations", "POST /v2/models/{name}/infer"):
        assert run.fuzzed(label) >= MAX_EXAMPLES, run.report()
