"""The SBOM of real bundles (the packaged examples) and the license gate on real packages: `mlship package` and
`mlship build` refuse a denied license, naming each package. The image's and the tarball's SBOMs are checked
against what is installed in test_docker.py and test_onprem.py, on the artifacts those modules build anyway."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from mlship.sbom.document import validate_cyclonedx, validate_spdx
from tests.support.pip import sbom_distributions

pytestmark = pytest.mark.e2e


def test_an_example_bundle_carries_a_valid_sbom_of_its_requirements(example_bundles: dict[str, Path],
                                                                    cli: Any, tmp_path: Path) -> None:
    bundle = example_bundles["iris"]
    manifest = json.loads((bundle / "mlship.json").read_text())
    assert {"sbom/sbom.cdx.json", "sbom/sbom.spdx.json"} <= manifest["artifacts"].keys()  # listed: digest-checked
    result = cli("sbom", bundle)
    assert result.exit_code == 0, result.output
    assert validate_cyclonedx(result.stdout) is None
    pins = {(line.split("==")[0].lower().replace("_", "-"), line.split("==")[1]) for line in manifest["requirements"]}
    assert sbom_distributions(result.stdout) == pins
    data = json.loads(result.stdout)
    licenses = {c["name"]: c.get("licenses") for c in data["components"] if c["type"] == "library"}
    assert licenses["scikit-learn"] == [{"expression": "BSD-3-Clause"}]
    model = next(c for c in data["components"] if c["type"] == "machine-learning-model")
    props = {p["name"]: p["value"] for p in model["properties"]}
    assert props["mlship:model:class"] == "sklearn.pipeline.Pipeline" and props["mlship:model:library"] == "sklearn"
    assert props["mlship:model:notebook:sha256"] == manifest["source"]["sha256"]
    assert props["mlship:model:artifact:sha256"] == manifest["artifacts"]["artifacts/values.pkl"]
    assert props["mlship:model:golden-cases"] == str(len(json.loads((bundle / "golden.json").read_text())["cases"]))
    result = cli("sbom", bundle, "--format", "spdx", "-o", tmp_path / "iris.spdx.json")
    assert result.exit_code == 0 and "wrote the spdx SBOM" in result.output
    assert validate_spdx((tmp_path / "iris.spdx.json").read_text()) is None


def test_a_changed_sbom_is_refused_like_any_changed_file(example_bundles: dict[str, Path], cli: Any,
                                                         tmp_path: Path) -> None:
    bundle = Path(shutil.copytree(example_bundles["iris"], tmp_path / "iris"))
    sbom = bundle / "sbom/sbom.cdx.json"
    sbom.write_text(sbom.read_text().replace('"BSD-3-Clause"', '"MIT"'))
    result = cli("sbom", bundle)
    assert result.exit_code == 1 and "sbom/sbom.cdx.json" in result.output and "error:" in result.output


def test_package_refuses_a_denied_license_from_tool_mlship(examples: Path, cli: Any, tmp_path: Path) -> None:
    project = Path(shutil.copytree(examples / "iris", tmp_path / "iris"))
    (project / "pyproject.toml").write_text('[tool.mlship]\ndeny_licenses = ["BSD-3-Clause", "GPL-3.0-only"]\n')
    result = cli("package", project / "iris.ipynb", "-o", tmp_path / "bundle")
    assert result.exit_code == 1, result.output
    text = " ".join(result.output.split())
    assert "under a denied license (BSD-3-Clause, GPL-3.0-only)" in text
    assert "scikit-learn==" in text and "numpy==" in text and "starlette==" in text
    assert not (tmp_path / "bundle").exists()


def test_build_refuses_a_denied_license_naming_each_wheel(example_bundles: dict[str, Path], cli: Any,
                                                          wheel_cache: Path, tmp_path: Path) -> None:
    result = cli("build", "--target", "onprem", "--bundle", example_bundles["iris"], "-o", tmp_path / "dist",
                 "--wheel-cache", wheel_cache, "--deny-licenses", "Apache-2.0,MPL-2.0")
    assert result.exit_code == 1, result.output
    text = " ".join(result.output.split())
    # orjson is MPL-2.0 AND (Apache-2.0 OR MIT): MPL-2.0 is what it cannot do without; uvloop (Apache-2.0 OR MIT)
    # can be taken as MIT and passes.
    assert "orjson==" in text and "(needs MPL-2.0)" in text and "uvloop" not in text
    assert "prometheus-client==" in text or "prometheus_client==" in text
    assert not list((tmp_path / "dist").glob("*.tar.gz"))
    bad = cli("build", "--target", "onprem", "--bundle", example_bundles["iris"], "--deny-licenses", "GNU GPL v3")
    assert bad.exit_code == 1 and "'GNU GPL v3' is not an SPDX license id" in " ".join(bad.output.split())
