"""mlship removes its own build-stage images (labelled dev.mlship.stage=build) and nothing else; a fake docker
client stands in for the engine."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import docker
import pytest

from mlship.errors import BuildError
from mlship.targets._docker_build import _Plan
from mlship.targets._docker_engine import (
    STAGE_LABEL,
    BuildLog,
    _record,
    build_image,
    remove_stage_images,
    superseded_stages,
)
from mlship.targets.docker import DockerOptions
from mlship.targets.wheelhouse import parse_platform

STAGE = {STAGE_LABEL: "build", "dev.mlship.name": "iris"}

# What the legacy builder streams for the two-stage Dockerfile (ids shortened as the builder prints them).
STREAM = """\
Step 1/6 : FROM base:test AS build
 ---> 000000000001
Step 2/6 : COPY wheels/ /tmp/wheels/
 ---> Using cache
 ---> 00000000000a
Step 3/6 : RUN python3.11 -m venv /opt/venv && pip install ...
 ---> Running in 99999999999c
Removing intermediate container 99999999999c
 ---> 00000000000b
Step 4/6 : LABEL dev.mlship.stage="build" dev.mlship.name="iris"
 ---> Running in 99999999999d
 ---> 00000000000c
Step 5/6 : FROM base:test
 ---> 000000000001
Step 6/6 : COPY --from=build /opt/venv/ /opt/venv/
 ---> 0000000000f1
Successfully built 0000000000f1
"""


def parse(stream: str) -> BuildLog:
    log = BuildLog()
    for line in stream.splitlines():
        _record(log, line, lambda message: None)
    return log


class FakeClient:
    """Images by id with their labels and parent; remove_image prunes untagged parents as the engine does."""

    def __init__(self, store: dict[str, tuple[dict[str, str], str | None]]) -> None:
        self.store = dict(store)
        self.removed: list[str] = []
        self.chunks: list[dict[str, Any]] = []
        self.api = self

    def inspect_image(self, image: str) -> dict[str, Any]:
        if image not in self.store:
            raise docker.errors.ImageNotFound(image)
        return {"Id": image, "Size": 610_000_000, "Config": {"Labels": self.store[image][0]}}

    def _children(self) -> set[str | None]:
        return {parent for _, parent in self.store.values()}

    def remove_image(self, image: str, force: bool, noprune: bool) -> None:
        assert not force
        if image in self._children():
            raise docker.errors.APIError("conflict: image has dependent child images")
        _, parent = self.store.pop(image)
        self.removed.append(image)
        if not noprune and parent is not None and parent != BASE and parent not in self._children():
            self.remove_image(parent, force=False, noprune=False)

    def images(self, filters: dict[str, Any]) -> list[dict[str, Any]]:
        wanted = dict(item.split("=", 1) for item in filters["label"])
        return [{"Id": image} for image, (labels, _) in self.store.items()
                if image not in self._children() and all(labels.get(k) == v for k, v in wanted.items())]

    def build(self, **params: Any) -> list[dict[str, Any]]:
        return self.chunks

    def info(self) -> dict[str, str]:
        return {"Architecture": "x86_64"}


BASE = "000000000001"  # tagged: never pruned


def engine(**extra: tuple[dict[str, str], str | None]) -> FakeClient:
    """base (tagged) <- a (COPY) <- b (RUN) <- c (LABEL: the stage's leaf), plus `extra`."""
    return FakeClient({BASE: ({}, None), "00000000000a": ({}, BASE), "00000000000b": ({}, "00000000000a"),
                       "00000000000c": (STAGE, "00000000000b"), **extra})


def test_the_build_log_names_the_build_stage_images() -> None:
    log = parse(STREAM)
    assert log.stage_images() == [("00000000000a", True), ("00000000000b", False), ("00000000000c", False)]


def test_only_labelled_images_are_removed_with_their_untagged_parents() -> None:
    client = engine(**{"0000000000ff": ({"other": "label"}, "000000000001")})
    assert remove_stage_images(client, ["0000000000ff", "00000000000c"]) == ["00000000000c"]
    assert client.removed == ["00000000000c", "00000000000b", "00000000000a"]
    assert set(client.store) == {"000000000001", "0000000000ff"}  # the base and the stranger stay


def test_an_image_still_in_use_is_left_alone() -> None:
    client = engine(**{"0000000000d0": (STAGE, "00000000000c")})  # a child image still needs the leaf
    assert remove_stage_images(client, ["00000000000c"]) == []
    assert "00000000000c" in client.store


def test_earlier_stages_of_the_same_model_are_superseded() -> None:
    client = engine(**{"0000000000e0": (STAGE, "000000000001"),
                       "0000000000e1": ({STAGE_LABEL: "build", "dev.mlship.name": "taxi"}, "000000000001")})
    assert superseded_stages(client, "iris", keep="00000000000c") == ["0000000000e0"]


def plan(tmp_path: Path, **options: Any) -> _Plan:
    manifest: Any = type("M", (), {"name": "iris"})()
    return _Plan(tmp_path, manifest, DockerOptions(**options), "3.11", parse_platform("linux/amd64"), "base:test",
                 ["iris:0.1.0"])


def test_a_passing_build_keeps_its_stage_as_the_cache_and_removes_older_ones(tmp_path: Path) -> None:
    client = engine(**{"0000000000e0": (STAGE, "000000000001")})
    stage = plan(tmp_path).clean_stages(client, parse(STREAM), ok=True)
    assert stage is not None and stage.kept and stage.removed == ["0000000000e0"]
    assert "00000000000c" in client.store and "0000000000e0" not in client.store
    assert stage.describe() == ("00000000000c, 610.0 MB with the base: kept as the layer cache for rebuilds "
                                "(--no-build-cache removes it)")


def test_no_build_cache_removes_the_stage(tmp_path: Path) -> None:
    client = engine()
    stage = plan(tmp_path, build_cache=False).clean_stages(client, parse(STREAM), ok=True)
    assert stage is not None and not stage.kept and stage.reason == "--no-build-cache"
    assert set(client.store) == {"000000000001"}


def test_a_failed_image_takes_the_stage_it_made_with_it(tmp_path: Path) -> None:
    client = engine()
    stage = plan(tmp_path).clean_stages(client, parse(STREAM), ok=False)
    assert stage is not None and not stage.kept and stage.reason == "the image failed its checks"
    assert set(client.store) == {"000000000001"}


def test_a_failed_image_keeps_a_stage_it_found_in_the_cache(tmp_path: Path) -> None:
    client = engine()
    cached = STREAM.replace(" ---> Running in 99999999999c\nRemoving intermediate container 99999999999c\n",
                            " ---> Using cache\n").replace(" ---> Running in 99999999999d\n", " ---> Using cache\n")
    stage = plan(tmp_path).clean_stages(client, parse(cached), ok=False)
    assert stage is not None and stage.kept and "00000000000c" in client.store


def test_a_failed_docker_build_removes_the_labelled_stage_it_made(tmp_path: Path) -> None:
    failing = STREAM.split("Step 6/6")[0]
    chunks = [{"stream": line + "\n"} for line in failing.splitlines()]
    chunks.append({"error": "COPY failed: no space left on device"})
    client = engine()
    client.chunks = chunks
    with pytest.raises(BuildError, match="docker build failed at Step 5/6"):
        build_image(client, tmp_path, "iris:0.1.0", parse_platform("linux/amd64"), lambda message: None)
    assert set(client.store) == {"000000000001"}
