"""Fixtures: sample bundles built into tmp dirs, and in-process servers for them."""

from __future__ import annotations

import shutil
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

from .sample_bundles import build_bundle


@pytest.fixture(scope="session")
def sample_bundle(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """A built sample bundle, shared by the session: read it, never change it (use make_bundle for that)."""
    built: dict[str, Path] = {}

    def get(sample: str) -> Path:
        if sample not in built:
            built[sample] = build_bundle(sample, tmp_path_factory.mktemp(sample) / "bundle")
        return built[sample]

    return get


@pytest.fixture
def make_bundle(sample_bundle: Callable[[str], Path], tmp_path: Path) -> Callable[[str], Path]:
    """A private copy of a sample bundle in tmp_path, free to tamper with."""

    def make(sample: str) -> Path:
        return Path(shutil.copytree(sample_bundle(sample), tmp_path / sample))

    return make


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
