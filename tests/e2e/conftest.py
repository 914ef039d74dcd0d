"""Fixtures the runtime's end-to-end modules share."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit.runtime.sample_bundles import build_bundle


@pytest.fixture(scope="module")
def slow(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The `slow` sample: predict sleeps x seconds (in a Python loop) and answers 2x; pandas only, starts fast.
    Module-scoped, as before: each module that uses it gets its own copy."""
    return build_bundle("slow", tmp_path_factory.mktemp("slow") / "bundle")
