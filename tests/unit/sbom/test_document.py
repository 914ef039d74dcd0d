from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest

from mlship.errors import MlshipError
from mlship.sbom.artifacts import IMAGE_FILES, IMAGE_LABELS, read_sbom
from mlship.sbom.document import (
    BaseImage,
    Contents,
    Model,
    to_cyclonedx,
    to_spdx,
    validate_cyclonedx,
    validate_spdx,
)
from mlship.sbom.licenses import License
from mlship.sbom.packages import PythonPackage, parse_dpkg_status, read_wheel
from tests.support.wheels import make_wheel

DPKG = """Package: libc6
Status: install ok installed
Architecture: amd64
Source: glibc
Version: 2.36-9+deb12u10
Description: GNU C Library
 a continuation line: Package: not-a-package

Package: removed-one
Status: deinstall ok config-files
Version: 1.0

Package: python3.11-minimal
Status: install ok installed
Architecture: amd64
Source: python3.11 (3.11.2-6)
Version: 3.11.2-6+deb12u6
"""


def contents(**changes: object) -> Contents:
    model = Model("iris", "0.1.0", "sklearn", "sklearn.pipeline.Pipeline", "artifacts/values.pkl", "a" * 64,
                  "iris.ipynb", "b" * 64, 20, ("predict", "predict_proba"))
    packages = (PythonPackage("numpy", "2.4.6", License("BSD-3-Clause AND MIT", source="License-Expression"), "c" * 64,
                              "numpy-2.4.6-cp311-cp311-manylinux_2_28_x86_64.whl"),
                PythonPackage("mystery", "0.1", License(None, "Proprietary")),
                PythonPackage("uvloop", "0.23.0", License("Apache-2.0 OR MIT", source="classifiers")))
    fields: dict[str, object] = dict(kind="image", name="iris", version="0.1.0", created="2026-11-27T10:00:00Z",
                                     model=model, packages=packages, platform="linux/amd64",
                                     base=BaseImage("registry.local:5000/python:3.11-slim", "sha256:" + "d" * 64),
                                     debian=tuple(parse_dpkg_status(DPKG)))
    return Contents(**{**fields, **changes})  # type: ignore[arg-type]


def test_dpkg_status_lists_the_installed_packages_only() -> None:
    found = parse_dpkg_status(DPKG)
    assert [(p.name, p.version, p.source) for p in found] == [
        ("libc6", "2.36-9+deb12u10", "glibc"), ("python3.11-minimal", "3.11.2-6+deb12u6", "python3.11")]
    assert found[0].purl == "pkg:deb/debian/libc6@2.36-9+deb12u10?arch=amd64"


def test_a_wheels_metadata_gives_its_name_version_and_license(tmp_path: Path) -> None:
    data = make_wheel("Tiny_Pkg", "1.0", license="MIT", classifiers=["License :: OSI Approved :: ISC License (ISCL)"])
    (tmp_path / "Tiny_Pkg-1.0-py3-none-any.whl").write_bytes(data)
    found = read_wheel(tmp_path / "Tiny_Pkg-1.0-py3-none-any.whl", hashlib.sha256(data).hexdigest())
    assert (found.name, found.version, found.license.expression, found.purl) == (
        "Tiny_Pkg", "1.0", "MIT", "pkg:pypi/tiny-pkg@1.0")
    (tmp_path / "bad.whl").write_bytes(b"not a zip")
    with pytest.raises(Exception, match="zip"):
        read_wheel(tmp_path / "bad.whl", "0" * 64)


def test_cyclonedx_document_validates_and_says_what_the_image_holds() -> None:
    text = to_cyclonedx(contents())
    assert validate_cyclonedx(text) is None
    data = json.loads(text)
    assert data["specVersion"] == "1.6" and data["metadata"]["component"]["type"] == "container"
    by_ref = {c["bom-ref"]: c for c in data["components"]}
    numpy = by_ref["pkg:pypi/numpy@2.4.6"]
    assert numpy["licenses"] == [{"expression": "BSD-3-Clause AND MIT"}]
    assert numpy["hashes"] == [{"alg": "SHA-256", "content": "c" * 64}]
    assert by_ref["pkg:pypi/mystery@0.1"]["licenses"] == [{"license": {"name": "Proprietary"}}]
    model = by_ref["model"]
    assert model["type"] == "machine-learning-model" and model["hashes"][0]["content"] == "a" * 64
    props = {p["name"]: p["value"] for p in model["properties"]}
    assert props["mlship:model:library"] == "sklearn" and props["mlship:model:notebook:sha256"] == "b" * 64
    assert props["mlship:model:golden-cases"] == "20"
    base = by_ref["base-image"]
    assert base["purl"].startswith("pkg:oci/python@sha256:" + "d" * 64) and base["hashes"][0]["content"] == "d" * 64
    assert {d["ref"]: d.get("dependsOn", []) for d in data["dependencies"]}["base-image"] == [
        "pkg:deb/debian/libc6@2.36-9+deb12u10?arch=amd64", "pkg:deb/debian/python3.11-minimal@3.11.2-6+deb12u6?arch=amd64"]


def test_spdx_document_parses_and_validates_with_spdx_tools() -> None:
    text = to_spdx(contents())
    assert validate_spdx(text) is None
    data = json.loads(text)
    assert data["spdxVersion"] == "SPDX-2.3"
    packages = {p["name"]: p for p in data["packages"]}
    assert packages["numpy"]["licenseDeclared"] == "BSD-3-Clause AND MIT"
    assert packages["numpy"]["externalRefs"][0]["referenceLocator"] == "pkg:pypi/numpy@2.4.6"
    assert packages["mystery"]["licenseDeclared"] == "NOASSERTION"
    assert [p["summary"] for p in data["packages"] if "summary" in p] == [
        "machine-learning-model: sklearn.pipeline.Pipeline"]
    assert validate_spdx(text.replace('"SPDX-2.3"', '"SPDX-9.9"')) is not None


def test_the_documents_are_a_function_of_the_contents() -> None:
    assert to_cyclonedx(contents()) == to_cyclonedx(contents())
    assert to_spdx(contents()) == to_spdx(contents())
    assert to_cyclonedx(contents()) != to_cyclonedx(contents(version="0.2.0"))
    # without a base (a bundle, a tarball, --context-only): still valid
    assert validate_cyclonedx(to_cyclonedx(contents(kind="bundle", base=None, debian=()))) is None
    assert validate_spdx(to_spdx(contents(kind="onprem", base=BaseImage("python:3.11-slim", None)))) is None


def _tar(members: dict[str, bytes], compressed: bool = False) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz" if compressed else "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def test_read_sbom_from_docker_and_oci_archives(tmp_path: Path) -> None:
    config = json.dumps({"config": {"Labels": {label: IMAGE_FILES[fmt] for fmt, label in IMAGE_LABELS.items()}}})
    old = _tar({"opt/mlship/sbom.cdx.json": b"old"})
    new = _tar({"opt/mlship/sbom.cdx.json": b"new", "opt/mlship/sbom.spdx.json": b"spdx"}, compressed=True)
    docker = _tar({"manifest.json": json.dumps([{"Config": "c.json", "Layers": ["l1.tar", "l2.tar"]}]).encode(),
                   "c.json": config.encode(), "l1.tar": old, "l2.tar": new})
    (tmp_path / "docker.tar").write_bytes(docker)
    assert read_sbom(tmp_path / "docker.tar") == b"new" and read_sbom(tmp_path / "docker.tar", "spdx") == b"spdx"

    def digest(data: bytes) -> str:
        return "sha256:" + hashlib.sha256(data).hexdigest()

    manifest = json.dumps({"config": {"digest": digest(config.encode())},
                           "layers": [{"digest": digest(old)}, {"digest": digest(new)}]}).encode()
    blobs = {f"blobs/sha256/{digest(b)[7:]}": b for b in (config.encode(), old, new, manifest)}
    oci = _tar({"index.json": json.dumps({"manifests": [{"digest": digest(manifest)}]}).encode(), **blobs})
    (tmp_path / "oci.tar").write_bytes(oci)
    assert read_sbom(tmp_path / "oci.tar") == b"new"

    (tmp_path / "plain.tar").write_bytes(_tar({"manifest.json": b'[{"Config": "c.json", "Layers": []}]',
                                              "c.json": b'{"config": {"Labels": {}}}'}))
    with pytest.raises(MlshipError, match="has no io.mlship.sbom.cyclonedx label"):
        read_sbom(tmp_path / "plain.tar")
    (tmp_path / "other.tar.gz").write_bytes(_tar({"x-1.0/README": b"hi"}, compressed=True))
    with pytest.raises(MlshipError, match="holds no sbom/sbom.cdx.json"):
        read_sbom(tmp_path / "other.tar.gz")
    (tmp_path / "text").write_text("hello")
    with pytest.raises(MlshipError, match="neither a bundle directory nor a tar archive"):
        read_sbom(tmp_path / "text")
    with pytest.raises(MlshipError, match="unknown SBOM format 'xml'"):
        read_sbom(tmp_path / "text", "xml")
