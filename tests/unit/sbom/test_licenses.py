from __future__ import annotations

from pathlib import Path

import pytest

from mlship.errors import NotebookError
from mlship.notebook.config import license_policy, read_config
from mlship.sbom.licenses import License, LicenseError, LicensePolicy, check_licenses, denied_by, read_license


def test_license_expression_comes_first_and_is_normalized() -> None:
    found = read_license("mit or apache-2.0", "GPL", ["License :: OSI Approved :: BSD License"])
    assert found == License("MIT OR Apache-2.0", source="License-Expression")


def test_a_license_field_that_is_an_spdx_id_is_taken() -> None:
    assert read_license(None, "BSD-3-Clause", []) == License("BSD-3-Clause", source="License")
    assert read_license(None, "GPL-3.0", []).expression == "GPL-3.0-only"  # the deprecated id, as SPDX maps it


def test_classifiers_are_mapped_when_unambiguous_and_read_as_alternatives() -> None:
    both = ["License :: OSI Approved :: MIT License", "License :: OSI Approved :: Apache Software License"]
    assert read_license(None, None, both) == License("Apache-2.0 OR MIT", source="classifiers")


def test_license_text_or_a_vague_name_is_kept_as_declared_not_guessed() -> None:
    text = "Copyright (c) 2005-2024, NumPy Developers.\nAll rights reserved.\n\nRedistribution and use ..."
    found = read_license(None, text, ["License :: OSI Approved :: BSD License"])
    assert found.expression is None and found.declared == "Copyright (c) 2005-2024, NumPy Developers...."
    assert read_license(None, None, ["License :: OSI Approved :: BSD License"]).declared == "BSD License"
    assert read_license(None, None, []) == License(None, None, "none")


@pytest.mark.parametrize(("expression", "denied"), [
    ("GPL-3.0-only", ["GPL-3.0-only"]),
    ("MIT OR GPL-3.0-only", []),  # can be taken as MIT
    ("MIT AND GPL-3.0-only", ["GPL-3.0-only"]),
    ("(MIT OR GPL-3.0-only) AND AGPL-3.0-only", ["AGPL-3.0-only"]),
    ("GPL-3.0-only OR AGPL-3.0-only", ["GPL-3.0-only", "AGPL-3.0-only"]),
    ("GPL-3.0-only WITH GCC-exception-3.1", ["GPL-3.0-only"]),
    ("GPL-3.0-or-later", []),  # another license id: deny it by its own id
])
def test_denied_by_reads_the_expression(expression: str, denied: list[str]) -> None:
    assert denied_by(expression, ["GPL-3.0-only", "AGPL-3.0-only"]) == denied


def test_policy_parses_comma_lists_and_refuses_what_is_not_an_id() -> None:
    policy = LicensePolicy.parse(["gpl-3.0-only, AGPL-3.0-only", "GPL-3.0"])
    assert policy.deny == ("GPL-3.0-only", "AGPL-3.0-only")
    with pytest.raises(LicenseError, match="'GNU GPL' is not an SPDX license id"):
        LicensePolicy.parse(["MIT,GNU GPL"])
    with pytest.raises(LicenseError, match="'MIT OR GPL-3.0-only' is not an SPDX license id"):
        LicensePolicy.parse(["MIT OR GPL-3.0-only"])


PACKAGES = [("numpy==2.4.6", License("BSD-3-Clause")), ("gplthing==1.0", License("GPL-3.0-only")),
            ("agplthing==2.0", License("MIT AND AGPL-3.0-only")), ("mystery==0.1", License(None, "Proprietary"))]


def test_check_licenses_names_every_denied_package_and_its_license() -> None:
    policy = LicensePolicy.parse(["GPL-3.0-only,AGPL-3.0-only"])
    with pytest.raises(LicenseError) as caught:
        check_licenses(PACKAGES, policy, what="the image iris:0.1.0")
    assert caught.value.message == (
        "the image iris:0.1.0 needs 2 package(s) under a denied license (GPL-3.0-only, AGPL-3.0-only): "
        "gplthing==1.0: GPL-3.0-only; agplthing==2.0: MIT AND AGPL-3.0-only (needs AGPL-3.0-only)")
    assert "--deny-licenses" in (caught.value.hint or "")


def test_packages_without_a_license_are_listed_or_refused_when_asked() -> None:
    allowed = PACKAGES[:1] + PACKAGES[3:]
    assert check_licenses(allowed, LicensePolicy(), what="x") == ["no recognizable license: mystery==0.1 "
                                                                   "(unrecognized: Proprietary)"]
    with pytest.raises(LicenseError, match=r"x has 1 package\(s\) without a recognizable license: mystery==0.1"):
        check_licenses(allowed, LicensePolicy(fail_unknown=True), what="x")


def test_tool_mlship_deny_licenses_and_the_flags_before_it(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text('[tool.mlship]\ndeny_licenses = ["GPL-3.0-only"]\n'
                                             "deny_unknown_licenses = true\n")
    config = read_config(tmp_path)
    assert license_policy(config, [], None) == LicensePolicy(("GPL-3.0-only",), fail_unknown=True)
    assert license_policy(config, ["AGPL-3.0-only"], False).deny == ("AGPL-3.0-only",)  # the flag wins
    assert license_policy({"deny_licenses": "MIT, ISC"}, [], None).deny == ("MIT", "ISC")
    with pytest.raises(LicenseError, match=r"\[tool.mlship\] deny_licenses: 'GPLv3' is not an SPDX license id"):
        license_policy({"deny_licenses": ["GPLv3"]}, [], None)
    (tmp_path / "pyproject.toml").write_text("[tool.mlship]\ndeny_licenses = 3\n")
    with pytest.raises(NotebookError, match="deny_licenses must be a list of SPDX license ids"):
        read_config(tmp_path)
