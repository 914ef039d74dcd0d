"""`mlship build --target k8s`: a kustomize directory (Deployment, Service, HPA, PDB, NetworkPolicy, ...) or, with
--kserve, a KServe InferenceService, that passes the official schemas and the restricted Pod Security Standard
(docs/KUBERNETES.md).

This module declares the target: its options and its entry point. How it builds is in _k8s_build.py and the
modules it names, imported when a build starts, so that declaring the target (for `mlship --help`) stays cheap.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .options import BuildOptions, Option, Target

if TYPE_CHECKING:
    from ._k8s_build import K8sResult


@dataclass
class K8sOptions(BuildOptions):
    image: str | None = None  # required: REGISTRY/NAME:TAG or REGISTRY/NAME@sha256:...
    output: Path | None = None  # default dist/NAME-k8s
    kserve: bool = False
    namespace: str | None = None
    replicas: int = 2
    max_replicas: int = 5
    cpu: str = "1"
    memory: str | None = None  # default: measured peak memory of the workers, with headroom
    ephemeral_storage: str | None = None  # default: request 64Mi, limit 512Mi (the /tmp emptyDir and the logs)
    measure: bool = True


def build_k8s(bundle: Path, options: K8sOptions) -> K8sResult:
    """Write the manifests that run BUNDLE's image on Kubernetes into options.output."""
    from ._k8s_build import build_k8s as build

    return build(bundle, options)


TARGET = Target(
    name="k8s",
    summary="a kustomize directory for Kubernetes (or a KServe InferenceService)",
    docs="docs/KUBERNETES.md",
    options_type=K8sOptions,
    build=build_k8s,
    options=(
        Option("image", ("--image",), str | None,
               "The image to run: REF:TAG or REF@sha256:DIGEST (built with --target docker).",
               envvar="MLSHIP_IMAGE"),
        Option("output", ("-o", "--output"), Path, "The kustomize directory to write (default dist/NAME-k8s)."),
        Option("kserve", ("--kserve",), bool, "Write a KServe InferenceService instead of a Deployment.",
               default=False),
        Option("namespace", ("--namespace",), str | None,
               "Namespace for every object, created with the restricted Pod Security label."),
        Option("replicas", ("--replicas",), int, "Minimum number of pods.", default=2),
        Option("max_replicas", ("--max-replicas",), int, "Maximum number of pods the autoscaler may run.",
               default=5),
        Option("cpu", ("--cpu",), str, "CPU request and limit per pod (workers = its whole CPUs).", default="1"),
        Option("memory", ("--memory",), str | None,
               "Memory request and limit per pod, e.g. 512Mi (default: measured, with headroom)."),
        Option("ephemeral_storage", ("--ephemeral-storage",), str | None,
               "Ephemeral-storage request and limit per pod, e.g. 1Gi (default: 64Mi requested, 512Mi limit: "
               "the 256Mi /tmp emptyDir and the container's logs)."),
        Option("measure", ("--no-measure",), bool,
               "Do not load the bundle to measure its memory and load time.", default=False,
               convert=lambda v: not v),
    ),
)
