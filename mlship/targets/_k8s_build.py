"""How the k8s target builds (k8s.py declares it): checks the inputs, measures the bundle, writes the directory.

    dist/NAME-k8s/
      kustomization.yaml      lists the files below (and the namespace, with --namespace)
      namespace.yaml          with --namespace: labelled pod-security.kubernetes.io/enforce=restricted
      serviceaccount.yaml, configmap.yaml, networkpolicy.yaml
      deployment.yaml, service.yaml, hpa.yaml, pdb.yaml           (or, with --kserve, inferenceservice.yaml)

The objects themselves are built in _k8s_objects.py from one K8sPlan; this module decides the plan.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import __version__
from ..bundle.digest import bundle_digest
from ..bundle.manifest import open_bundle
from ..errors import BuildError
from . import _k8s_objects as k8s

if TYPE_CHECKING:
    from .k8s import K8sOptions

logger = logging.getLogger(__name__)

DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")
_TAG = re.compile(r":[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
# Memory the limit adds to the measured peak: the runtime's buffers under load, the request bodies it may hold
# (MLSHIP_MAX_PENDING_BYTES, 60 MiB by default) and the model's own scratch space.
MEMORY_HEADROOM = 1.5
MEMORY_EXTRA_MIB = 96
# Each further forked worker shares the model copy-on-write; measured at 1.05x for 2 workers with a 500 MB model
# (docs/RUNTIME.md), so 25% of one process each is a safe bound.
WORKER_SHARE = 0.25
DEFAULT_MEMORY_MIB = 512  # with --no-measure and no --memory
MEASURE_TIMEOUT = 300
_MEMORY_UNITS = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 10**3, "M": 10**6, "G": 10**9,
                 "T": 10**12, "": 1}


@dataclass
class K8sResult:
    directory: Path
    files: list[str]
    name: str
    image: str
    workers: int
    cpu: str
    memory: str
    kserve: bool
    measured: dict[str, float] = field(default_factory=dict)  # peak_mib, load_seconds
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return True

    def rows(self) -> list[tuple[str, str]]:
        measured = (f"{self.measured['peak_mib']:.0f} MiB peak, {self.measured['load_seconds']:.1f}s to load "
                    "and replay the golden cases" if self.measured else "not measured")
        rows = [("directory", str(self.directory)), ("objects", ", ".join(self.files)),
                ("image", self.image), ("pod", f"{self.cpu} CPU, {self.memory} memory, {self.workers} workers"),
                ("measured", measured)]
        rows.extend(("note", note) for note in self.notes)
        rows.extend(("warning", warning) for warning in self.warnings)
        rows.append(("next", f"kubectl apply -k {self.directory}"))
        return rows

    def to_json(self) -> dict[str, Any]:
        return {"target": "k8s", "directory": str(self.directory), "files": self.files, "name": self.name,
                "image": self.image, "workers": self.workers, "cpu": self.cpu, "memory": self.memory,
                "kserve": self.kserve, "measured": self.measured, "warnings": self.warnings, "notes": self.notes,
                "ok": self.ok}


def build_k8s(bundle: Path, options: K8sOptions) -> K8sResult:
    warnings: list[str] = []
    notes: list[str] = []
    image = pinned_image(check_image(options.image), notes)
    manifest = open_bundle(bundle).manifest
    name = dns_name(manifest.name, "bundle name", warnings)
    namespace = dns_name(options.namespace, "--namespace", warnings) if options.namespace else None
    if options.replicas < 1 or options.max_replicas < options.replicas:
        raise BuildError(f"--replicas {options.replicas} and --max-replicas {options.max_replicas} do not fit",
                         hint="use 1 <= --replicas <= --max-replicas")
    cpu_cores = parse_cpu(options.cpu)
    workers = max(1, math.floor(cpu_cores))
    measured = measure(bundle, options) if options.measure else {}
    memory = memory_limit(options.memory, measured, workers, warnings)
    ephemeral = ephemeral_storage(options.ephemeral_storage, warnings)
    load = measured.get("load_seconds", 30.0)
    plan = k8s.K8sPlan(
        name=name, model_name=manifest.name, version=manifest.version, image=image, namespace=namespace,
        replicas=options.replicas, max_replicas=options.max_replicas, cpu=options.cpu, memory=memory,
        workers=workers, startup_failures=max(15, math.ceil((3 * load + 10) / 2)),
        bundle_digest=bundle_digest(bundle),
        notebook_sha256=manifest.source.sha256 if manifest.source else "",
        mlship_version=__version__, config_hash="", kserve=options.kserve,
        **({} if ephemeral is None else {"ephemeral_request": ephemeral, "ephemeral_limit": ephemeral}))
    config = json.dumps(k8s.config_data(plan), sort_keys=True).encode()
    plan = replace(plan, config_hash=hashlib.sha256(config).hexdigest()[:16])
    out = options.output or bundle.parent / f"{name}-k8s"
    files = write_directory(out, plan)
    return K8sResult(directory=out, files=files, name=name, image=image, workers=workers, cpu=options.cpu,
                     memory=memory, kserve=options.kserve, measured=measured, warnings=warnings, notes=notes)


def check_image(image: str | None) -> str:
    """The image reference, which must pin a tag or a digest: a bare name means `latest`, whatever it is today."""
    if not image:
        raise BuildError("--target k8s needs the image to run", hint="pass --image REGISTRY/NAME:TAG (or "
                         "@sha256:DIGEST), e.g. the tag of `mlship build --target docker --tag ... --push`")
    last = image.rsplit("/", 1)[-1]
    if _DIGEST.search(image):
        return image
    if not _TAG.search(last) or image.endswith(":latest"):
        raise BuildError(f"--image {image!r} names neither a tag nor a digest" if not _TAG.search(last)
                         else f"--image {image!r} uses the tag latest, which moves",
                         hint="pass REF:TAG or, better, REF@sha256:DIGEST (`docker inspect --format "
                         "'{{index .RepoDigests 0}}' IMAGE` after a push)")
    return image


def pinned_image(image: str, notes: list[str]) -> str:
    """REF@sha256:DIGEST for a tag the local Docker engine has pushed or pulled (its RepoDigests), else as given.

    A tag can be moved to other bytes later; the digest the engine recorded for this very image cannot. Without a
    reachable engine, or for an image it does not have, the tag is kept (and the build says so)."""
    if "@sha256:" in image:
        return image
    repository = image[: image.rindex(":")]
    try:
        import docker

        client = docker.from_env(timeout=5)
        try:
            digests: list[str] = client.api.inspect_image(image).get("RepoDigests") or []
        finally:
            client.close()
    except Exception:  # no engine, no such image: nothing to pin it to
        digests = []
    found = next((digest for digest in digests if digest.split("@", 1)[0] == repository), None)
    if found is None:
        notes.append(f"--image {image} is used by tag: the local Docker engine has no registry digest for it "
                     "(push it first, or pass REF@sha256:DIGEST)")
        return image
    logger.info("pinned %s to %s", image, found)
    return found


def dns_name(value: str, what: str, warnings: list[str]) -> str:
    """A DNS-1123 label (what Kubernetes object names must be); a changed name is said in `warnings`."""
    if DNS_LABEL.match(value) and len(value) <= 63:
        return value
    slug = re.sub(r"[^a-z0-9]+", "-", value.lower()).strip("-")
    if slug and not slug[0].isalpha():
        slug = f"m-{slug}"
    # 63 for a label, less the "-config" suffix the ConfigMap's name adds.
    slug = slug[:56].rstrip("-")
    if not slug:
        raise BuildError(f"{what} {value!r} cannot be made a Kubernetes name (DNS-1123 label)",
                         hint="use lower-case letters, digits and '-', starting with a letter")
    warnings.append(f"{what} {value!r} is not a DNS-1123 label; the objects are named {slug!r}")
    return slug


def parse_cpu(value: str) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(m?)", value.strip())
    cores = (float(match.group(1)) / (1000 if match.group(2) else 1)) if match else 0.0
    if cores <= 0:
        raise BuildError(f"--cpu {value!r} is not a positive CPU quantity", hint="use e.g. --cpu 2 or --cpu 500m")
    return cores


def parse_memory(value: str, flag: str = "--memory", what: str = "memory") -> int:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(Ki|Mi|Gi|Ti|k|M|G|T|)", value.strip())
    if not match or float(match.group(1)) <= 0:
        raise BuildError(f"{flag} {value!r} is not a {what} quantity", hint=f"use e.g. {flag} 512Mi or 2Gi")
    return int(float(match.group(1)) * _MEMORY_UNITS[match.group(2)])


def ephemeral_storage(given: str | None, warnings: list[str]) -> str | None:
    """--ephemeral-storage as the request and the limit (warned when /tmp's emptyDir cannot fit), else None: the
    defaults of _k8s_objects."""
    if given is None:
        return None
    limit = parse_memory(given, "--ephemeral-storage", "storage")
    tmp = parse_memory(k8s.TMP_SIZE)
    if limit < tmp:
        warnings.append(f"--ephemeral-storage {given} ({limit / 2**20:.0f} MiB) is below the {k8s.TMP_SIZE} the /tmp "
                        "emptyDir may fill: the kubelet evicts a pod that writes that much")
    return given


def memory_limit(given: str | None, measured: dict[str, float], workers: int, warnings: list[str]) -> str:
    """--memory as given (warned when below the measured need), else the measured peak with headroom."""
    need_mib = (measured["peak_mib"] * (1 + WORKER_SHARE * (workers - 1)) if measured else None)
    if given is not None:
        limit = parse_memory(given)
        if need_mib is not None and limit < need_mib * 2**20:
            warnings.append(f"--memory {given} ({limit / 2**20:.0f} MiB) is below the measured "
                            f"{need_mib:.0f} MiB of {workers} worker(s) ({measured['peak_mib']:.0f} MiB peak of "
                            "one): the pods will be OOM-killed")
        return given
    if need_mib is None:
        return f"{DEFAULT_MEMORY_MIB}Mi"
    mib = need_mib * MEMORY_HEADROOM + MEMORY_EXTRA_MIB
    return f"{math.ceil(mib / 16) * 16}Mi"


def measure(bundle: Path, options: K8sOptions) -> dict[str, float]:
    """Peak memory and time of loading the bundle and replaying its golden cases, in a fresh interpreter with
    the bundle's own runtime (as the image's entry point runs it)."""
    if options.on_step:
        options.on_step("measuring memory and load time (the bundle's golden cases in a fresh Python)")
    command = [sys.executable, "-I", "-B", "-u", str(bundle / "mlship_runtime" / "_boot.py"), "verify", str(bundle)]
    with tempfile.TemporaryFile() as log:
        started = time.monotonic()
        proc = subprocess.Popen(command, stdout=log, stderr=log, cwd=bundle)
        try:
            _, status, usage = _wait4(proc.pid, started)
        except TimeoutError:
            proc.kill()
            proc.wait()
            raise BuildError(f"loading {bundle} took over {MEASURE_TIMEOUT}s",
                             hint="pass --memory and --no-measure to skip the measurement") from None
        proc.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.monotonic() - started
        if proc.returncode != 0:
            log.seek(0)
            tail = log.read().decode(errors="replace").strip().splitlines()[-5:]
            raise BuildError(f"the bundle does not load and verify here: {' / '.join(tail)}",
                             hint="check it with `mlship verify BUNDLE`, or pass --memory and --no-measure")
    # ru_maxrss is in KiB on Linux.
    return {"peak_mib": round(usage.ru_maxrss / 1024, 1), "load_seconds": round(seconds, 2)}


def _wait4(pid: int, started: float) -> tuple[int, int, Any]:
    while True:
        found, status, usage = os.wait4(pid, os.WNOHANG)
        if found:
            return found, status, usage
        if time.monotonic() - started > MEASURE_TIMEOUT:
            raise TimeoutError
        time.sleep(0.05)


def write_directory(out: Path, plan: k8s.K8sPlan) -> list[str]:
    """Write every object and kustomization.yaml into `out`, replacing what mlship wrote there before."""
    import yaml

    objects = k8s.objects(plan)
    documents = {**objects, "kustomization.yaml": k8s.kustomization(plan, list(objects))}
    header = (f"# Generated by mlship {__version__} from {plan.model_name} {plan.version} "
              "(mlship build --target k8s); docs/KUBERNETES.md\n")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        for name, obj in documents.items():
            text = yaml.safe_dump(obj, sort_keys=False, default_flow_style=False, width=110)
            (staging / name).write_text(header + text, encoding="utf-8")
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            if not (out / "kustomization.yaml").is_file():
                raise BuildError(f"{out} exists and is not a kustomize directory mlship wrote",
                                 hint="pass -o with a new or empty folder")
            shutil.rmtree(out)
        elif out.exists():
            out.rmdir()
        os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return list(documents)
