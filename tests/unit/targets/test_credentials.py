"""Credentials as Docker finds them: a real executable helper script on PATH (the docker-credential-helpers
protocol), credHelpers before credsStore before auths, Docker Hub's key, identity tokens, and errors that name the
helper and the registry but never a secret."""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path

import pytest

from mlship.errors import BuildError
from mlship.targets._credentials import HUB_KEY, find_credentials

# A helper as docker-credential-pass behaves: `get` reads the server address on stdin and answers JSON; an address
# it has nothing for answers "credentials not found in native keychain" with exit 1. It logs what it was asked.
_HELPER = """#!/bin/sh
read -r server
echo "$0 $1 $server" >> "{log}"
case "$server" in
  registry.local:5000) printf '{{"ServerURL":"%s","Username":"{user}","Secret":"s3cret-{user}"}}\\n' "$server" ;;
  {hub}) printf '{{"ServerURL":"%s","Username":"<token>","Secret":"refresh-123"}}\\n' "$server" ;;
  empty.local) printf '{{"ServerURL":"","Username":"","Secret":""}}\\n' ;;
  locked.local) echo "gpg: decryption failed: No secret key" >&2; exit 2 ;;
  garbage.local) echo "s3cret-in-garbage" ;;
  *) echo "credentials not found in native keychain"; exit 1 ;;
esac
"""


@pytest.fixture
def docker_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A DOCKER_CONFIG folder, and two helpers (`docker-credential-store` and `-other`) in a folder on PATH."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("store", "other"):
        helper = bin_dir / f"docker-credential-{name}"
        helper.write_text(_HELPER.format(log=tmp_path / "asked.log", user=f"user-{name}", hub=HUB_KEY))
        helper.chmod(helper.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    folder = tmp_path / "docker"
    folder.mkdir()
    monkeypatch.setenv("DOCKER_CONFIG", str(folder))
    return folder


def write(folder: Path, config: dict[str, object]) -> None:
    (folder / "config.json").write_text(json.dumps(config))


def asked(folder: Path) -> list[str]:
    return [line.split(" ", 1)[1] for line in (folder.parent / "asked.log").read_text().splitlines()]


def test_the_credentials_store_answers_for_every_registry(docker_config: Path) -> None:
    auth = base64.b64encode(b"from-auths:pw").decode()
    write(docker_config, {"credsStore": "store", "auths": {"registry.local:5000": {"auth": auth}}})
    found = find_credentials("registry.local:5000")
    assert found is not None and (found.username, found.password) == ("user-store", "s3cret-user-store")
    assert found.source == "credential helper docker-credential-store"
    # With a store configured, auths is not read (Docker's order): the store has nothing -> anonymous.
    assert find_credentials("unknown.local") is None
    assert asked(docker_config) == ["get registry.local:5000", "get unknown.local"]


def test_a_registry_s_own_helper_comes_before_the_store(docker_config: Path) -> None:
    write(docker_config, {"credsStore": "store", "credHelpers": {"registry.local:5000": "other"}})
    found = find_credentials("registry.local:5000")
    assert found is not None and found.username == "user-other"
    assert find_credentials("empty.local") is None  # empty credentials are anonymous too
    assert [line.split("/")[-1] for line in (docker_config.parent / "asked.log").read_text().splitlines()] == \
        ["docker-credential-other get registry.local:5000", "docker-credential-store get empty.local"]


def test_docker_hub_is_asked_for_by_its_index_url_and_token_username_is_an_identity_token(
        docker_config: Path) -> None:
    write(docker_config, {"credHelpers": {HUB_KEY: "store"}})
    for name in ("docker.io", "registry-1.docker.io"):
        found = find_credentials(name)
        assert found is not None and (found.username, found.identity_token) == ("", "refresh-123")
        assert found.basic is None
    assert asked(docker_config) == [f"get {HUB_KEY}"] * 2
    assert find_credentials("registry.local:5000") is None  # no helper for it, no store, no auths


def test_auths_holds_passwords_and_identity_tokens(docker_config: Path) -> None:
    auth = base64.b64encode(b"me:pw:with-colon").decode()
    write(docker_config, {"auths": {"https://registry.local:5000/v1/": {"auth": auth},
                                    "https://index.docker.io/v1/": {"auth": "", "identitytoken": "idt"}}})
    found = find_credentials("registry.local:5000")
    assert found is not None and (found.username, found.password) == ("me", "pw:with-colon")
    hub = find_credentials("docker.io")
    assert hub is not None and hub.identity_token == "idt"
    given = find_credentials("registry.local:5000", "u:p")
    assert given is not None and (given.username, given.password, given.source) == ("u", "p", "--registry-auth")


def test_a_missing_helper_names_the_program_and_the_fixes(docker_config: Path) -> None:
    write(docker_config, {"credsStore": "desktop"})
    with pytest.raises(BuildError) as caught:
        find_credentials("registry.local:5000")
    message = str(caught.value)
    assert "the credential helper docker-credential-desktop for registry registry.local:5000" in message
    assert f"(set in {docker_config / 'config.json'}) is not on PATH" in message
    hint = caught.value.hint or ""
    assert "install docker-credential-desktop" in hint and "docker login registry.local:5000" in hint
    assert "--registry-auth" in hint


def test_a_failing_helper_is_an_error_that_shows_no_secret(docker_config: Path) -> None:
    write(docker_config, {"credsStore": "store"})
    with pytest.raises(BuildError, match=r"the credential helper docker-credential-store failed for registry "
                       r"locked.local \(exit 2\): gpg: decryption failed: No secret key"):
        find_credentials("locked.local")
    with pytest.raises(BuildError, match="answered registry garbage.local with something other than JSON") as caught:
        find_credentials("garbage.local")
    assert "s3cret" not in str(caught.value) and "s3cret" not in (caught.value.hint or "")
    found = find_credentials("registry.local:5000")
    assert "s3cret" not in repr(found)


def test_a_broken_config_file_is_named(docker_config: Path) -> None:
    (docker_config / "config.json").write_text("{\"auths\": ")
    with pytest.raises(BuildError, match=r"config.json is not valid JSON"):
        find_credentials("registry.local:5000")
    (docker_config / "config.json").unlink()
    assert find_credentials("registry.local:5000") is None
