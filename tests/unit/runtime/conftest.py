"""Fixtures: in-process servers for the sample bundles (sample_bundle and make_bundle are in tests/conftest.py)."""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.exceptions import StarletteDeprecationWarning

with warnings.catch_warnings():
    # Starlette's TestClient now prefers httpx2 and warns when it finds only httpx, the client pyproject's
    # `test` extra lists; with warnings as errors that would stop collection. Harmless once httpx2 is
    # installed.
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from starlette.testclient import TestClient

from mlship.runtime._app import create_app


@pytest.fixture
def serve(sample_bundle: Callable[[str], Path]) -> Iterator[Callable[..., TestClient]]:
    """Start a bundle's app in-process (lifespan included) and return its TestClient, closed at teardown."""
    clients: list[TestClient] = []

    def start(bundle: str | Path, **client_options: Any) -> TestClient:
        path = sample_bundle(bundle) if isinstance(bundle, str) else bundle
        client = TestClient(create_app(path), **client_options)
        client.__enter__()
        clients.append(client)
        return client

    yield start
    for client in reversed(clients):
        client.__exit__(None, None, None)
    sys.modules.pop("mlship_predictor", None)
