"""The Kubernetes objects of the k8s target, as plain dicts built from one typed plan (data, no I/O).

Each object is what the restricted Pod Security Standard and kube-score ask for (docs/KUBERNETES.md): non-root
with the image's UID 10001 and GID 0, RuntimeDefault seccomp, a read-only root with an emptyDir for each path the
runtime writes, every capability dropped, requests = limits, probes on the runtime's own endpoints, a spread over
nodes, a PodDisruptionBudget and a NetworkPolicy that lets in the serving port only and lets nothing out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ._docker_context import APP_DIR, PORT, UID, VENV

Obj = dict[str, Any]

PORT_NAME = "http"
METRICS_DIR = "/var/run/mlship/metrics"
# Seconds the pod keeps serving after SIGTERM while the endpoints drop it, then the in-flight requests' grace
# (docs/RUNTIME.md "Shutdown"); the runtime kills what is left after drain + grace + 5 s, so the kubelet's
# SIGKILL comes 10 s after both.
DRAIN_DELAY = 5
GRACE_PERIOD = 30
TERMINATION_GRACE = DRAIN_DELAY + GRACE_PERIOD + 10
TMP_SIZE = "256Mi"
METRICS_SIZE = "64Mi"
EPHEMERAL_REQUEST = "64Mi"
EPHEMERAL_LIMIT = "512Mi"  # both emptyDirs' size limits, and the container's logs, with room to spare
CPU_TARGET_UTILIZATION = 70
ANNOTATION_PREFIX = "mlship.io"


@dataclass(frozen=True)
class K8sPlan:
    """Everything the objects say, decided by _k8s_build.py."""

    name: str  # DNS-1123 label, the name of every object
    model_name: str  # the bundle's name (the V2 model name, unchanged)
    version: str
    image: str
    namespace: str | None
    replicas: int
    max_replicas: int
    cpu: str  # a Kubernetes quantity
    memory: str
    workers: int
    startup_failures: int  # startupProbe failureThreshold at a 2 s period
    bundle_digest: str
    notebook_sha256: str
    mlship_version: str
    config_hash: str  # of the ConfigMap's data, on the pod template so a settings change rolls the pods
    kserve: bool = False
    ephemeral_request: str = EPHEMERAL_REQUEST
    ephemeral_limit: str = EPHEMERAL_LIMIT


def labels(plan: K8sPlan) -> dict[str, str]:
    return {**selector(plan), "app.kubernetes.io/version": label_value(plan.version),
            "app.kubernetes.io/component": "predictor", "app.kubernetes.io/part-of": plan.name,
            "app.kubernetes.io/managed-by": "mlship"}


def selector(plan: K8sPlan) -> dict[str, str]:
    """The immutable part of the labels (a Deployment's selector cannot change)."""
    return {"app.kubernetes.io/name": plan.name, "app.kubernetes.io/instance": plan.name}


def label_value(value: str) -> str:
    """A label value: at most 63 of [A-Za-z0-9._-], starting and ending alphanumeric."""
    cleaned = "".join(c if c.isascii() and (c.isalnum() or c in "._-") else "-" for c in value)[:63]
    return cleaned.strip("._-") or "unknown"


def object_annotations(plan: K8sPlan) -> dict[str, str]:
    return {f"{ANNOTATION_PREFIX}/bundle-digest": plan.bundle_digest,
            f"{ANNOTATION_PREFIX}/notebook-sha256": plan.notebook_sha256,
            f"{ANNOTATION_PREFIX}/model-name": plan.model_name,
            f"{ANNOTATION_PREFIX}/model-version": plan.version,
            f"{ANNOTATION_PREFIX}/mlship-version": plan.mlship_version}


def metadata(plan: K8sPlan, name: str | None = None, **extra: Any) -> Obj:
    meta: Obj = {"name": name or plan.name, "labels": labels(plan), **extra}
    if plan.namespace:
        meta["namespace"] = plan.namespace
    return meta


def config_data(plan: K8sPlan) -> dict[str, str]:
    """The runtime's settings (docs/RUNTIME.md "Settings"), one ConfigMap the pods read as environment."""
    data = {"MLSHIP_WORKERS": str(plan.workers), "MLSHIP_DRAIN_DELAY": str(DRAIN_DELAY),
            "MLSHIP_GRACE_PERIOD": str(GRACE_PERIOD), "PROMETHEUS_MULTIPROC_DIR": METRICS_DIR}
    if plan.kserve:
        data["PROTOCOL"] = "v2"
    return data


def container(plan: K8sPlan, *, name: str, ready_path: str, live_path: str) -> Obj:
    probe = {"port": PORT_NAME if not plan.kserve else PORT}
    # KServe (and Knative under it) read the protocol from the port's name: http1 is plain HTTP/1.1.
    port_name = "http1" if plan.kserve else PORT_NAME
    return {
        "name": name,
        "image": plan.image,
        "imagePullPolicy": "IfNotPresent",
        # The image's own entry point and command, spelled out so the pod runs exactly this (docs/DOCKER.md).
        "command": [f"{VENV}/bin/python", "-I", "-B", "-u", f"{APP_DIR}/mlship_runtime/_boot.py"],
        "args": ["serve", APP_DIR, "--host", "0.0.0.0", "--port", str(PORT)],
        "ports": [{"name": port_name, "containerPort": PORT, "protocol": "TCP"}],
        "envFrom": [{"configMapRef": {"name": f"{plan.name}-config"}}],
        "resources": {
            "requests": {"cpu": plan.cpu, "memory": plan.memory, "ephemeral-storage": plan.ephemeral_request},
            "limits": {"cpu": plan.cpu, "memory": plan.memory, "ephemeral-storage": plan.ephemeral_limit},
        },
        "startupProbe": {"httpGet": {"path": live_path, **probe}, "periodSeconds": 2, "timeoutSeconds": 2,
                         "failureThreshold": plan.startup_failures},
        "readinessProbe": {"httpGet": {"path": ready_path, **probe}, "periodSeconds": 5, "timeoutSeconds": 2,
                           "failureThreshold": 2, "successThreshold": 1},
        "livenessProbe": {"httpGet": {"path": live_path, **probe}, "periodSeconds": 10, "timeoutSeconds": 5,
                          "failureThreshold": 3},
        "securityContext": {
            "runAsNonRoot": True, "runAsUser": UID, "runAsGroup": 0,
            "readOnlyRootFilesystem": True, "allowPrivilegeEscalation": False, "privileged": False,
            "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}, {"name": "metrics", "mountPath": METRICS_DIR}],
    }


def pod_spec(plan: K8sPlan, main: Obj) -> Obj:
    return {
        "serviceAccountName": plan.name,
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": TERMINATION_GRACE,
        # GID 0 as the image's user has; no fsGroup: the emptyDirs are writable by the pod's user as they are.
        "securityContext": {"runAsNonRoot": True, "runAsUser": UID, "runAsGroup": 0,
                            "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [main],
        "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": TMP_SIZE}},
                    {"name": "metrics", "emptyDir": {"medium": "Memory", "sizeLimit": METRICS_SIZE}}],
        # One node or zone never takes every replica, when the cluster has more than one.
        "topologySpreadConstraints": [
            {"maxSkew": 1, "topologyKey": key, "whenUnsatisfiable": "ScheduleAnyway",
             "labelSelector": {"matchLabels": pod_selector(plan)}}
            for key in ("kubernetes.io/hostname", "topology.kubernetes.io/zone")],
    }


def pod_selector(plan: K8sPlan) -> dict[str, str]:
    # KServe labels the predictor's pods with the InferenceService's name.
    return {"serving.kserve.io/inferenceservice": plan.name} if plan.kserve else selector(plan)


def pod_annotations(plan: K8sPlan) -> dict[str, str]:
    return {**object_annotations(plan), f"{ANNOTATION_PREFIX}/config-hash": plan.config_hash,
            "prometheus.io/scrape": "true", "prometheus.io/port": str(PORT), "prometheus.io/path": "/metrics"}


def deployment(plan: K8sPlan) -> Obj:
    spec = pod_spec(plan, container(plan, name="model", ready_path="/readyz", live_path="/livez"))
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": metadata(plan, annotations=object_annotations(plan)),
        "spec": {
            "replicas": plan.replicas,
            "revisionHistoryLimit": 5,
            "selector": {"matchLabels": selector(plan)},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {"metadata": {"labels": labels(plan), "annotations": pod_annotations(plan)}, "spec": spec},
        },
    }


def service(plan: K8sPlan) -> Obj:
    return {"apiVersion": "v1", "kind": "Service", "metadata": metadata(plan),
            "spec": {"type": "ClusterIP", "selector": selector(plan),
                     "ports": [{"name": PORT_NAME, "port": 80, "targetPort": PORT_NAME, "protocol": "TCP"}]}}


def autoscaler(plan: K8sPlan) -> Obj:
    return {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": metadata(plan),
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": plan.name},
                     "minReplicas": plan.replicas, "maxReplicas": plan.max_replicas,
                     "metrics": [{"type": "Resource", "resource": {
                         "name": "cpu", "target": {"type": "Utilization",
                                                   "averageUtilization": CPU_TARGET_UTILIZATION}}}]}}


def disruption_budget(plan: K8sPlan) -> Obj:
    # One pod always serving when there are two or more; with one, a drain may take it (else it could never drain).
    budget = {"minAvailable": 1} if plan.replicas >= 2 else {"maxUnavailable": 1}
    return {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": metadata(plan),
            "spec": {**budget, "selector": {"matchLabels": selector(plan)}}}


def network_policy(plan: K8sPlan, pod_labels: dict[str, str]) -> Obj:
    # No egress at all: the bundle carries everything it needs, and DNS is not one of them.
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": metadata(plan),
            "spec": {"podSelector": {"matchLabels": pod_labels}, "policyTypes": ["Ingress", "Egress"],
                     "ingress": [{"ports": [{"protocol": "TCP", "port": PORT}]}], "egress": []}}


def service_account(plan: K8sPlan) -> Obj:
    return {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": metadata(plan),
            "automountServiceAccountToken": False}


def config_map(plan: K8sPlan) -> Obj:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata(plan, f"{plan.name}-config"),
            "data": config_data(plan)}


def namespace(plan: K8sPlan) -> Obj:
    assert plan.namespace
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {
        "name": plan.namespace, "labels": {
            **{f"pod-security.kubernetes.io/{mode}": "restricted" for mode in ("enforce", "audit", "warn")},
            **{f"pod-security.kubernetes.io/{mode}-version": "latest" for mode in ("enforce", "audit", "warn")}}}}


def inference_service(plan: K8sPlan) -> Obj:
    """KServe v1beta1 in Standard (raw Deployment) mode: one predictor container, `kserve-container`, port 8080."""
    main = container(plan, name="kserve-container", ready_path="/v2/health/ready", live_path="/v2/health/live")
    spec = pod_spec(plan, main)
    predictor: Obj = {"minReplicas": plan.replicas, "maxReplicas": plan.max_replicas,
                      "scaleMetric": "cpu", "scaleTarget": CPU_TARGET_UTILIZATION, **spec}
    return {"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
            "metadata": metadata(plan, annotations={**object_annotations(plan),
                                                    "serving.kserve.io/deploymentMode": "Standard",
                                                    "serving.kserve.io/autoscalerClass": "hpa"}),
            "spec": {"predictor": predictor}}


def objects(plan: K8sPlan) -> dict[str, Obj]:
    """File name -> object, in the order kustomization.yaml lists them."""
    found: dict[str, Obj] = {}
    if plan.namespace:
        found["namespace.yaml"] = namespace(plan)
    found["serviceaccount.yaml"] = service_account(plan)
    found["configmap.yaml"] = config_map(plan)
    if plan.kserve:
        found["inferenceservice.yaml"] = inference_service(plan)
        found["networkpolicy.yaml"] = network_policy(plan, pod_selector(plan))
        return found
    found["deployment.yaml"] = deployment(plan)
    found["service.yaml"] = service(plan)
    found["hpa.yaml"] = autoscaler(plan)
    found["pdb.yaml"] = disruption_budget(plan)
    found["networkpolicy.yaml"] = network_policy(plan, pod_selector(plan))
    return found


def kustomization(plan: K8sPlan, files: list[str]) -> Obj:
    found: Obj = {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization", "resources": files}
    if plan.namespace:
        found["namespace"] = plan.namespace
    return found
