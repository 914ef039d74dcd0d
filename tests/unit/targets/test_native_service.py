"""The native builder's image of a service file, without an engine, a registry or pip: its layers (one venv per
environment, one per model, the service file and front), its config against the service Dockerfile's final stage,
reproducibility and what a model-only change touches (mlship/targets/_native_service.py)."""

from __future__ import annotations

import json
import tarfile
import tomllib
from pathlib import Path
from typing import Any

import pytest

from mlship.sbom.artifacts import IMAGE_FILES, image_files
from mlship.sbom.document import BaseImage as SbomBase
from mlship.sbom.licenses import LicensePolicy
from mlship.targets._docker_service_context import dockerfile, render
from mlship.targets._native_build import check_base
from mlship.targets._native_service import _image
from mlship.targets._oci import BlobStore, Layer
from mlship.targets._service_plan import ServicePlan
from mlship.targets._service_sbom import service_sbom
from mlship.targets.wheelhouse import Wheelhouse
from tests.support.docker import write_tiny_bundle
from tests.unit.targets.test_oci import FILES, fake_base
from tests.unit.targets.test_service_build import PLATFORM, service_file

__all__ = ["service_file"]  # the fixture, found by name


@pytest.fixture
def base(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("MLSHIP_OCI_CACHE", str(tmp_path / "oci"))
    _, tar = fake_base(tmp_path, [FILES], env=["PATH=/usr/local/bin:/usr/bin", "PYTHON_VERSION=3.11.9"])
    return f"oci-archive:{tar}"


def build(service: Path, base: str, tmp: Path) -> tuple[Any, dict[str, Any], ServicePlan]:
    """The image of `service` with empty environments (no wheels: make_venv lays out the venv alone)."""
    plan = ServicePlan.from_file(service, PLATFORM)
    houses = {env.name: Wheelhouse(tmp, [], plan.python, PLATFORM) for env in plan.environments}
    checked = check_base(base, plan.python, PLATFORM, auth=None, step=lambda message: None)
    tmp.mkdir(exist_ok=True)
    sbom = service_sbom(plan, houses, LicensePolicy(), kind="image", what="the image",
                        base=SbomBase(base, checked.image.digest, "manifest"))
    native = _image(plan, checked, houses, image_files(sbom.contents), base_image=base, tmp=tmp,
                    step=lambda message: None)
    config = json.loads(native.image.store.read(native.image.config.digest))
    return native, config, plan


def files(store: BlobStore, layer: Layer) -> dict[str, bytes]:
    with tarfile.open(store.path(layer.descriptor.digest)) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}  # type: ignore[union-attr]


def test_one_venv_per_environment_one_layer_per_model_then_the_service(service_file: Path, base: str,
                                                                       tmp_path: Path) -> None:
    native, _, _ = build(service_file, base, tmp_path / "a")
    assert native.kinds == ["venv env1", "venv env2", "tiny 0.1.0", "pinned 1.0.0", "pinned 2.0.0", "service",
                            "sbom"]
    store = native.image.store
    venv1, venv2, tiny, old, new, service, sbom = (files(store, layer) for layer in native.new_layers)
    assert sorted(sbom) == sorted(path.lstrip("/") for path in IMAGE_FILES.values())
    assert "opt/envs/env1/pyvenv.cfg" in venv1 and all(p.startswith("opt/envs/env2/") for p in venv2)
    assert b"command = /usr/bin/python3.11 -m venv /opt/envs/env2\n" in venv2["opt/envs/env2/pyvenv.cfg"]
    assert "app/models/tiny/0.1.0/artifacts/values.pkl" in tiny
    assert all(p.startswith("app/models/pinned/1.0.0/") for p in old)
    assert "app/models/pinned/2.0.0/mlship.json" in new and not any("__pycache__" in p for p in new)
    assert "app/mlship_runtime/_service.py" in service
    assert service["etc/passwd"].endswith(b"mlship:x:10001:0:mlship model service:/tmp:/usr/sbin/nologin\n")
    written = tomllib.loads(service["app/mlship.toml"].decode())
    assert [(m["bundle"], m["python"]) for m in written["models"]] == [
        ("/app/models/tiny/0.1.0", "/opt/envs/env1/bin/python"), ("/app/models/pinned/1.0.0", "/opt/envs/env1/bin/python"),
        ("/app/models/pinned/2.0.0", "/opt/envs/env2/bin/python")]


def test_the_config_is_the_service_dockerfiles_final_stage(service_file: Path, base: str, tmp_path: Path) -> None:
    native, config, plan = build(service_file, base, tmp_path / "a")
    labels = config["config"]["Labels"]
    houses = {env.name: Wheelhouse(tmp_path, [], plan.python, PLATFORM) for env in plan.environments}
    final = render(dockerfile(plan, houses, base_image=base, digest=labels["io.mlship.context-hash"],
                              sbom_dest="/opt/mlship", sbom_labels={k: v for k, v in labels.items() if ".sbom." in k}))
    final = final[final.rindex("\nFROM "):]

    def instruction(name: str) -> str:
        return next(line for line in final.splitlines() if line.startswith(f"{name} ")).split(" ", 1)[1]

    settings = config["config"]
    assert settings["Entrypoint"] == json.loads(instruction("ENTRYPOINT"))
    assert settings["Cmd"] == json.loads(instruction("CMD"))
    assert settings["User"] == instruction("USER") and settings["WorkingDir"] == instruction("WORKDIR")
    assert f"{instruction('EXPOSE')}/tcp" in settings["ExposedPorts"]
    health = final.split("HEALTHCHECK", 1)[1].split("CMD ", 1)[1].split("\n", 1)[0]
    assert settings["Healthcheck"]["Test"] == ["CMD", *json.loads(health)]
    assert settings["Healthcheck"]["StartPeriod"] == 180_000_000_000
    assert settings["Env"] == ["PATH=/opt/envs/env1/bin:/usr/local/bin:/usr/bin", "PYTHON_VERSION=3.11.9",
                               "MLSHIP_PID_FILE=/tmp/mlship.pid", "PYTHONDONTWRITEBYTECODE=1", "PYTHONUNBUFFERED=1",
                               "HOME=/tmp"]
    for line in final.split("LABEL \\\n", 1)[1].splitlines():
        key, value = line.strip().rstrip(" \\").split("=", 1)
        assert labels[key] == json.loads(value), key
    assert labels["org.opencontainers.image.base.digest"] == native.base.digest
    assert labels["base"] == "yes"  # the base's own labels are kept, as the engine keeps them


def test_reproducible_and_a_model_change_touches_its_layer_only(service_file: Path, base: str,
                                                                tmp_path: Path) -> None:
    first, _, _ = build(service_file, base, tmp_path / "a")
    again, _, _ = build(service_file, base, tmp_path / "b")
    assert again.image.digest == first.image.digest and again.reused == ["venv env1", "venv env2"]
    write_tiny_bundle(service_file.parent / "dist" / "old2", name="pinned", version="1.0.0",
                      reports="six==1.16.0", values={"retrained": 1})
    (service_file.parent / "dist" / "old").rename(service_file.parent / "old-before")
    (service_file.parent / "dist" / "old2").rename(service_file.parent / "dist" / "old")
    changed, _, _ = build(service_file, base, tmp_path / "c")
    differ = [kind for kind, a, b in zip(first.kinds, first.new_layers, changed.new_layers, strict=True)
              if a.descriptor.digest != b.descriptor.digest]
    # The SBOM lists every model's digest: it changes with any of them.
    assert differ == ["pinned 1.0.0", "sbom"]
    assert changed.image.config.digest != first.image.config.digest


def test_the_builder_options_that_contradict_are_refused_for_a_service(service_file: Path, cli: Any,
                                                                       tmp_path: Path) -> None:
    engine = cli("build", "--target", "docker", service_file, "--builder", "engine", "-o", tmp_path / "x.tar")
    assert engine.exit_code == 1 and "--output is written by the native builder" in engine.output
    both = cli("build", "--target", "docker", service_file, "--builder", "native", "--context-only", tmp_path / "c")
    assert both.exit_code == 1 and "--context-only writes a build context for another builder" in both.output
    assert "Traceback" not in engine.output + both.output
