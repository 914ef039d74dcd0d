"""`mlship base-image`: its checks and its import step, against a fake docker client (no daemon, no debootstrap)."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from typing import Any

import docker
import pytest

from mlship.errors import BuildError, DockerUnavailable
from mlship.targets import _docker_engine, base_image
from mlship.targets.base_image import BaseImageOptions, check_python, debootstrap_command, make_base_image


class FakeContainer:
    def __init__(self, python: str | None) -> None:
        self.python, self.id = python, "c0ffee"

    def start(self) -> None:
        if self.python is None:
            raise docker.errors.APIError("exec: \"python3\": executable file not found in $PATH")

    def wait(self, timeout: float) -> dict[str, int]:
        return {"StatusCode": 0}

    def logs(self, stdout: bool, stderr: bool) -> bytes:
        return json.dumps({"version": self.python, "executable": "/usr/bin/python3", "machine": "x86_64"}).encode()

    def remove(self, force: bool) -> None:
        pass


class FakeClient:
    """The few docker SDK calls base_image.py makes: inspect, import, and one probe container."""

    def __init__(self, images: dict[str, str] | None = None) -> None:
        self.images = dict(images or {})  # tag -> its python3 version
        self.imported: list[dict[str, Any]] = []
        self.api, self.containers = self, self
        self.closed = False

    def inspect_image(self, tag: str) -> dict[str, Any]:
        if tag not in self.images:
            raise docker.errors.ImageNotFound(tag)
        return {"Id": f"sha256:{len(tag):064x}", "Size": 156_000_000}

    def create(self, image: str, **_: Any) -> FakeContainer:
        return FakeContainer(self.images[image])

    def import_image_from_stream(self, stream: Any, repository: str, tag: str, changes: list[str]) -> None:
        members = tarfile.open(fileobj=io.BytesIO(stream.read())).getnames()
        self.imported.append({"repository": repository, "tag": tag, "changes": changes, "members": members})
        self.images[f"{repository}:{tag}"] = "3.11.2"

    def close(self) -> None:
        self.closed = True


def test_an_existing_tag_is_only_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(base_image.shutil, "which", lambda name: None)  # neither debootstrap nor root needed
    monkeypatch.setattr(base_image.os, "geteuid", lambda: 1000)
    client = FakeClient({"mlship-base:bookworm-py311": "3.11.2"})
    result = make_base_image(BaseImageOptions(python="3.11"), client)
    assert (result.created, result.python, result.size) == (False, "3.11.2", 156_000_000)
    assert result.rows()[0] == ("base image", "mlship-base:bookworm-py311 (already there, nothing to do)")
    assert not client.imported and not client.closed  # the caller's client is left open


def test_an_existing_tag_with_another_python_is_refused() -> None:
    client = FakeClient({"base:trixie": "3.13.5"})
    with pytest.raises(BuildError) as caught:
        make_base_image(BaseImageOptions(tag="base:trixie", python="3.11"), client)
    assert caught.value.message == ("the base image base:trixie has Python 3.13.5, but the bundle was packaged "
                                    "with Python 3.11")
    assert caught.value.hint is not None and "bookworm: 3.11, trixie: 3.13" in caught.value.hint


def test_the_same_minor_passes_whatever_the_patch_level() -> None:
    check_python("t", "3.11.2", "3.11", "bookworm")
    check_python("t", "3.11.2", None, "bookworm")
    with pytest.raises(BuildError):
        check_python("t", "3.1.2", "3.11", "bookworm")  # a prefix is not a match


def test_no_debootstrap_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(base_image.shutil, "which", lambda name: None)
    with pytest.raises(BuildError) as caught:
        make_base_image(BaseImageOptions(tag="new:tag"), FakeClient())
    assert caught.value.message.startswith("debootstrap is not installed")
    assert caught.value.hint is not None and "apt-get install -y debootstrap" in caught.value.hint


def test_not_root_says_to_use_sudo(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(base_image.shutil, "which", lambda name: f"/usr/sbin/{name}")
    monkeypatch.setattr(base_image.os, "geteuid", lambda: 1000)
    with pytest.raises(BuildError) as caught:
        make_base_image(BaseImageOptions(tag="new:tag"), FakeClient())
    assert caught.value.message.startswith("making a base image needs root")
    assert "uid 1000" in caught.value.message
    assert caught.value.hint is not None and "sudo mlship base-image TAG" in caught.value.hint


def test_no_docker_daemon_is_docker_unavailable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no.sock")
    with pytest.raises(DockerUnavailable) as caught:
        make_base_image(BaseImageOptions(tag="new:tag"))
    assert f"no Docker daemon is reachable at unix://{tmp_path}/no.sock" in caught.value.message


def test_debootstrap_command() -> None:
    root = Path("/tmp/root")
    assert debootstrap_command(root, BaseImageOptions()) == [
        "debootstrap", "--variant=minbase", "--include=python3,python3-venv,ca-certificates", "bookworm",
        "/tmp/root", "http://deb.debian.org/debian"]
    arm = debootstrap_command(root, BaseImageOptions(suite="trixie", mirror="http://mirror.local/debian",
                                                     arch="arm64"))
    assert arm[:3] == ["debootstrap", "--variant=minbase", "--arch"] and arm[3] == "arm64"
    assert arm[-3:] == ["trixie", "/tmp/root", "http://mirror.local/debian"]


def fake_debootstrap(root: Path, options: BaseImageOptions) -> None:
    for rel in ("usr/bin/python3", "var/lib/apt/lists/deb.debian.org_Packages", "var/cache/apt/pkgcache.bin",
                "var/log/dpkg.log", "usr/share/man/man1/python3.1.gz", "usr/share/doc/python3/copyright",
                "usr/share/doc/python3/changelog.Debian.gz", "var/cache/debconf/config.dat-old",
                "var/cache/debconf/config.dat"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(rel)


def test_a_new_image_is_slimmed_and_imported(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(base_image.shutil, "which", lambda name: f"/usr/sbin/{name}")
    monkeypatch.setattr(base_image.os, "geteuid", lambda: 0)
    monkeypatch.setattr(base_image.tempfile, "tempdir", str(tmp_path))  # the lock and the rootfs
    monkeypatch.setattr(base_image, "_debootstrap", fake_debootstrap)
    monkeypatch.setattr(base_image, "_rootfs_python", lambda root: "3.11.2")
    client = FakeClient()
    result = make_base_image(BaseImageOptions(tag="mlship-base:test", python="3.11"), client)
    assert result.created and result.python == "3.11.2"
    [imported] = client.imported
    assert (imported["repository"], imported["tag"]) == ("mlship-base", "test")
    assert imported["changes"][-1] == ('LABEL org.opencontainers.image.title="debian bookworm python3.11.2 '
                                       '(debootstrap)"')
    files = {name.removeprefix("./") for name in imported["members"]}
    assert {"usr/bin/python3", "usr/share/doc/python3/copyright", "var/cache/debconf/config.dat"} <= files
    assert not files & {"var/lib/apt/lists/deb.debian.org_Packages", "var/cache/apt/pkgcache.bin",
                        "var/log/dpkg.log", "usr/share/man/man1/python3.1.gz",
                        "usr/share/doc/python3/changelog.Debian.gz", "var/cache/debconf/config.dat-old"}
    assert not list(tmp_path.glob("mlship-rootfs-*"))  # the tree is removed


def test_a_debootstrapped_python_of_another_minor_is_not_imported(monkeypatch: pytest.MonkeyPatch,
                                                                   tmp_path: Path) -> None:
    monkeypatch.setattr(base_image.shutil, "which", lambda name: f"/usr/sbin/{name}")
    monkeypatch.setattr(base_image.os, "geteuid", lambda: 0)
    monkeypatch.setattr(base_image.tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(base_image, "_debootstrap", fake_debootstrap)
    monkeypatch.setattr(base_image, "_rootfs_python", lambda root: "3.13.5")
    client = FakeClient()
    with pytest.raises(BuildError, match="has Python 3.13.5, but the bundle was packaged with Python 3.11"):
        make_base_image(BaseImageOptions(tag="mlship-base:trixie", suite="trixie", python="3.11"), client)
    assert not client.imported


def test_the_command_prints_the_error_and_hint(cli: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_docker_engine, "connect", lambda: FakeClient())
    monkeypatch.setattr(base_image.shutil, "which", lambda name: None)
    result = cli("base-image", "new:tag")
    assert result.exit_code == 1
    assert "error: debootstrap is not installed" in result.output
    assert "hint: install it (`sudo apt-get install -y debootstrap`)" in result.output


def test_the_command_reports_an_existing_image(cli: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_docker_engine, "connect", lambda: FakeClient({"have:it": "3.11.2"}))
    result = cli("base-image", "have:it", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert {k: data[k] for k in ("tag", "python", "size", "created")} == {
        "tag": "have:it", "python": "3.11.2", "size": 156_000_000, "created": False}
