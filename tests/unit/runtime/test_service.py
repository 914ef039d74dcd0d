"""The service file contract (mlship/runtime/_service.py): what it reads, what it refuses, what it writes."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from mlship.runtime._contract import FORMAT
from mlship.runtime._service import (
    DEFAULT_MAX_DISAGREEMENT,
    DEFAULT_WINDOW,
    Rollout,
    Service,
    ServiceError,
    ServiceModel,
    is_service_file,
    read_service,
    service_from_bundles,
    version_key,
    write_service,
)
from tests.support.services import bundle_copy

MakeModel = Callable[..., Path]


@pytest.fixture
def bundle_as(sample_bundle: Callable[[str], Path], tmp_path: Path) -> MakeModel:
    """A copy of the iris_frame sample bundle at tmp_path/dist/FOLDER whose mlship.json says `name` and `version`
    (only mlship.json is read by the service file's checks)."""

    def make(folder: str, name: str, version: str = "0.1.0", **manifest: object) -> Path:
        return bundle_copy(sample_bundle("iris_frame"), tmp_path / "dist" / folder, name, version, **manifest)

    return make


@pytest.fixture
def three(bundle_as: MakeModel) -> list[Path]:
    return [bundle_as("churn", "churn"), bundle_as("fraud-1", "fraud", "1.0.0"), bundle_as("fraud-2", "fraud", "2.0.0")]


def service_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "mlship.toml"
    path.write_text(text)
    return path


ISSUE_EXAMPLE = """\
[service]
name = "scoring"

[[models]]
bundle = "dist/churn"            # name and version come from the bundle; `name = "..."` renames

[[models]]
bundle = "dist/fraud-1"

[[models]]
bundle = "dist/fraud-2"

[routes.fraud]
default = "1.0.0"                # what an unversioned request gets; required when a name has several versions
"""


def refusal(path: Path) -> ServiceError:
    with pytest.raises(ServiceError) as caught:
        read_service(path)
    assert caught.value.hint
    return caught.value


# -- what it reads -----------------------------------------------------------------------------------------------


def test_the_issue_example_reads_exactly_as_written(tmp_path: Path, three: list[Path]) -> None:
    service = read_service(service_file(tmp_path, ISSUE_EXAMPLE))
    assert service.name == "scoring"
    assert service.source == tmp_path / "mlship.toml"
    assert [(m.name, m.version, m.bundle) for m in service.models] == [
        ("churn", "0.1.0", three[0].resolve()),
        ("fraud", "1.0.0", three[1].resolve()),
        ("fraud", "2.0.0", three[2].resolve()),
    ]
    assert dict(service.defaults) == {"churn": "0.1.0", "fraud": "1.0.0"}
    assert service.names == ("churn", "fraud")
    assert service.versions("fraud") == ("1.0.0", "2.0.0")
    assert service.model("fraud").bundle == three[1].resolve()
    assert service.model("fraud", "2.0.0").bundle == three[2].resolve()
    assert all(model.python is None for model in service.models)


def test_relative_paths_are_relative_to_the_file_not_the_working_directory(
        tmp_path: Path, three: list[Path], monkeypatch: pytest.MonkeyPatch) -> None:
    path = service_file(tmp_path, ISSUE_EXAMPLE)
    monkeypatch.chdir(three[0])
    assert read_service(path).models[0].bundle == three[0].resolve()


def test_name_renames_and_python_is_kept_per_model(tmp_path: Path, three: list[Path]) -> None:
    service = read_service(service_file(tmp_path, """
[[models]]
bundle = "dist/fraud-1"
name = "fraud-legacy"
python = "envs/old/bin/python"
workers = 3

[[models]]
bundle = "dist/fraud-2"
python = "python3.11"
"""))
    assert service.name == "mlship"
    legacy, current = service.models
    assert (legacy.name, legacy.version, legacy.python) == ("fraud-legacy", "1.0.0", str(tmp_path / "envs/old/bin/python"))
    assert (current.name, current.python) == ("fraud", "python3.11")
    assert (legacy.workers, current.workers) == (3, None)
    assert dict(service.defaults) == {"fraud-legacy": "1.0.0", "fraud": "2.0.0"}


def test_model_lookup_names_what_exists(tmp_path: Path, three: list[Path]) -> None:
    service = read_service(service_file(tmp_path, ISSUE_EXAMPLE))
    with pytest.raises(LookupError, match="no model named 'nope'; this service serves 'churn', 'fraud'"):
        service.model("nope")
    with pytest.raises(LookupError, match="model 'fraud' has no version '3.0.0'; it has '1.0.0', '2.0.0'"):
        service.model("fraud", "3.0.0")


def test_bundles_on_the_command_line_default_to_their_highest_version(three: list[Path], bundle_as: MakeModel) -> None:
    ten = bundle_as("fraud-10", "fraud", "10.0.0")
    service = service_from_bundles([*three, ten])
    assert service.name == "mlship" and service.source is None
    assert dict(service.defaults) == {"churn": "0.1.0", "fraud": "10.0.0"}
    assert dict(service_from_bundles(three, defaults={"fraud": "1.0.0"}).defaults)["fraud"] == "1.0.0"
    assert version_key("1.10.0") > version_key("1.9.0")
    with pytest.raises(ServiceError, match=r"the command line: --default fraud=3.0.0, but model 'fraud' has no such "
                       r"version \(it has '1.0.0', '2.0.0'\)"):
        service_from_bundles(three, defaults={"fraud": "3.0.0"})
    with pytest.raises(ServiceError, match="the command line: --default frod=1 names no served model"):
        service_from_bundles(three, defaults={"frod": "1"})


def test_is_service_file(tmp_path: Path, three: list[Path]) -> None:
    assert is_service_file(service_file(tmp_path, ISSUE_EXAMPLE))
    assert is_service_file(tmp_path / "missing.toml")
    assert not is_service_file(three[0])


# -- what it refuses: each names the thing, and says what to do ----------------------------------------------------


def test_two_bundles_with_the_same_name_and_version(tmp_path: Path, three: list[Path], bundle_as: MakeModel) -> None:
    bundle_as("fraud-copy", "fraud", "1.0.0")
    error = refusal(service_file(tmp_path, ISSUE_EXAMPLE + '\n[[models]]\nbundle = "dist/fraud-copy"\n'))
    assert "two bundles serve model 'fraud' version '1.0.0'" in error.message
    assert str(three[1].resolve()) in error.message and "fraud-copy" in error.message
    assert "rename one" in error.hint
    with pytest.raises(ServiceError, match="two bundles serve model 'fraud' version '1.0.0'"):
        service_from_bundles([three[1], three[1]])


def test_a_missing_bundle(tmp_path: Path, three: list[Path]) -> None:
    error = refusal(service_file(tmp_path, ISSUE_EXAMPLE.replace("dist/fraud-2", "dist/fraud-3")))
    assert f"[[models]] #3: the bundle {tmp_path / 'dist/fraud-3'} does not exist" in error.message
    assert "mlship package" in error.hint


def test_not_a_bundle_directory(tmp_path: Path, three: list[Path]) -> None:
    (tmp_path / "dist" / "empty").mkdir()
    error = refusal(service_file(tmp_path, '[[models]]\nbundle = "dist/empty"\n'))
    assert f"{tmp_path / 'dist/empty'} is not a bundle: it has no mlship.json" in error.message
    with pytest.raises(ServiceError, match="is not a bundle"):
        service_from_bundles([tmp_path / "dist" / "empty"])


@pytest.mark.parametrize(("text", "message"), [
    ('[service]\nname = "s"\nport = 8080\n' + ISSUE_EXAMPLE.split("\n", 2)[2], "unknown key 'port' in [service]"),
    (ISSUE_EXAMPLE + "[[models]]\nbundel = 'dist/churn'\n", "unknown key 'bundel' in [[models]] #4"),
    (ISSUE_EXAMPLE + 'weight = 3\nsplit = 2\n', "unknown keys 'weight', 'split' in [routes.fraud]"),
    (ISSUE_EXAMPLE + "[server]\nworkers = 2\n", "unknown key 'server' in the top level"),
])
def test_an_unknown_key(tmp_path: Path, three: list[Path], text: str, message: str) -> None:
    error = refusal(service_file(tmp_path, text))
    assert message in error.message
    assert "takes" in error.hint and "check the spelling" in error.hint


def test_a_default_naming_a_version_that_does_not_exist(tmp_path: Path, three: list[Path]) -> None:
    error = refusal(service_file(tmp_path, ISSUE_EXAMPLE.replace('default = "1.0.0"', 'default = "1.5.0"')))
    assert ("[routes.fraud] default = '1.5.0', but model 'fraud' has no such version (it has '1.0.0', '2.0.0')"
            in error.message)
    assert "set default to one of '1.0.0', '2.0.0'" in error.hint


def test_two_versions_of_a_name_and_no_default(tmp_path: Path, three: list[Path]) -> None:
    error = refusal(service_file(tmp_path, ISSUE_EXAMPLE.split("[routes.fraud]")[0]))
    assert "model 'fraud' has versions '1.0.0', '2.0.0' and no default" in error.message
    assert '[routes.fraud] default = "2.0.0"' in error.hint


def test_a_route_for_a_model_that_is_not_served(tmp_path: Path, three: list[Path]) -> None:
    error = refusal(service_file(tmp_path, ISSUE_EXAMPLE + '\n[routes.frod]\ndefault = "1.0.0"\n'))
    assert "[routes.frod] names no served model" in error.message
    assert "'churn', 'fraud'" in error.hint


def test_a_bundle_written_by_a_newer_bundle_format(tmp_path: Path, bundle_as: MakeModel) -> None:
    bundle_as("future", "future", format=FORMAT + 1, mlship_version="9.0.0")
    error = refusal(service_file(tmp_path, '[[models]]\nbundle = "dist/future"\n'))
    assert f"is in bundle format {FORMAT + 1}, written by mlship 9.0.0" in error.message
    assert "pip install -U mlship" in error.hint


def test_a_damaged_manifest(tmp_path: Path, bundle_as: MakeModel) -> None:
    bundle_as("broken", "broken", methods=[])
    error = refusal(service_file(tmp_path, '[[models]]\nbundle = "dist/broken"\n'))
    assert "'methods' must list at least one method" in error.message
    assert "package the notebook again" in error.hint


@pytest.mark.parametrize(("text", "message"), [
    ("", "lists no models"),
    ("[[models]]\nname = 'x'\n", "[[models]] #1 has no 'bundle'"),
    ("[[models]]\nbundle = 3\n", "'bundle' in [[models]] #1 must be a non-empty string, got 3"),
    ("[[models]]\nbundle = 'dist/churn'\nworkers = 0\n", "'workers' in [[models]] #1 must be a positive integer"),
    ("[[models]]\nbundle = 'dist/churn'\nworkers = '2'\n", "'workers' in [[models]] #1 must be a positive integer"),
    ("models = 'dist/churn'\n", "'models' must be an array of tables"),
    ("[service]\nname = 'a b'\n[[models]]\nbundle = 'dist/churn'\n", "the service name 'a b' is not a valid name"),
    ("[[models]]\nbundle = 'dist/churn'\nname = 'a/b'\n", "the model name 'a/b'"),
    ("[[models]\nbundle = 'dist/churn'\n", "is not valid TOML"),
])
def test_malformed_files(tmp_path: Path, three: list[Path], text: str, message: str) -> None:
    assert message in refusal(service_file(tmp_path, text)).message


def test_a_missing_service_file(tmp_path: Path) -> None:
    error = refusal(tmp_path / "mlship.toml")
    assert f"the service file {tmp_path / 'mlship.toml'} does not exist" in error.message


# -- what it writes ----------------------------------------------------------------------------------------------


def test_write_service_round_trips(tmp_path: Path, three: list[Path]) -> None:
    service = read_service(service_file(tmp_path, ISSUE_EXAMPLE.replace(
        'bundle = "dist/churn"', 'bundle = "dist/churn"\nname = "churn-renamed"\npython = "envs/a \\"q\\" \\\\ \\u007f é/bin/python"')
        .replace('bundle = "dist/fraud-2"', 'bundle = "dist/fraud-2"\npython = "python3"\nworkers = 2')))
    written = tmp_path / "out" / "mlship.toml"
    written.parent.mkdir()
    write_service(service, written)
    again = read_service(written)
    assert (again.name, again.models, again.defaults) == (service.name, service.models, service.defaults)
    assert again.models[0].name == "churn-renamed" and again.models[2].workers == 2
    assert again.models[0].python == str(tmp_path / 'envs/a "q" \\ \x7f é/bin/python')
    assert list(written.parent.iterdir()) == [written]


def test_write_service_keeps_paths_under_its_folder_relative(tmp_path: Path, three: list[Path]) -> None:
    service = Service("scoring", (ServiceModel("churn", "0.1.0", three[0], str(tmp_path / "envs/a/bin/python")),
                                  ServiceModel("x", "1", Path("/app/models/x"), "/opt/env/bin/python")),
                      {"churn": "0.1.0", "x": "1"})
    path = tmp_path / "mlship.toml"
    write_service(service, path)
    text = path.read_text()
    assert 'bundle = "dist/churn"' in text and 'python = "envs/a/bin/python"' in text
    assert 'bundle = "/app/models/x"' in text and 'python = "/opt/env/bin/python"' in text
    assert "[routes" not in text  # one version each: nothing to choose


def test_write_service_writes_relative_paths_as_given(tmp_path: Path, three: list[Path]) -> None:
    """What a target writes into an artifact whose location is chosen at install time (the onprem tarball)."""
    service = Service("scoring", (ServiceModel("churn", "0.1.0", Path("models/churn-0.1.0"), "../envs/env1/bin/python"),),
                      {"churn": "0.1.0"})
    path = tmp_path / "app" / "mlship.toml"
    path.parent.mkdir()
    write_service(service, path)
    assert 'bundle = "models/churn-0.1.0"' in path.read_text()
    assert 'python = "../envs/env1/bin/python"' in path.read_text()
    shutil.copytree(three[0], tmp_path / "app" / "models" / "churn-0.1.0")
    model = read_service(path).models[0]
    assert (model.bundle, model.python) == (tmp_path / "app/models/churn-0.1.0", str(tmp_path / "envs/env1/bin/python"))


# -- shadow and canary ([routes.NAME] shadow / canary) ------------------------------------------------------------


def test_shadow_and_canary_read_exactly_as_the_issue_writes_them(tmp_path: Path, three: list[Path]) -> None:
    shadow = read_service(service_file(tmp_path, ISSUE_EXAMPLE + 'shadow = { version = "2.0.0", percent = 100 }\n'))
    assert shadow.rollouts == {"fraud": Rollout("shadow", "2.0.0", 100.0)}
    assert shadow.rollouts["fraud"].max_disagreement == DEFAULT_MAX_DISAGREEMENT
    canary = read_service(service_file(tmp_path, ISSUE_EXAMPLE +
                                       'canary = { version = "2.0.0", percent = 10, sticky = "X-User-ID" }\n'))
    assert canary.rollouts == {"fraud": Rollout("canary", "2.0.0", 10.0, "X-User-ID")}
    assert canary.rollouts["fraud"].window == DEFAULT_WINDOW
    guarded = read_service(service_file(tmp_path, ISSUE_EXAMPLE + 'shadow = { version = "2.0.0", percent = 12.5, '
                                        "max_disagreement = 0.2, max_error_rate = 0, window = 50 }\n"))
    assert guarded.rollouts["fraud"] == Rollout("shadow", "2.0.0", 12.5, None, 0.2, 0.0, 50)
    assert read_service(service_file(tmp_path, ISSUE_EXAMPLE)).rollouts == {}
    # After `mlship promote` of the candidate the file still reads; the front then splits nothing.
    promoted = ISSUE_EXAMPLE.replace('default = "1.0.0"', 'default = "2.0.0"')
    assert read_service(service_file(tmp_path, promoted + 'canary = { version = "2.0.0", percent = 10 }\n')).rollouts


@pytest.mark.parametrize(("line", "message"), [
    ('shadow = { version = "2.0.0" }\ncanary = { version = "2.0.0", percent = 5 }', "both 'shadow' and 'canary'"),
    ('shadow = "2.0.0"', "shadow must be an inline table"),
    ('canary = { percent = 10 }', "[routes.fraud] canary has no 'version'"),
    ('canary = { version = "3.0.0", percent = 10 }', "names version '3.0.0', but model 'fraud' has no such version"),
    ('canary = { version = "2.0.0" }', "canary has no 'percent'"),
    ('canary = { version = "2.0.0", percent = 101 }', "'percent' in [routes.fraud] canary must be a number from 0 to 100"),
    ('canary = { version = "2.0.0", percent = -1 }', "must be a number from 0 to 100, got -1"),
    ('canary = { version = "2.0.0", percent = "10" }', "must be a number from 0 to 100, got '10'"),
    ('canary = { version = "2.0.0", percent = true }', "must be a number from 0 to 100, got True"),
    ('canary = { version = "2.0.0", percent = 10, sticky = "X User" }', "must be a request header name"),
    ('canary = { version = "2.0.0", percent = 10, sticky = 3 }', "must be a request header name, got 3"),
    ('shadow = { version = "2.0.0", sticky = "X-User-ID" }', "only a canary is sticky"),
    ('shadow = { version = "2.0.0", max_disagreement = 1.5 }', "'max_disagreement' in [routes.fraud] shadow must be a "
                                                               "number from 0 to 1"),
    ('canary = { version = "2.0.0", percent = 1, max_error_rate = -0.1 }', "'max_error_rate'"),
    ('shadow = { version = "2.0.0", window = 0 }', "'window' in [routes.fraud] shadow must be a positive integer"),
    ('shadow = { version = "2.0.0", window = 2.5 }', "must be a positive integer, got 2.5"),
    ('shadow = { version = "2.0.0", weight = 2 }', "unknown key 'weight' in [routes.fraud] shadow"),
])
def test_shadow_and_canary_refusals(tmp_path: Path, three: list[Path], line: str, message: str) -> None:
    error = refusal(service_file(tmp_path, ISSUE_EXAMPLE + line + "\n"))
    assert message in error.message, error.message


@pytest.mark.parametrize("line", [
    'shadow = { version = "2.0.0", percent = 100 }',
    'shadow = { version = "2.0.0", percent = 33.333333333, max_disagreement = 0.125, window = 7 }',
    'canary = { version = "2.0.0", percent = 10, sticky = "X-User-ID", max_error_rate = 0.0 }',
    'canary = { version = "2.0.0", percent = 0 }',
])
def test_write_service_round_trips_shadow_and_canary(tmp_path: Path, three: list[Path], line: str) -> None:
    service = read_service(service_file(tmp_path, ISSUE_EXAMPLE + line + "\n"))
    written = tmp_path / "mlship-again.toml"
    write_service(service, written)
    again = read_service(written)
    assert again.rollouts == service.rollouts and again.defaults == service.defaults
