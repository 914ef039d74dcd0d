"""Registry credentials for the native builder, found as Docker finds them (docs/DOCKER.md "Credentials").

--registry-auth / MLSHIP_REGISTRY_AUTH (USER:PASSWORD) first; else the Docker config file
($DOCKER_CONFIG/config.json, by default ~/.docker/config.json) in Docker's order: the registry's entry in
`credHelpers`, else `credsStore`, else its entry in `auths`. A credential helper is the program
`docker-credential-NAME` on PATH (the docker-credential-helpers protocol): `get` with the server address on stdin
answers {"ServerURL", "Username", "Secret"} on stdout. The username "<token>" marks an identity token (a refresh
token for the registry's OAuth2 token service), as does `identitytoken` in `auths`.

Secrets never appear in messages: errors name the helper, the registry and the fix.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import BuildError

TOKEN_USERNAME = "<token>"  # what helpers and `docker login` store as the username of an identity token
HUB_KEY = "https://index.docker.io/v1/"  # Docker Hub's key in config.json and its helpers' server address
_HUB_NAMES = ("docker.io", "index.docker.io", "registry-1.docker.io")
_HELPER_TIMEOUT = 60
_FIXES = ("run `docker login {registry}` again, install the helper, or pass --registry-auth USER:PASSWORD "
          "(better: the env var MLSHIP_REGISTRY_AUTH)")


@dataclass(frozen=True)
class Credentials:
    username: str = ""
    password: str = ""
    identity_token: str = ""
    source: str = ""  # where they came from, for messages: "--registry-auth", "credential helper ..."

    @property
    def basic(self) -> str | None:
        if not self.username:
            return None
        return "Basic " + base64.b64encode(f"{self.username}:{self.password}".encode()).decode()

    def __repr__(self) -> str:  # never show the secret, not even in a traceback or a debugger
        return f"Credentials(username={self.username!r}, source={self.source!r})"


def config_key(registry: str) -> str:
    """The registry's key in config.json and the server address its helper is asked for (Docker Hub's is a URL)."""
    return HUB_KEY if registry in _HUB_NAMES else registry


def find_credentials(registry: str, given: str | None = None) -> Credentials | None:
    """USER:PASSWORD given on the command line, else what the Docker config file holds for the registry; None
    means anonymous."""
    if given:
        user, sep, password = given.partition(":")
        if not sep:
            raise BuildError("--registry-auth must be USER:PASSWORD", hint="or log in with `docker login`")
        return Credentials(user, password, source="--registry-auth")
    path = Path(os.environ.get("DOCKER_CONFIG") or Path.home() / ".docker") / "config.json"
    config = _read_config(path)
    key = config_key(registry)
    helpers = config.get("credHelpers") or {}
    helper = helpers.get(key) or config.get("credsStore")
    if helper:
        return from_helper(str(helper), key, registry, path)
    return _from_auths(config.get("auths") or {}, key, path)


def _read_config(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise BuildError(f"cannot read the Docker config file {path}: {exc.strerror}",
                         hint="fix its permissions, or point DOCKER_CONFIG at another folder") from None
    try:
        config = json.loads(text) if text.strip() else {}
    except json.JSONDecodeError as exc:
        raise BuildError(f"the Docker config file {path} is not valid JSON ({exc.msg}, line {exc.lineno})",
                         hint="fix it (`docker login` rewrites it), or point DOCKER_CONFIG at another folder") from None
    if not isinstance(config, dict):
        raise BuildError(f"the Docker config file {path} is not a JSON object", hint="fix it or remove it")
    return config


def _from_auths(auths: dict[str, Any], key: str, path: Path) -> Credentials | None:
    # Docker matches keys written with a scheme or a path too (old `docker login`s wrote https://HOST/v1/).
    for name, entry in auths.items():
        if name != key and _hostname(name) != _hostname(key) and not (key == HUB_KEY and name in _HUB_NAMES):
            continue
        if not isinstance(entry, dict):
            continue
        source = f"{path} auths[{name!r}]"
        if entry.get("identitytoken"):
            return Credentials(identity_token=str(entry["identitytoken"]), source=source)
        if entry.get("auth"):
            try:
                user, _, password = base64.b64decode(str(entry["auth"])).decode().partition(":")
            except ValueError:
                raise BuildError(f"the `auth` of {name} in {path} is not base64 of USER:PASSWORD",
                                 hint=f"run `docker login {key}` again") from None
            return Credentials(user, password, source=source)
        if entry.get("username"):
            return Credentials(str(entry["username"]), str(entry.get("password", "")), source=source)
    return None


def _hostname(name: str) -> str:
    return name.removeprefix("https://").removeprefix("http://").split("/", 1)[0]


def from_helper(name: str, key: str, registry: str, config: Path | None = None) -> Credentials | None:
    """Ask `docker-credential-NAME get` for KEY's credentials; None when it has none (anonymous)."""
    program = f"docker-credential-{name}"
    where = f" (set in {config})" if config else ""
    found = shutil.which(program)
    if found is None:
        raise BuildError(f"the credential helper {program} for registry {registry}{where} is not on PATH",
                         hint=f"install {program}, or remove it from the config file; or " + _FIXES.format(
                             registry=registry))
    try:
        proc = subprocess.run([found, "get"], input=key, capture_output=True, text=True, timeout=_HELPER_TIMEOUT,
                              check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BuildError(f"the credential helper {program} for registry {registry} did not answer: {exc}",
                         hint=_FIXES.format(registry=registry)) from None
    if proc.returncode != 0:
        said = (proc.stdout.strip() or proc.stderr.strip()).splitlines()
        if said and "credentials not found" in said[0].lower():
            return None
        detail = f": {said[0][:200]}" if said else ""
        raise BuildError(f"the credential helper {program} failed for registry {registry} (exit "
                         f"{proc.returncode}){detail}", hint=_FIXES.format(registry=registry))
    try:
        answer = json.loads(proc.stdout)
        username, secret = str(answer.get("Username") or ""), str(answer.get("Secret") or "")
    except (ValueError, AttributeError):
        raise BuildError(f"the credential helper {program} answered registry {registry} with something other "
                         "than JSON {ServerURL, Username, Secret}", hint=_FIXES.format(registry=registry)) from None
    if not username and not secret:  # some helpers answer empty credentials rather than "not found"
        return None
    source = f"credential helper {program}"
    if username == TOKEN_USERNAME:
        return Credentials(identity_token=secret, source=source)
    return Credentials(username, secret, source=source)
