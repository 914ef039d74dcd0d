"""An arm64 (aarch64) base image made from Debian bookworm's own arm64 packages, on an amd64 machine, and a way to
run arm64 programs here without binfmt_misc: Debian's qemu-user-static run as the container's (or chroot's)
first process, which then executes the aarch64 binaries itself.

The packages are fetched by `debootstrap --download-only --arch arm64` (it resolves and verifies them: ~30 s,
~85 MB), kept in pytest's cache folder so a second run on the same machine downloads nothing, and only the
closure of python3.11-minimal and libpython3.11-stdlib's Depends is unpacked (`dpkg-deb -x`), with a dpkg status
file listing them, then written as a docker-archive (`docker save`'s format) by GNU tar: no mlship code makes it.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
from pathlib import Path

from .docker import _missing

QEMU = "qemu-aarch64-static"
_ROOTS = ("python3.11-minimal", "libpython3.11-stdlib")


def download_debs(cache: Path) -> Path:
    """The folder of bookworm's arm64 minbase + Python 3.11 .debs, downloaded once into `cache`."""
    debs = cache / "debs"
    if debs.is_dir() and any(debs.glob("python3.11-minimal_*_arm64.deb")):
        return debs
    if shutil.which("debootstrap") is None:
        _missing("debootstrap is not installed (apt-get install -y debootstrap)")
    target = cache / "debootstrap"
    shutil.rmtree(target, ignore_errors=True)
    subprocess.run(["debootstrap", "--download-only", "--arch", "arm64", "--variant=minbase",
                    f"--include={','.join(_ROOTS)}", "bookworm", str(target), "http://deb.debian.org/debian"],
                   check=True, capture_output=True, timeout=600)
    shutil.rmtree(debs, ignore_errors=True)
    shutil.copytree(target / "var" / "cache" / "apt" / "archives", debs, ignore=shutil.ignore_patterns("partial"))
    shutil.rmtree(target, ignore_errors=True)
    return debs


def _fields(deb: Path) -> dict[str, str]:
    text = subprocess.run(["dpkg-deb", "-f", str(deb)], capture_output=True, text=True, check=True).stdout
    return {m[1]: m[2].strip() for m in re.finditer(r"^(\S+):[ ]?((?:.*)(?:\n .*)*)", text, re.MULTILINE)}


def _closure(debs: Path) -> dict[str, tuple[Path, dict[str, str]]]:
    """Package name -> (its .deb, its control fields), for the Depends/Pre-Depends closure of _ROOTS (the first
    alternative that was downloaded; versions are what debootstrap resolved)."""
    known = {fields["Package"]: (deb, fields) for deb in sorted(debs.glob("*.deb")) if (fields := _fields(deb))}
    wanted, todo = {}, list(_ROOTS)
    while todo:
        name = todo.pop()
        if name in wanted or name not in known:
            continue
        wanted[name] = known[name]
        fields = known[name][1]
        for clause in ", ".join(filter(None, (fields.get("Pre-Depends"), fields.get("Depends")))).split(","):
            alternatives = [re.split(r"[ (:]", alt.strip(), maxsplit=1)[0] for alt in clause.split("|")]
            todo.extend(alt for alt in alternatives[:1] if alt)
    return wanted


def make_arm64_rootfs(debs: Path, root: Path) -> list[str]:
    """Unpack the Python closure into ROOT (what a minimal base holds), with /etc/passwd and a dpkg status;
    returns the package names."""
    packages = _closure(debs)
    status = []
    for _, (deb, fields) in sorted(packages.items()):
        subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
        status.append("".join(f"{key}: {fields[key]}\n" for key in ("Package", "Version", "Architecture")
                              if key in fields) + "Status: install ok installed\n")
    (root / "var" / "lib" / "dpkg").mkdir(parents=True, exist_ok=True)
    (root / "var" / "lib" / "dpkg" / "status").write_text("\n".join(status))
    (root / "etc").mkdir(exist_ok=True)
    (root / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (root / "tmp").mkdir(mode=0o1777, exist_ok=True)
    return sorted(packages)


def arm64_docker_archive(root: Path, tag: str, dest: Path) -> Path:
    """ROOT as a one-layer linux/arm64/v8 image TAG in a docker-archive (the `docker save` format) at DEST: GNU
    tar makes the layer, the config says arm64 (the engine's `docker import --platform` ignores it here)."""
    work = dest.parent / f".{dest.name}.d"
    work.mkdir(parents=True, exist_ok=True)
    layer = work / "layer.tar"
    subprocess.run(["tar", "--numeric-owner", "--owner=0", "--group=0", "-C", str(root), "-cf", str(layer), "."],
                   check=True)
    diff_id = "sha256:" + hashlib.sha256(layer.read_bytes()).hexdigest()
    config = json.dumps({
        "architecture": "arm64", "variant": "v8", "os": "linux", "created": "2026-11-27T10:00:00Z",
        "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8"],
                   "Cmd": ["/usr/bin/python3.11"]},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created": "2026-11-27T10:00:00Z", "created_by": "dpkg-deb -x (bookworm arm64)"}],
    }).encode()
    config_name = hashlib.sha256(config).hexdigest() + ".json"
    (work / config_name).write_bytes(config)
    (work / "manifest.json").write_text(json.dumps([{"Config": config_name, "RepoTags": [tag],
                                                     "Layers": ["layer.tar"]}]))
    subprocess.run(["tar", "-C", str(work), "-cf", str(dest), "manifest.json", config_name, "layer.tar"],
                   check=True)
    shutil.rmtree(work)
    return dest


def qemu() -> str:
    found = shutil.which(QEMU)
    if found is None:
        _missing(f"{QEMU} is not installed (apt-get install -y qemu-user-static)")
    return str(found)
