"""The native builder's registry credentials from a real Docker credential helper: Debian's
`docker-credential-pass` (golang-docker-credential-helpers) over a throwaway `pass` store and GnuPG key, named by
`credsStore` or `credHelpers` in a DOCKER_CONFIG folder. Native builds pull their base from and push to an
htpasswd-protected loopback registry (Debian's docker-registry) with the password it holds, fail with the 401
named when it holds a wrong one, and push to a token-auth registry with an identity token (a refresh token POSTed
as an OAuth2 grant; GET where the token service has no OAuth2). The engine's push (docker SDK) reads the same
store.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.docker import _missing, start_registry, token_auth, write_tiny_bundle
from tests.support.servers import free_port
from tests.support.token_service import TokenService

pytestmark = [pytest.mark.e2e, pytest.mark.requires_docker]

# bcrypt of "right-password" (the registry's htpasswd backend takes bcrypt only), as in test_native_build.py.
_HTPASSWD = "mlship:$2b$04$Uv.ROGhcqcei3pJjYwsoJ.wC68b26Z7g8DOC2wGyHkqB/rYPkEDsW\n"
_KEY = "mlship-test@example.invalid"


@pytest.fixture(scope="module")
def pass_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """GNUPGHOME with a passphrase-less key and a `pass` store initialised for it, for this module's helpers."""
    for program, package in (("docker-credential-pass", "golang-docker-credential-helpers"), ("pass", "pass"),
                             ("gpg", "gnupg")):
        if shutil.which(program) is None:
            _missing(f"{program} is not installed (apt-get install -y {package})")
    folder = tmp_path_factory.mktemp("pass")
    gnupg = folder / "gnupg"
    gnupg.mkdir(mode=0o700)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GNUPGHOME", str(gnupg))
        patch.setenv("PASSWORD_STORE_DIR", str(folder / "store"))
        try:
            subprocess.run(["gpg", "--batch", "--passphrase", "", "--quick-gen-key", _KEY, "default", "default",
                            "never"], check=True, capture_output=True, timeout=120)
            subprocess.run(["pass", "init", _KEY], check=True, capture_output=True, timeout=60)
            yield folder
        finally:
            subprocess.run(["gpgconf", "--kill", "gpg-agent"], capture_output=True, timeout=30, check=False)


def store(server: str, username: str, secret: str) -> None:
    """`docker-credential-pass store`, as `docker login` with credsStore "pass" does."""
    payload = json.dumps({"ServerURL": server, "Username": username, "Secret": secret})
    subprocess.run(["docker-credential-pass", "store"], input=payload, text=True, check=True, capture_output=True,
                   timeout=60)


def docker_config(folder: Path, config: dict[str, Any]) -> str:
    folder.mkdir(exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config))
    return str(folder)


@pytest.fixture(scope="module")
def protected(tmp_path_factory: pytest.TempPathFactory, base_image: str) -> Iterator[str]:
    """An htpasswd registry (mlship:right-password) holding the test base image as mlship/base:py311."""
    skopeo = shutil.which("skopeo")
    if skopeo is None:
        _missing("skopeo is not installed (apt-get install -y skopeo)")
    root = tmp_path_factory.mktemp("protected")
    (root / "htpasswd").write_text(_HTPASSWD)
    with start_registry(root, htpasswd=root / "htpasswd") as address:
        subprocess.run([str(skopeo), "copy", "--quiet", "--dest-tls-verify=false",
                        "--dest-creds", "mlship:right-password", f"docker-daemon:{base_image}",
                        f"docker://{address}/mlship/base:py311"], check=True, timeout=300)
        yield address


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_bundle(tmp_path_factory.mktemp("creds-tiny") / "tiny")


@pytest.fixture(scope="module")
def oci(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The native builder's cache, shared by the module: only the first build is cold."""
    return tmp_path_factory.mktemp("creds-oci")


def native(cli: Any, bundle: Path, base: str, cache: Path, oci: Path, docker: str, *args: str | Path,
           ) -> tuple[int, dict[str, Any], str]:
    """`mlship build --target docker --builder native` with no engine reachable and DOCKER_CONFIG=docker."""
    with pytest.MonkeyPatch.context() as patch:
        for name, value in {"DOCKER_HOST": f"tcp://127.0.0.1:{free_port()}", "MLSHIP_OCI_CACHE": str(oci),
                            "DOCKER_CONFIG": docker}.items():
            patch.setenv(name, value)
        patch.delenv("MLSHIP_REGISTRY_AUTH", raising=False)
        result = cli("build", "--target", "docker", "--builder", "native", "--bundle", bundle, "--base-image", base,
                     "--wheel-cache", cache, "--json", *args)
    data = json.loads(result.stdout) if result.stdout.strip().startswith("{") else {}
    return result.exit_code, data, result.output


def manifest_digest(address: str, repository: str, tag: str) -> str:
    basic = base64.b64encode(b"mlship:right-password").decode()
    request = urllib.request.Request(f"http://{address}/v2/{repository}/manifests/{tag}", method="HEAD",
                                     headers={"Authorization": f"Basic {basic}",
                                              "Accept": "application/vnd.oci.image.manifest.v1+json, "
                                              "application/vnd.docker.distribution.manifest.v2+json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return str(response.headers["Docker-Content-Digest"])


def test_the_password_in_a_credentials_store_pulls_and_pushes(cli: Any, tiny: Path, wheel_cache: Path, oci: Path,
                                                              protected: str, pass_store: Path,
                                                              tmp_path: Path) -> None:
    store(protected, "mlship", "right-password")
    config = docker_config(tmp_path / "docker", {"credsStore": "pass"})
    tag = f"{protected}/mlship/tiny:store"
    code, data, output = native(cli, tiny, f"{protected}/mlship/base:py311", wheel_cache, oci, config,
                                "--tag", tag, "--push")
    assert code == 0, output
    assert manifest_digest(protected, "mlship/tiny", "store") == data["native"]["pushed"][tag]
    # A wrong password in the store: the registry's 401 is named, with where the credentials came from.
    store(protected, "mlship", "wrong-password")
    code, _, output = native(cli, tiny, f"{protected}/mlship/base:py311", wheel_cache, oci, config,
                             "--tag", tag, "--push")
    assert code == 1, output
    assert f"error: registry {protected} refused GET manifest mlship/base:py311 for mlship/base (HTTP 401): the " \
        "credentials given were refused (from credential helper docker-credential-pass)" in output
    assert "wrong-password" not in output and "Traceback" not in output


def test_a_registry_s_own_credential_helper_comes_before_the_store(cli: Any, tiny: Path, wheel_cache: Path,
                                                                   oci: Path, protected: str, pass_store: Path,
                                                                   tmp_path: Path) -> None:
    store(protected, "mlship", "right-password")
    # The store names a helper that does not exist: only credHelpers' "pass" is asked for this registry.
    config = docker_config(tmp_path / "docker", {"credsStore": "absent", "credHelpers": {protected: "pass"}})
    tag = f"{protected}/mlship/tiny:helper"
    code, data, output = native(cli, tiny, f"{protected}/mlship/base:py311", wheel_cache, oci, config,
                                "--tag", tag, "--push")
    assert code == 0, output
    assert manifest_digest(protected, "mlship/tiny", "helper") == data["native"]["pushed"][tag]
    # Another registry falls to the store, whose helper is missing: named, with the fixes.
    other = f"127.0.0.1:{free_port()}"
    code, _, output = native(cli, tiny, f"{other}/mlship/base:py311", wheel_cache, oci, config)
    assert code == 1, output
    assert f"error: the credential helper docker-credential-absent for registry {other} (set in " in output
    assert "is not on PATH" in output and "install docker-credential-absent" in output
    assert "--registry-auth" in output


def test_an_identity_token_in_the_store_gets_bearer_tokens(cli: Any, tiny: Path, wheel_cache: Path, oci: Path,
                                                           protected: str, pass_store: Path,
                                                           tmp_path: Path) -> None:
    refresh = f"refresh-{uuid.uuid4().hex}"
    tokens = TokenService(tmp_path, refresh_tokens=(refresh,))
    server, realm = tokens.serve()
    (tmp_path / "reg").mkdir()
    store(protected, "mlship", "right-password")  # the base comes from the htpasswd registry, also via pass
    config = docker_config(tmp_path / "docker", {"credsStore": "pass"})
    base = f"{protected}/mlship/base:py311"
    try:
        with start_registry(tmp_path / "reg", auth=token_auth(realm, "mlship-test", "mlship-test-issuer",
                                                              tokens.bundle)) as address:
            store(address, "<token>", refresh)
            tag = f"{address}/mlship/tiny:token"
            code, data, output = native(cli, tiny, base, wheel_cache, oci, config, "--tag", tag, "--push")
            assert code == 0, output
            assert data["native"]["pushed"][tag] == data["native"]["manifest_digest"]
            assert set(tokens.requests) == {"POST refresh_token"}  # never a GET with a password
            assert {"pull", "push"} in tokens.granted("mlship/tiny")
            # A token service without OAuth2 (POST answers 404): GET with the token as basic auth, as Docker does.
            tokens.oauth, tokens.requests[:] = False, []
            code, _, output = native(cli, tiny, base, wheel_cache, oci, config, "--tag", tag, "--push")
            assert code == 0, output
            assert tokens.requests[:2] == ["POST refresh_token", "GET"]
            # A revoked refresh token: the token service's 401 is named.
            tokens.oauth = True
            store(address, "<token>", "revoked")
            code, _, output = native(cli, tiny, base, wheel_cache, oci, config, "--tag", tag, "--push")
            assert code == 1, output
            assert f"error: registry {address} refused token for repository:mlship/tiny:pull for mlship/tiny " \
                "(HTTP 401): the credentials given were refused (from credential helper docker-credential-pass)" \
                in output
            assert refresh not in output and "revoked" not in output
    finally:
        server.shutdown()
        server.server_close()


def test_an_identity_token_cannot_answer_basic_auth(cli: Any, tiny: Path, wheel_cache: Path, oci: Path,
                                                    protected: str, tmp_path: Path) -> None:
    config = docker_config(tmp_path / "docker", {"auths": {protected: {"identitytoken": "idt-secret"}}})
    code, _, output = native(cli, tiny, f"{protected}/mlship/base:py311", wheel_cache, oci, config)
    assert code == 1, output
    assert f"error: registry {protected} asks for a username and password (HTTP basic auth), but the credentials " \
        "for it" in output and "are an identity token, which only a bearer-token service takes" in output
    assert "idt-secret" not in output and f"docker login {protected}" in output


def test_the_engine_push_reads_the_same_credentials_store(protected: str, pass_store: Path, base_image: str,
                                                          tmp_path: Path) -> None:
    """The engine builder pushes with the docker SDK, which runs credsStore's helper itself (docs/DOCKER.md)."""
    import docker

    from mlship.targets._docker_engine import push_tag

    store(protected, "mlship", "right-password")
    tag = f"{protected}/mlship/engine:{uuid.uuid4().hex[:8]}"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DOCKER_CONFIG", docker_config(tmp_path / "docker", {"credsStore": "pass"}))
        client = docker.from_env()
    try:
        client.images.get(base_image).tag(tag)
        digest = push_tag(client, tag, lambda message: None)
        assert manifest_digest(protected, "mlship/engine", tag.rsplit(":", 1)[1]) == digest
    finally:
        client.api.remove_image(tag)
        client.close()
