"""The SBOM of an artifact built from a service file: every model, every environment's packages (a distribution
once per environment), model -> its environment's packages, both formats valid; the gate over all environments
(mlship/sbom/artifacts.py service_contents, service_gate)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from mlship.sbom.artifacts import IMAGE_FILES, IMAGE_LABELS, image_files, service_contents, service_gate
from mlship.sbom.document import BaseImage, to_cyclonedx, to_spdx, validate_cyclonedx, validate_spdx
from mlship.sbom.licenses import License, LicenseError, LicensePolicy
from mlship.sbom.packages import DebPackage, PythonPackage
from mlship.targets._service_plan import ServicePlan
from mlship.targets.wheelhouse import parse_platform
from tests.support.services import write_split_service

PLATFORM = parse_platform("linux/amd64")


@pytest.fixture
def plan(tmp_path: Path) -> ServicePlan:
    return ServicePlan.from_file(write_split_service(tmp_path), PLATFORM)


def package(name: str, version: str, expression: str | None) -> PythonPackage:
    digest = hashlib.sha256(f"{name}{version}".encode()).hexdigest()
    return PythonPackage(name, version, License(expression, source="License-Expression" if expression else "none"),
                         digest, f"{name}-{version}-py3-none-any.whl")


def packages() -> dict[str, list[PythonPackage]]:
    return {"env1": [package("six", "1.16.0", "MIT"), package("uvloop", "0.23.0", "Apache-2.0 OR MIT"),
                     package("mystery", "0.1", None)],
            "env2": [package("six", "1.17.0", "MIT"), package("uvloop", "0.23.0", "Apache-2.0 OR MIT")]}


def test_every_model_and_every_environments_packages_are_listed_with_their_dependencies(plan: ServicePlan) -> None:
    contents = service_contents(plan, packages(), kind="image", platform="linux/amd64",
                                base=BaseImage("python:3.11-slim", "sha256:" + "d" * 64),
                                debian=[DebPackage("libc6", "2.36-9", "amd64", "glibc")])
    text = to_cyclonedx(contents)
    assert validate_cyclonedx(text) is None
    data = json.loads(text)
    components = {c["bom-ref"]: c for c in data["components"]}
    models = [c for c in data["components"] if c["type"] == "machine-learning-model"]
    assert sorted((m["name"], m["version"]) for m in models) == [("pinned", "1.0.0"), ("pinned", "2.0.0"),
                                                                 ("tiny", "0.1.0")]
    props = {p["name"]: p["value"] for p in components["model:pinned:2.0.0"]["properties"]}
    assert props["mlship:model:environment"] == "env2"
    assert props["mlship:model:bundle:digest"] == "sha256:" + hashlib.sha256(
        (plan.models[2].model.bundle / "mlship.json").read_bytes()).hexdigest()
    assert props["mlship:model:golden-cases"] == str(len(json.loads(
        (plan.models[2].model.bundle / "golden.json").read_text())["cases"]))
    # uvloop is in both environments: listed twice, each with its environment
    uvloops = [c for c in data["components"] if c["name"] == "uvloop"]
    assert sorted(c["bom-ref"] for c in uvloops) == ["env1:pkg:pypi/uvloop@0.23.0", "env2:pkg:pypi/uvloop@0.23.0"]
    assert {p["value"] for c in uvloops for p in c["properties"] if p["name"] == "mlship:environment"} == {
        "env1", "env2"}
    assert components["env2:pkg:pypi/six@1.17.0"]["hashes"][0]["content"] == hashlib.sha256(
        b"six1.17.0").hexdigest()
    depends = {d["ref"]: set(d.get("dependsOn", [])) for d in data["dependencies"]}
    assert depends["model:pinned:2.0.0"] == {"env2:pkg:pypi/six@1.17.0", "env2:pkg:pypi/uvloop@0.23.0"}
    assert depends["model:tiny:0.1.0"] == depends["model:pinned:1.0.0"] == {
        "env1:pkg:pypi/six@1.16.0", "env1:pkg:pypi/uvloop@0.23.0", "env1:pkg:pypi/mystery@0.1"}
    assert depends["base-image"] == {"pkg:deb/debian/libc6@2.36-9?arch=amd64"}
    assert data["metadata"]["component"]["name"] == "scoring"


def test_the_spdx_document_validates_and_lists_each_environments_packages(plan: ServicePlan) -> None:
    contents = service_contents(plan, packages(), kind="onprem", platform="linux/amd64")
    text = to_spdx(contents)
    assert validate_spdx(text) is None
    data = json.loads(text)
    names = [(p["name"], p.get("versionInfo")) for p in data["packages"]]
    assert names.count(("uvloop", "0.23.0")) == 2 and ("six", "1.17.0") in names
    assert sum(1 for p in data["packages"] if p.get("summary", "").startswith("machine-learning-model")) == 3
    ids = {p["SPDXID"]: p for p in data["packages"]}
    depends = {(r["spdxElementId"], r["relatedSpdxElement"]) for r in data["relationships"]
               if r["relationshipType"] == "DEPENDS_ON"}
    model2 = next(i for i, p in ids.items() if p["name"] == "pinned" and p["versionInfo"] == "2.0.0")
    assert {ids[b]["name"] + "==" + ids[b]["versionInfo"] for a, b in depends if a == model2} == {
        "six==1.17.0", "uvloop==0.23.0"}


def test_the_documents_are_reproducible_and_image_files_work_for_a_service(plan: ServicePlan) -> None:
    one = image_files(service_contents(plan, packages(), kind="image", platform="linux/amd64"))
    two = image_files(service_contents(plan, packages(), kind="image", platform="linux/amd64"))
    assert one == two
    files, labels = one
    assert set(files) == set(IMAGE_FILES.values()) and labels == {IMAGE_LABELS[f]: IMAGE_FILES[f] for f in IMAGE_FILES}
    changed = packages()
    changed["env2"][0] = package("six", "1.17.1", "MIT")
    other, _ = image_files(service_contents(plan, changed, kind="image", platform="linux/amd64"))
    assert json.loads(other[IMAGE_FILES["cyclonedx"]])["serialNumber"] != json.loads(
        files[IMAGE_FILES["cyclonedx"]])["serialNumber"]


def test_an_environment_without_packages_given_is_refused(plan: ServicePlan) -> None:
    with pytest.raises(Exception, match="env2"):
        service_contents(plan, {"env1": []}, kind="image", platform="linux/amd64")


def test_the_gate_names_the_package_its_license_and_the_environments_and_models_it_serves(plan: ServicePlan) -> None:
    contents = service_contents(plan, packages(), kind="image", platform="linux/amd64")
    warnings = service_gate(contents, LicensePolicy(("Apache-2.0",)), what="the image scoring")
    assert warnings == ["no recognizable license: mystery==0.1 (env1: tiny 0.1.0, pinned 1.0.0) "
                        "(no license metadata)"]
    with pytest.raises(LicenseError) as caught:
        service_gate(contents, LicensePolicy(("MIT",)), what="the image scoring")
    message = caught.value.message
    assert "six==1.16.0 (env1: tiny 0.1.0, pinned 1.0.0): MIT" in message
    assert "six==1.17.0 (env2: pinned 2.0.0): MIT" in message
    # MIT OR Apache-2.0 can be taken as Apache-2.0; one entry for uvloop with both environments when both are denied
    assert "uvloop" not in message
    with pytest.raises(LicenseError) as both:
        service_gate(contents, LicensePolicy(("MIT", "Apache-2.0")), what="the image scoring")
    assert "uvloop==0.23.0 (env1: tiny 0.1.0, pinned 1.0.0; env2: pinned 2.0.0): Apache-2.0 OR MIT" in \
        both.value.message
