"""A small client of the registry HTTP API (the OCI distribution spec): pull manifests and blobs by digest, check
which blobs a repository has, upload the rest, put a manifest (docs/DOCKER.md "The native builder").

Hand-written on http.client, deliberately small: python-dxf does the same well but refuses to send credentials
over plain HTTP, even to a loopback registry, and oras-py aims at artifacts; neither names the registry, the
HTTP status and the fix in its errors. Tested against Debian's docker-registry (tests/e2e/test_native_build.py).

Auth, as Docker does it: anonymous first; on a 401 the WWW-Authenticate challenge says Basic (send the
credentials) or Bearer (fetch a token from its realm with the credentials, for the challenge's scope; an identity
token is a refresh token, POSTed as an OAuth2 refresh_token grant). Credentials come from --registry-auth,
MLSHIP_REGISTRY_AUTH or the Docker config file and its credential helpers (_credentials.py). Loopback registries
(and those named in MLSHIP_INSECURE_REGISTRIES) speak HTTP.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

from ..errors import BuildError
from ._credentials import TOKEN_USERNAME, Credentials
from ._credentials import find_credentials as find_credentials  # callers import it from here
from ._oci import DOCKER_LIST, DOCKER_MANIFEST, INDEX_TYPE, MANIFEST_TYPE, BlobStore, DigestMismatch

DOCKER_HUB = "registry-1.docker.io"
MANIFEST_TYPES = (MANIFEST_TYPE, INDEX_TYPE, DOCKER_MANIFEST, DOCKER_LIST)
_TIMEOUT = 60
_CHUNK = 1 << 20
_AUTH_HINT = ("log in with `docker login {registry}` (mlship reads ~/.docker/config.json and its credential "
              "helpers), or pass --registry-auth USER:PASSWORD (better: the env var MLSHIP_REGISTRY_AUTH)")
_OAUTH_FALLBACK = (400, 401, 404, 405)  # token services without OAuth2 POST (the spec: 404; GCR, ACR, Artifactory)


@dataclass(frozen=True)
class Reference:
    """REGISTRY/REPOSITORY[:TAG][@DIGEST], normalized as Docker does (docker.io, library/)."""

    registry: str
    repository: str
    tag: str = "latest"
    digest: str | None = None

    @property
    def full(self) -> str:
        return f"{self.registry}/{self.repository}:{self.tag}"

    @property
    def reference(self) -> str:
        """What the manifest is asked for by: the digest when there is one."""
        return self.digest or self.tag


def split_reference(text: str) -> Reference:
    name, _, digest = text.partition("@")
    first, _, rest = name.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        registry, path = first, rest
    else:
        registry, path = "docker.io", name
    tag = "latest"
    if ":" in path.rsplit("/", 1)[-1]:
        path, tag = path.rsplit(":", 1)
    if registry == "docker.io" and "/" not in path:
        path = f"library/{path}"
    if not re.fullmatch(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*", path):
        raise BuildError(f"{text!r} is not a valid image reference",
                         hint="use REGISTRY[:PORT]/NAME[:TAG] with a lowercase NAME, e.g. registry.local:5000/iris:1.2")
    return Reference(registry, path, tag, digest or None)


def _api_host(registry: str) -> str:
    return DOCKER_HUB if registry in ("docker.io", "index.docker.io") else registry


def _insecure(host: str) -> bool:
    hostname = urllib.parse.urlsplit(f"//{host}").hostname or host
    extra = {h.strip() for h in os.environ.get("MLSHIP_INSECURE_REGISTRIES", "").split(",") if h.strip()}
    return hostname in ("localhost", "::1") or hostname.startswith("127.") or host in extra or hostname in extra


@dataclass
class _Response:
    status: int
    headers: http.client.HTTPMessage
    body: bytes


@dataclass
class Counters:
    """What a push did: blobs it found in the registry, blobs it uploaded (bytes), manifests it put."""

    existing: list[str] = field(default_factory=list)
    uploaded: list[str] = field(default_factory=list)
    mounted: list[str] = field(default_factory=list)
    uploaded_bytes: int = 0


class RegistryClient:
    """One repository of one registry. Every failure is a BuildError naming the registry and the HTTP status."""

    def __init__(self, ref: Reference, credentials: Credentials | None = None) -> None:
        self.ref = ref
        self.host = _api_host(ref.registry)
        self.scheme = "http" if _insecure(self.host) else "https"
        self.credentials = credentials
        self.authorization: str | None = None
        self.counters = Counters()

    # -- pulling ---------------------------------------------------------------------------------------------

    def get_manifest(self, reference: str) -> tuple[bytes, str, str]:
        """(bytes, media type, digest) of a manifest or index; by digest, the bytes are checked against it."""
        response = self._request("GET", f"manifests/{reference}", accept=", ".join(MANIFEST_TYPES),
                                 action="pull")
        if response.status == 404:
            raise BuildError(f"registry {self.host} has no image {self.ref.repository}:{reference} (HTTP 404)",
                             hint="check the repository and tag (or digest) of --base-image")
        self._check(response, f"GET manifest {self.ref.repository}:{reference}", action="pull")
        digest = "sha256:" + hashlib.sha256(response.body).hexdigest()
        if reference.startswith("sha256:") and digest != reference:
            raise DigestMismatch(reference, digest, f" (manifest of {self.ref.repository} from {self.host})")
        media_type = response.headers.get("Content-Type", "").split(";")[0].strip()
        if media_type not in MANIFEST_TYPES:
            media_type = str(json.loads(response.body).get("mediaType") or MANIFEST_TYPE)
        return response.body, media_type, digest

    def fetch_blob(self, digest: str, store: BlobStore) -> None:
        """Download a blob into the store unless it is there; DigestMismatch if its bytes are not `digest`."""
        if store.has(digest):
            return
        path = f"/v2/{self.ref.repository}/blobs/{digest}"
        connection, response = self._open("GET", path)
        if response.status == 401:
            response.read()
            connection.close()
            if not self._authorize(response, "pull"):
                raise self._refused(401, f"GET blob {digest}")
            connection, response = self._open("GET", path)
        try:
            if response.status in (301, 302, 303, 307, 308):  # storage elsewhere (S3, a CDN): no credentials there
                location = urllib.parse.urljoin(f"{self.scheme}://{self.host}{path}", response.getheader("Location", ""))
                response.read()
                connection.close()
                connection, response = _open_url("GET", location, {})
            if response.status != 200:
                body = response.read()
                self._check(_Response(response.status, response.headers, body), f"GET blob {digest}", action="pull")
            with store.writer() as out:
                while chunk := response.read(_CHUNK):
                    out.write(chunk)
                try:
                    out.commit(digest)
                except DigestMismatch as exc:
                    raise DigestMismatch(digest, exc.actual, f" (from {self.host}/{self.ref.repository})") from None
        finally:
            connection.close()

    # -- pushing ---------------------------------------------------------------------------------------------

    def has_blob(self, digest: str) -> bool:
        response = self._request("HEAD", f"blobs/{digest}", action="push")
        if response.status == 404:
            return False
        self._check(response, f"HEAD blob {digest}", action="push")
        return True

    def push_blob(self, store: BlobStore, digest: str, *, mount_from: str | None = None) -> None:
        """Upload one blob unless the repository has it (or it can be mounted from `mount_from` there)."""
        if self.has_blob(digest):
            self.counters.existing.append(digest)
            return
        query = f"?mount={digest}&from={urllib.parse.quote(mount_from)}" if mount_from else ""
        started = self._request("POST", f"blobs/uploads/{query}", action="push")
        if started.status == 201:
            self.counters.mounted.append(digest)
            return
        self._check(started, "POST blob upload", action="push", expect=(202,))
        location = urllib.parse.urljoin(f"{self.scheme}://{self.host}/v2/{self.ref.repository}/blobs/uploads/",
                                        started.headers.get("Location", ""))
        location += ("&" if "?" in location else "?") + urllib.parse.urlencode({"digest": digest})
        path = store.path(digest)
        size = path.stat().st_size
        with path.open("rb") as body:
            done = self._request("PUT", location, body=body, length=size, action="push",
                                 content_type="application/octet-stream")
        self._check(done, f"PUT blob {digest}", action="push", expect=(201,))
        self.counters.uploaded.append(digest)
        self.counters.uploaded_bytes += size

    def put_manifest(self, manifest: bytes, media_type: str, tag: str) -> str:
        response = self._request("PUT", f"manifests/{tag}", body=manifest, length=len(manifest), action="push",
                                 content_type=media_type)
        self._check(response, f"PUT manifest {self.ref.repository}:{tag}", action="push", expect=(201,))
        digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
        said = response.headers.get("Docker-Content-Digest")
        if said and said != digest:
            raise BuildError(f"registry {self.host} stored the manifest of {self.ref.repository}:{tag} as {said}, "
                             f"not {digest}", hint="the registry rewrote the manifest; use another registry")
        return digest

    # -- HTTP ------------------------------------------------------------------------------------------------

    def _request(self, method: str, path: str, *, action: str, accept: str | None = None, body: Any = None,
                 length: int | None = None, content_type: str | None = None) -> _Response:
        target = path if path.startswith(("http://", "https://")) else f"/v2/{self.ref.repository}/{path}"
        headers = {"Accept": accept} if accept else {}
        if content_type:
            headers["Content-Type"] = content_type
        if length is not None:
            headers["Content-Length"] = str(length)
        for attempt in range(2):
            position = body.tell() if hasattr(body, "tell") else None
            connection, response = self._open(method, target, headers=headers, body=body)
            try:
                data = response.read()
            finally:
                connection.close()
            if response.status != 401 or attempt or not self._authorize(response, action):
                return _Response(response.status, response.headers, data)
            if position is not None:
                body.seek(position)
        raise AssertionError("unreachable")

    def _open(self, method: str, target: str, *, headers: dict[str, str] | None = None,
              body: Any = None) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        url = target if target.startswith(("http://", "https://")) else f"{self.scheme}://{self.host}{target}"
        sent = dict(headers or {})
        if self.authorization and urllib.parse.urlsplit(url).netloc == self.host:
            sent["Authorization"] = self.authorization
        try:
            connection, response = _open_url(method, url, sent, body)
        except (OSError, http.client.HTTPException) as exc:
            raise self._unreachable(exc) from None
        return connection, response

    def _authorize(self, challenge: http.client.HTTPResponse, action: str) -> bool:
        """Meet a 401's challenge; False when there is nothing new to try (the 401 then stands)."""
        header = challenge.getheader("WWW-Authenticate", "")
        scheme, _, params = header.partition(" ")
        fields = dict(re.findall(r'(\w+)="([^"]*)"', params))
        creds = self.credentials
        if scheme.lower() == "basic":
            if creds is not None and creds.identity_token:
                raise BuildError(f"registry {self.host} asks for a username and password (HTTP basic auth), but "
                                 f"the credentials for it ({creds.source}) are an identity token, which only a "
                                 "bearer-token service takes", hint=_AUTH_HINT.format(registry=self.ref.registry))
            if creds is None or creds.basic is None or self.authorization == creds.basic:
                return False
            self.authorization = creds.basic
            return True
        if scheme.lower() != "bearer" or "realm" not in fields:
            return False
        scope = fields.get("scope") or f"repository:{self.ref.repository}:{'pull,push' if action == 'push' else 'pull'}"
        response, data = self._fetch_token(fields["realm"], fields.get("service", ""), scope)
        if response.status != 200:
            raise self._refused(response.status, f"token for {scope}")
        token = json.loads(data).get("token") or json.loads(data).get("access_token")
        if not token or self.authorization == f"Bearer {token}":
            return False
        self.authorization = f"Bearer {token}"
        return True

    def _fetch_token(self, realm: str, service: str, scope: str) -> tuple[http.client.HTTPResponse, bytes]:
        """Ask the token service for a bearer token: an identity token as an OAuth2 refresh_token grant (POST,
        the token spec's oauth.md), falling back to GET where the service has no OAuth2 endpoint; else GET with
        basic auth (or anonymously)."""
        creds = self.credentials
        query = urllib.parse.urlencode({k: v for k, v in (("service", service), ("scope", scope)) if v})
        url = f"{realm}{'&' if '?' in realm else '?'}{query}"
        basic = creds.basic if creds is not None else None
        attempts: list[tuple[str, dict[str, str], bytes | None]] = []
        if creds is not None and creds.identity_token:
            form = urllib.parse.urlencode({"grant_type": "refresh_token", "refresh_token": creds.identity_token,
                                           "service": service, "scope": scope, "client_id": "mlship"}).encode()
            attempts.append(("POST", {"Content-Type": "application/x-www-form-urlencoded"}, form))
            basic = Credentials(TOKEN_USERNAME, creds.identity_token).basic
        attempts.append(("GET", {"Authorization": basic} if basic else {}, None))
        for number, (method, headers, body) in enumerate(attempts, 1):
            try:
                connection, response = _open_url(method, realm if body else url, headers, body)
                data = response.read()
                connection.close()
            except (OSError, http.client.HTTPException) as exc:
                raise BuildError(f"the token service {realm} of registry {self.host} is unreachable: {exc}",
                                 hint="check the network path to the registry's auth service") from None
            if response.status not in _OAUTH_FALLBACK or number == len(attempts):
                break
        return response, data

    def _check(self, response: _Response, what: str, *, action: str, expect: tuple[int, ...] = (200,)) -> None:
        if response.status in expect:
            return
        if response.status in (401, 403):
            raise self._refused(response.status, what)
        detail = response.body[:300].decode(errors="replace").strip()
        raise BuildError(f"registry {self.host} answered HTTP {response.status} to {what}"
                         + (f": {detail}" if detail else ""),
                         hint="check the reference, your permissions on the repository, and the registry's log")

    def _refused(self, status: int, what: str) -> BuildError:
        creds = self.credentials
        given = (f"the credentials given were refused (from {creds.source})" if creds and creds.source else
                 "the credentials given were refused" if creds else "no credentials were found")
        return BuildError(f"registry {self.host} refused {what} for {self.ref.repository} (HTTP {status}): {given}",
                          hint=_AUTH_HINT.format(registry=self.ref.registry))

    def _unreachable(self, exc: BaseException) -> BuildError:
        return RegistryUnreachable(f"registry {self.host} is unreachable at {self.scheme}://{self.host}/v2/: {exc}",
                                   hint="check the registry's host and port and that it is running; a registry on "
                                   "another host must speak HTTPS (or be listed in MLSHIP_INSECURE_REGISTRIES)")


class RegistryUnreachable(BuildError):
    """No answer from the registry at all (as opposed to an answer that refuses)."""


def _open_url(method: str, url: str, headers: dict[str, str],
              body: Any = None) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
    parts = urllib.parse.urlsplit(url)
    host = parts.netloc
    connection: http.client.HTTPConnection
    if parts.scheme == "https":
        connection = http.client.HTTPSConnection(host, timeout=_TIMEOUT)
    else:
        connection = http.client.HTTPConnection(host, timeout=_TIMEOUT)
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    try:
        connection.request(method, path or "/", body=body, headers={"User-Agent": "mlship", **headers})
        return connection, connection.getresponse()
    except (OSError, http.client.HTTPException):
        connection.close()
        raise
