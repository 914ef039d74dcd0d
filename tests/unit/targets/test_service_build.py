"""A service file's build plan and docker context, without Docker or pip: environments, the image's own service
file, one layer folder per model, labels, a reproducible context hash (mlship/targets/_service_plan.py,
_docker_service_context.py)."""

from __future__ import annotations

import hashlib
import json
import tomllib
from pathlib import Path
from typing import Any

import pytest

from mlship.errors import BuildError
from mlship.runtime._service import read_service
from mlship.targets._docker_service_context import write_service_context
from mlship.targets._service_plan import ServicePlan
from mlship.targets.wheelhouse import LockedWheel, Wheelhouse, parse_platform
from tests.support.docker import write_tiny_bundle
from tests.support.services import write_split_service
from tests.support.wheels import make_wheel

PLATFORM = parse_platform("linux/amd64")


@pytest.fixture
def service_file(tmp_path: Path) -> Path:
    return write_split_service(tmp_path)


def fake_houses(plan: ServicePlan, root: Path) -> dict[str, Wheelhouse]:
    houses = {}
    for env in plan.environments:
        folder = root / env.name
        folder.mkdir(parents=True)
        lock = []
        for requirement in env.requirements():
            name, version = requirement.split("==")
            filename = f"{name.replace('-', '_')}-{version}-py3-none-any.whl"
            data = make_wheel(name.replace("-", "_"), version, license_expression="MIT")  # the SBOM reads it
            (folder / filename).write_bytes(data)
            lock.append(LockedWheel(name, version, filename, hashlib.sha256(data).hexdigest()))
        houses[env.name] = Wheelhouse(folder, lock, plan.python, PLATFORM)
    return houses


def test_the_pinned_pair_is_split_and_the_other_bundle_shares_the_first_environment(service_file: Path) -> None:
    plan = ServicePlan.from_file(service_file, PLATFORM)
    assert [(p.label, p.environment) for p in plan.models] == [("tiny 0.1.0", "env1"), ("pinned 1.0.0", "env1"),
                                                               ("pinned 2.0.0", "env2")]
    (split,) = plan.grouping.splits
    assert split.describe() == "pinned 2.0.0 in env2 (env1: six==1.17.0 vs six==1.16.0 (pinned 1.0.0))"
    rows = dict(plan.rows())
    assert rows["environment env1"] == "tiny 0.1.0, pinned 1.0.0" and rows["environment env2"] == "pinned 2.0.0"
    assert rows["split"] == split.describe()
    data = plan.to_json()
    assert data["splits"][0]["conflicts"] == [{"environment": "env1", "package": "six", "wanted": "==1.17.0",
                                               "found": "==1.16.0", "models": ["pinned 1.0.0"]}]


def test_the_context_holds_every_environment_every_model_in_its_own_layer_and_the_image_service_file(
        service_file: Path, tmp_path: Path) -> None:
    plan = ServicePlan.from_file(service_file, PLATFORM)
    houses = fake_houses(plan, tmp_path / "wheels")
    context = tmp_path / "context"
    digest = write_service_context(context, plan, houses, base_image="base:1")
    assert sorted(p.name for p in (context / "envs").iterdir()) == ["env1", "env2"]
    assert (context / "envs/env2/six-1.17.0-py3-none-any.whl").is_file()
    assert (context / "envs/env2/linux_x86_64-py311.txt").read_text().count("--hash=sha256:") == \
        len(houses["env2"].lock)
    for index, (name, version) in enumerate([("tiny", "0.1.0"), ("pinned", "1.0.0"), ("pinned", "2.0.0")]):
        layer = context / "layers" / f"{index:02d}"
        assert [p.relative_to(layer).as_posix() for p in layer.iterdir()] == ["app"]
        assert (layer / "app/models" / name / version / "mlship.json").is_file()
    front = context / "layers/service/app"
    assert (front / "mlship_runtime/__init__.py").is_file()
    written = tomllib.loads((front / "mlship.toml").read_text())
    assert written["service"] == {"name": "scoring"}
    assert [(m["bundle"], m["name"], m["python"]) for m in written["models"]] == [
        ("/app/models/tiny/0.1.0", "tiny", "/opt/envs/env1/bin/python"),
        ("/app/models/pinned/1.0.0", "pinned", "/opt/envs/env1/bin/python"),
        ("/app/models/pinned/2.0.0", "pinned", "/opt/envs/env2/bin/python")]
    assert written["routes"] == {"pinned": {"default": "2.0.0"}}
    dockerfile = (context / "Dockerfile").read_text()
    assert dockerfile.count("\nFROM base:1") == 3
    # Environments first, then one layer per model in the service's order, then the service file and the front.
    final = dockerfile[dockerfile.rindex("\nFROM "):]
    copies = [line for line in final.splitlines() if line.startswith("COPY ") and "passwd" not in line]
    assert copies == ["COPY --from=env1 /opt/envs/env1/ /opt/envs/env1/",
                      "COPY --from=env2 /opt/envs/env2/ /opt/envs/env2/",
                      "COPY layers/00/ /", "COPY layers/01/ /", "COPY layers/02/ /", "COPY layers/service/ /"]
    assert f'io.mlship.context-hash="{digest}"' in dockerfile
    labels = dockerfile[dockerfile.rindex("LABEL"):]
    models = json.loads(json.loads(labels.split("io.mlship.models=", 1)[1].split(" \\\n", 1)[0]))
    assert [(m["name"], m["version"], m["environment"]) for m in models] == [
        ("tiny", "0.1.0", "env1"), ("pinned", "1.0.0", "env1"), ("pinned", "2.0.0", "env2")]
    assert all(m["bundle_digest"].startswith("sha256:") for m in models)
    assert "mlship service scoring: tiny 0.1.0, pinned 1.0.0, pinned 2.0.0" in labels


def test_the_context_is_reproducible_and_a_model_change_touches_only_its_layer(service_file: Path,
                                                                               tmp_path: Path) -> None:
    plan = ServicePlan.from_file(service_file, PLATFORM)
    houses = fake_houses(plan, tmp_path / "wheels")
    first = write_service_context(tmp_path / "one", plan, houses, base_image="base:1")
    assert write_service_context(tmp_path / "two", plan, houses, base_image="base:1") == first
    write_tiny_bundle(service_file.parent / "dist" / "tiny2", expected=[1, 2, 4])
    (service_file.parent / "dist" / "tiny").rename(service_file.parent / "tiny-before")
    (service_file.parent / "dist" / "tiny2").rename(service_file.parent / "dist" / "tiny")
    changed = ServicePlan.from_file(service_file, PLATFORM)
    assert write_service_context(tmp_path / "three", changed, houses, base_image="base:1") != first

    def tree(root: Path) -> dict[str, bytes]:
        return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}

    one, three = tree(tmp_path / "one"), tree(tmp_path / "three")
    differ = {path.split("/")[1] if path.startswith("layers/") else path for path in one if one[path] != three[path]}
    assert differ == {"00", "Dockerfile"}, differ


def test_bundles_of_different_pythons_are_refused_by_name(service_file: Path) -> None:
    manifest_path = service_file.parent / "dist" / "new" / "mlship.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["python"]["version"] = "3.12.1"
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(BuildError, match=r"different Pythons \(Python 3.11: tiny 0.1.0, pinned 1.0.0; "
                                         r"Python 3.12: pinned 2.0.0\)"):
        ServicePlan.from_file(service_file, PLATFORM)


def test_a_bad_service_file_is_a_build_error_naming_the_key(service_file: Path) -> None:
    service_file.write_text(service_file.read_text() + '\n[extra]\nfoo = 1\n')
    with pytest.raises(BuildError, match="unknown key 'extra'"):
        ServicePlan.from_file(service_file, PLATFORM)


def test_the_image_service_file_reads_back(service_file: Path, tmp_path: Path) -> None:
    plan = ServicePlan.from_file(service_file, PLATFORM)
    folder = tmp_path / "artifact" / "app"
    for planned in plan.models:
        (folder / planned.folder).parent.mkdir(parents=True, exist_ok=True)
        (folder / planned.folder).symlink_to(planned.model.bundle)
    plan.write_service_file(folder / "mlship.toml", bundle_root=folder,
                            python=lambda env: str(folder / "envs" / env / "bin" / "python"))
    text = (folder / "mlship.toml").read_text()
    assert 'python = "envs/env2/bin/python"' in text and 'bundle = "models/pinned/2.0.0"' in text
    service = read_service(folder / "mlship.toml")
    assert [m.python for m in service.models] == [str(folder / f"envs/{e}/bin/python")
                                                  for e in ("env1", "env1", "env2")]


def test_the_image_service_file_keeps_the_shadow_or_canary(service_file: Path, tmp_path: Path) -> None:
    service_file.write_text(service_file.read_text() + 'canary = { version = "1.0.0", percent = 10, '
                            'sticky = "X-User-ID", window = 50 }\n')
    plan = ServicePlan.from_file(service_file, PLATFORM)
    folder = tmp_path / "artifact" / "app"
    for planned in plan.models:
        (folder / planned.folder).parent.mkdir(parents=True, exist_ok=True)
        (folder / planned.folder).symlink_to(planned.model.bundle)
    written = plan.write_service_file(folder / "mlship.toml", bundle_root=folder, python=lambda env: "python3")
    assert read_service(folder / "mlship.toml").rollouts == written.rollouts == read_service(service_file).rollouts
    assert written.rollouts["pinned"].sticky == "X-User-ID"


def test_the_onprem_tarball_holds_every_environment_and_model_and_a_relative_service_file(
        service_file: Path, tmp_path: Path) -> None:
    import tarfile

    from mlship.targets._onprem_service import OnpremServiceBuilder
    from mlship.targets.onprem import OnpremOptions

    options = OnpremOptions(platform="linux/amd64", output=tmp_path / "out")
    builder = OnpremServiceBuilder.from_file(service_file, options)
    houses = fake_houses(builder.plan, tmp_path / "wheels")
    result = builder.build(tmp_path / "out", houses)
    assert result.ok and result.tarball.name == "scoring-py311-linux_x86_64.tar.gz"
    assert dict(result.rows())["split"] == "pinned 2.0.0 in env2 (env1: six==1.17.0 vs six==1.16.0 (pinned 1.0.0))"
    assert result.to_json()["service"]["environments"][1]["models"] == ["pinned 2.0.0"]
    with tarfile.open(result.tarball) as tar:
        names = set(tar.getnames())
        read = lambda name: tar.extractfile(f"scoring/{name}").read().decode()  # noqa: E731
        service, install, launcher = read("app/mlship.toml"), read("install.sh"), read("bin/scoring-serve")
        sums = read("SHA256SUMS")
    assert {"scoring/app/models/pinned/2.0.0/mlship.json", "scoring/app/mlship_runtime/_service.py",
            "scoring/envs/env2/requirements.lock", "scoring/envs/env2/wheels/six-1.17.0-py3-none-any.whl",
            "scoring/envs/env1/wheels/six-1.16.0-py3-none-any.whl"} <= names
    assert not any("__pycache__" in name for name in names)
    assert 'bundle = "models/pinned/2.0.0"\nname = "pinned"\npython = "../envs/env2/bin/python"' in service
    assert "ENVIRONMENTS='env1 env2'" in install
    assert "MODELS='env1:models/tiny/0.1.0 env1:models/pinned/1.0.0 env2:models/pinned/2.0.0'" in install
    assert 'LINKS="app envs bin lib .mlship-install .installed-files"' in install
    assert ('exec "$prefix/envs/env1/bin/python" -B -m mlship_runtime serve-service "$prefix/app/mlship.toml" "$@"'
            in launcher)
    assert "  app/mlship.toml\n" in sums and "  envs/env2/requirements.lock\n" in sums
    again = builder.build(tmp_path / "again", houses)
    assert again.sha256 == result.sha256


def test_a_single_bundle_tarball_keeps_its_venv_layout(tmp_path: Path) -> None:
    from mlship.targets._onprem_build import OnpremBuilder
    from mlship.targets.onprem import OnpremOptions

    bundle = write_tiny_bundle(tmp_path / "tiny")
    builder = OnpremBuilder.from_bundle(bundle, OnpremOptions(platform="linux/amd64", output=tmp_path / "out"))
    house = Wheelhouse(tmp_path, [], "3.11", PLATFORM)
    ctx = builder.context(house)
    from mlship.targets._onprem_build import _text

    install, launcher = _text("install.sh.jinja", ctx).decode(), _text("launcher.jinja", ctx).decode()
    assert "ENVIRONMENTS=" not in install and 'LINKS="app venv bin lib .mlship-install .installed-files"' in install
    assert 'make_venv "$rel/venv" "$here/wheels" "$here/requirements.lock"' in install
    assert 'check_model "$rel/venv/bin/python" "$rel/app"\n' in install
    assert 'exec "$prefix/venv/bin/python" -I -B -u "$prefix/app/mlship_runtime/_boot.py" serve' in launcher
    assert "serve-service" not in launcher


def test_a_target_that_builds_one_bundle_refuses_a_service_file(service_file: Path, cli: Any) -> None:
    result = cli("build", "--target", "k8s", service_file, "--image", "registry.local/scoring:1")
    assert result.exit_code == 2
    assert f"--target k8s builds one bundle, not a service file ({service_file})" in result.output
    assert "--target docker or --target onprem" in result.output
    both = cli("build", "--target", "onprem", service_file, "--bundle", service_file.parent / "dist" / "tiny")
    assert both.exit_code == 2 and "--bundle and the service file" in both.output



def test_the_onprem_tarball_carries_the_services_sbom_and_a_denied_license_writes_nothing(
        service_file: Path, tmp_path: Path) -> None:
    from mlship.sbom.artifacts import read_sbom
    from mlship.sbom.document import validate_cyclonedx, validate_spdx
    from mlship.sbom.licenses import LicenseError
    from mlship.targets._onprem_service import OnpremServiceBuilder
    from mlship.targets.onprem import OnpremOptions

    options = OnpremOptions(platform="linux/amd64", output=tmp_path / "out")
    builder = OnpremServiceBuilder.from_file(service_file, options)
    houses = fake_houses(builder.plan, tmp_path / "wheels")
    result = builder.build(tmp_path / "out", houses)
    text = read_sbom(result.tarball).decode()
    assert validate_cyclonedx(text) is None and validate_spdx(read_sbom(result.tarball, "spdx").decode()) is None
    refs = {c["bom-ref"] for c in json.loads(text)["components"]}
    assert {"env1:pkg:pypi/six@1.16.0", "env2:pkg:pypi/six@1.17.0", "model:pinned:2.0.0"} <= refs
    denied = OnpremServiceBuilder.from_file(service_file, OnpremOptions(
        platform="linux/amd64", output=tmp_path / "denied", deny_licenses=["MIT"]))
    with pytest.raises(LicenseError, match=r"six==1\.17\.0 \(env2: pinned 2\.0\.0\): MIT"):
        denied.build(tmp_path / "denied", fake_houses(denied.plan, tmp_path / "wheels2"))
    assert list((tmp_path / "denied").iterdir()) == []


def test_the_service_context_copies_the_sbom_last_and_labels_name_it(service_file: Path, tmp_path: Path) -> None:
    from mlship.sbom.artifacts import IMAGE_FILES, image_files, service_contents, wheel_packages

    plan = ServicePlan.from_file(service_file, PLATFORM)
    houses = fake_houses(plan, tmp_path / "wheels")
    contents = service_contents(plan, {env: wheel_packages(h.directory, h.lock) for env, h in houses.items()},
                                kind="image", platform="linux/amd64")
    files, labels = image_files(contents)
    context = tmp_path / "context"
    write_service_context(context, plan, houses, base_image="base:1", sbom=files, sbom_labels=labels)
    dockerfile = (context / "Dockerfile").read_text()
    copies = [line for line in dockerfile.splitlines() if line.startswith("COPY ")]
    assert copies[-1] == "COPY sbom/ /opt/mlship/"
    assert (context / "sbom/sbom.cdx.json").read_bytes() == files[IMAGE_FILES["cyclonedx"]]
    assert 'io.mlship.sbom.cyclonedx="/opt/mlship/sbom.cdx.json"' in dockerfile
